"""Bearer tokens, remembered for a few seconds per worker process.

Every API request with a bearer token looked its token and user
up in the database, on the database thread: a thread hop and a query before anything
else, queued behind every other query of the worker (docs/performance.md, "Stream
start"). A token seen in the last ``TOKEN_CACHE_SECONDS`` is answered from memory
(accounts.middleware).

Nothing may outlive a credential change, so ``credentials_changed_on_commit`` (a revoked
token, a new password, a deactivated account) forgets the user's entries in this
process at once and tells every other worker through the ``credentials`` group, which
every worker that remembers tokens listens to. A change lost on the way (the channel
layer is at most once) is bounded by the entry's age, and a worker whose subscriber
reconnected forgets everything.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from accounts.models import ApiToken
from core.aio import PerLoop
from core.layer import get_layer

# Short: the longest a lost change could let a revoked token through; long enough that
# a client streaming or polling skips the database on almost every request.
TOKEN_CACHE_SECONDS = 5.0
# Bounds memory whatever the number of tokens seen: a full cache is emptied.
MAX_ENTRIES = 10_000
# Every user's credential changes, as "<user id>", for every worker.
CHANGES_GROUP = "credentials"

_entries: dict[str, tuple[float, ApiToken]] = {}  # token hash -> (when stored, the token with its user)
# Also told of each change this worker hears, after its tokens are forgotten: accounts.connections
# ends the user's open connections here, so that one subscription per worker serves both.
_followers: list[Callable[[int], Awaitable[None]]] = []


def remembered(key: str) -> ApiToken | None:
    """The valid token whose hash is ``key``, if seen in the last TOKEN_CACHE_SECONDS."""
    entry = _entries.get(key)
    if entry is None or time.monotonic() - entry[0] >= TOKEN_CACHE_SECONDS:
        return None
    return entry[1]


def remember(key: str, token: ApiToken | None) -> None:
    """Keep a valid token (call ``listen`` before looking it up); forget an invalid one."""
    if token is None:
        _entries.pop(key, None)
        return
    if len(_entries) >= MAX_ENTRIES:
        _entries.clear()
    _entries[key] = (time.monotonic(), token)


def forget_user(user_id: int) -> None:
    """Drop every entry of ``user_id`` (any thread)."""
    for key, (_, token) in list(_entries.items()):
        if token.user_id == user_id:
            _entries.pop(key, None)


def forget_all() -> None:
    _entries.clear()


def changed(user_id: int) -> None:
    """After a credential change commits: this process forgets the user now, every other
    worker when the message arrives."""
    forget_user(user_id)
    get_layer().publish(CHANGES_GROUP, str(user_id))


class _Listener:
    """This event loop's subscription to the changes (a worker has one loop)."""

    def __init__(self) -> None:
        self.listening = False

    async def ensure(self) -> None:
        if self.listening:
            return
        self.listening = True
        layer = get_layer()
        layer.on_reconnect(_on_reconnect)
        await layer.listen(CHANGES_GROUP, _on_change)


def also_tell(follower: Callable[[int], Awaitable[None]]) -> None:
    """Have ``follower(user_id)`` awaited on every change this worker hears (register once)."""
    _followers.append(follower)


async def _on_change(group: str, data: str) -> None:
    if data.isdigit():
        forget_user(int(data))
        for follower in _followers:
            await follower(int(data))


async def _on_reconnect() -> None:
    forget_all()  # changes published while the subscriber was away are lost to us


_listener: PerLoop[_Listener] = PerLoop(_Listener)


async def listen() -> None:
    """Subscribe this worker to the changes, once; before a lookup whose result it keeps,
    so that a change made during the lookup is heard."""
    await _listener().ensure()
