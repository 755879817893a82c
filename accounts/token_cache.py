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

import threading
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
# Forgets so far, in this process: an answer looked up before a forget is not kept (the
# lookup may have read the database before the change committed).
_forgets = 0
_forgets_lock = threading.Lock()  # forgets come from the event loop and from database threads
# Called with the user's id (None: everyone) on each forget, in the thread that forgets:
# other per-worker memories of a user that a change must empty (chat.ban_cache).
_forgetters: list[Callable[[int | None], None]] = []
# Also told of each change this worker hears, after its tokens are forgotten: accounts.connections
# ends the user's open connections here, so that one subscription per worker serves both.
_followers: list[Callable[[int], Awaitable[None]]] = []


def remembered(key: str) -> ApiToken | None:
    """The valid token whose hash is ``key``, if seen in the last TOKEN_CACHE_SECONDS."""
    entry = _entries.get(key)
    if entry is None or time.monotonic() - entry[0] >= TOKEN_CACHE_SECONDS:
        return None
    return entry[1]


def forgets() -> int:
    """How many forgets this process has made: read it before a lookup whose answer is
    to be remembered, and pass it to ``remember`` (or compare it afterwards)."""
    return _forgets


def remember(key: str, token: ApiToken | None, *, since: int) -> None:
    """Keep a valid token looked up after ``forgets()`` returned ``since`` (call ``listen``
    before looking it up), unless the user's credentials may have changed meanwhile;
    forget an invalid one."""
    if token is None:
        _entries.pop(key, None)
        return
    if _forgets != since:
        return
    if len(_entries) >= MAX_ENTRIES:
        _entries.clear()
    _entries[key] = (time.monotonic(), token)


def forget_user(user_id: int) -> None:
    """Drop every entry of ``user_id``, here and in the ``also_forget`` memories (any thread)."""
    _count_forget()
    for key, (_, token) in list(_entries.items()):
        if token.user_id == user_id:
            _entries.pop(key, None)
    for forgetter in _forgetters:
        forgetter(user_id)


def forget_all() -> None:
    _count_forget()
    _entries.clear()
    for forgetter in _forgetters:
        forgetter(None)


def _count_forget() -> None:
    global _forgets
    with _forgets_lock:
        _forgets += 1


def also_forget(forgetter: Callable[[int | None], None]) -> None:
    """Have ``forgetter(user_id)`` (None: every user) called on every forget of this
    process, from any thread (register once, at import)."""
    _forgetters.append(forgetter)


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
