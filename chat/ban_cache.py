"""Users found not banned site-wide, remembered for a few seconds per worker process.

Every stream start asked the database whether its user is banned site-wide (generating
is acting, docs/protocol.md, "Authentication and the handshake"): a hop to the database
thread and a query before the first token, queued behind every other query of the worker,
about a tenth of a worker's CPU under 50 starts at once (docs/performance.md, "Eighth
step"). A "not banned" answer is kept for ``BAN_CACHE_SECONDS``; "banned" never is, so a
lifted or ended ban counts at once.

A site-wide ban must not wait for an entry to age: it sends the user's id through the
broadcast that carries credential changes (``accounts.connections.credentials_changed_on_commit``,
heard by accounts.token_cache), and every worker forgets what it remembers of that user,
tokens and this answer alike. A message lost on the way (the channel layer is at most once) is
bounded by the entry's age, as for a revoked token; a worker whose subscriber reconnected
forgets everything.
"""

from __future__ import annotations

import time

from accounts import token_cache
from chat.selectors import user_is_banned_site_wide
from core.db_thread import in_db_thread

# As long as a bearer token is remembered (accounts.token_cache): the longest a lost ban
# message could let a start through, and long enough that a client asking again and again
# skips the database on almost every start.
BAN_CACHE_SECONDS = token_cache.TOKEN_CACHE_SECONDS
# Bounds memory whatever the number of users: a full cache is emptied.
MAX_ENTRIES = 10_000

_clear: dict[int, float] = {}  # user id -> when found not banned (time.monotonic)


def _forget(user_id: int | None) -> None:
    if user_id is None:
        _clear.clear()
    else:
        _clear.pop(user_id, None)


# Registered when this module is first imported, before anything here can be remembered.
token_cache.also_forget(_forget)


async def user_is_banned_site_wide_remembered(*, user_id: int) -> bool:
    """``chat.selectors.user_is_banned_site_wide`` from the event loop: from memory for a
    user found not banned in the last BAN_CACHE_SECONDS, else on the database thread."""
    seen = _clear.get(user_id)
    if seen is not None and time.monotonic() - seen < BAN_CACHE_SECONDS:
        return False
    await token_cache.listen()  # subscribed before the lookup, so that a ban made during it is heard
    since = token_cache.forgets()
    banned = await in_db_thread(user_is_banned_site_wide, user_id=user_id)
    if not banned and token_cache.forgets() == since:
        if len(_clear) >= MAX_ENTRIES:
            _clear.clear()
        _clear[user_id] = time.monotonic()
    return banned
