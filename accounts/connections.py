"""Every long-lived connection of a user: counted across workers, and told when the
user's credentials change (docs/protocol.md, "Connections and credentials").

Sockets (rooms, the assistant), SSE responses and the generations they start are
authenticated once, when they begin. So that none outlives a revoked token, a log-out,
a new password or a deactivated account, each registers here on its worker, and
``credentials_changed_on_commit`` tells every worker through the channel layer (the
group ``credentials``, carrying the user's id, which accounts.token_cache also hears);
each worker calls ``on_change`` of every connection of that user it holds: sockets close
with 4011 and SSE responses end (clients reconnect, and the new handshake or request
decides again), a generation re-checks the credential that started it and stops if it
no longer holds. One subscription per worker, made once: a group per user cost a
SUBSCRIBE and an UNSUBSCRIBE round trip whenever a user's first connection on a worker
opened and its last closed, on the path of every short stream (docs/performance.md,
"Stream start"), while changes are rare enough for every worker to hear all of them.

A change published while a worker's subscriber was cut off (a Redis blip) is lost to
that worker, so on every (re)connection it re-checks the credential of each of its
connections and tells those whose credential no longer holds.

Per-user caps: a connection of a ``kind`` (room, assistant, notifications) is a member
of a sorted set per user and kind, scored with the time this worker last refreshed it
(once a heartbeat). A member older than three heartbeats belongs to a worker that died.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest

from accounts import token_cache
from accounts.credentials import Credential, credential_for_request, credentials_invalid
from core.aio import PerLoop, new_worker_key, spawn
from core.db_thread import in_db_thread
from core.layer import get_layer
from core.redis_clients import async_redis, async_redis_at, group_by_shard, hash_tag

logger = logging.getLogger(__name__)

Listener = Callable[[], Awaitable[None]]

ROOM = "room"
ASSISTANT = "assistant"
NOTIFICATIONS = "notifications"

_OPEN_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


def credentials_changed_on_commit(*, user_id: int) -> None:
    """Tell every worker, once the transaction commits, that ``user_id``'s credentials
    changed: its connections (here), and the tokens it remembers (accounts.token_cache,
    whose message this is)."""
    transaction.on_commit(partial(token_cache.changed, user_id))


# ---- per-user counts across workers ---------------------------------------------------------------
def _count_key(kind: str, user_id: int) -> str:
    # Room sockets kept the key they always had: a rolling deploy counts them the same.
    tag = hash_tag(f"user:{user_id}")
    return f"chat:connections:{tag}" if kind == ROOM else f"accounts:connections:{kind}:{tag}"


def stale_after_seconds() -> float:
    """An entry refreshed once a heartbeat (a count here, a presence in chat.presence) that
    was not refreshed for three heartbeats belongs to a worker that died."""
    return 3 * float(settings.WS_HEARTBEAT_SECONDS)


def key_ttl_seconds() -> int:
    """How long Redis keeps such a set once nobody refreshes it."""
    return max(int(stale_after_seconds() * 2), 10)


async def count_take(*, kind: str, user_id: int, key: str, limit: int) -> bool:
    """Count a new connection of this user and kind; False when the user has ``limit``."""
    now = time.time()
    stale = now - stale_after_seconds()
    name = _count_key(kind, user_id)
    return bool(await async_redis(name).eval(_OPEN_SCRIPT, 1, name, now, stale, key, limit, key_ttl_seconds()))


async def count_release(*, kind: str, user_id: int, key: str) -> None:
    name = _count_key(kind, user_id)
    await async_redis(name).zrem(name, key)


async def _counts_refresh(entries: dict[str, list[str]]) -> None:
    now = time.time()
    names = list(entries)
    for shard, positions in group_by_shard(names).items():
        pipe = async_redis_at(shard).pipeline(transaction=False)
        for position in positions:
            pipe.zadd(names[position], dict.fromkeys(entries[names[position]], now))
            pipe.expire(names[position], key_ttl_seconds())
        await pipe.execute()


# ---- this worker's connections ------------------------------------------------------------------
async def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Reservation:
    """A place under a user's cap of one kind, counted across workers."""

    kind: str
    key: str


@dataclass(eq=False, slots=True)
class Connection:
    """One long-lived connection of ``user_id`` on this worker."""

    user_id: int
    credential: Credential | None
    # Awaited when the user's credentials change (or, after a Redis blip, when this
    # connection's own credential no longer holds).
    on_change: Listener = _nothing
    # Awaited once a heartbeat (sockets ping, and close idle clients).
    on_heartbeat: Listener | None = None
    reservation: Reservation | None = None  # its place under the user's cap, if counted
    closed: bool = field(default=False)


class Connections:
    """This worker's connections by user (one per event loop: get_connections())."""

    def __init__(self) -> None:
        self.by_user: dict[int, set[Connection]] = {}
        self.layer = get_layer()
        self.layer.on_reconnect(self._on_reconnect)
        self._ticker = spawn(self._tick_forever(), name="connections-ticker")

    def new_count_key(self) -> str:
        return new_worker_key()

    async def reserve(self, *, kind: str, user_id: int, limit: int) -> Reservation | None:
        """Count a connection about to open against the user's cap of ``kind``, or None at
        the cap. Pass it to ``open``; if it is never opened, the count is not refreshed and
        lapses after three heartbeats."""
        key = self.new_count_key()
        return Reservation(kind, key) if await count_take(kind=kind, user_id=user_id, key=key, limit=limit) else None

    async def open(
        self,
        *,
        user_id: int,
        credential: Credential | None,
        on_change: Listener = _nothing,
        on_heartbeat: Listener | None = None,
        kind: str | None = None,
        limit: int = 0,
        reservation: Reservation | None = None,
    ) -> Connection | None:
        """Register a connection; with ``kind``, counted against the user's cap (None at
        the cap), or under a ``reservation`` already counted."""
        if kind is not None and reservation is None:
            reservation = await self.reserve(kind=kind, user_id=user_id, limit=limit)
            if reservation is None:
                return None
        connection = Connection(user_id, credential, on_change, on_heartbeat, reservation)
        connections = self.by_user.setdefault(user_id, set())
        connections.add(connection)
        await token_cache.listen()  # once per worker; then a no-op
        return connection

    async def close(self, connection: Connection) -> None:
        """Unregister (idempotent). Never raises: a count left in Redis lapses anyway."""
        if connection.closed:
            return
        connection.closed = True
        connections = self.by_user.get(connection.user_id, set())
        connections.discard(connection)
        if not connections:
            self.by_user.pop(connection.user_id, None)
        try:
            if connection.reservation is not None:
                reservation = connection.reservation
                await count_release(kind=reservation.kind, user_id=connection.user_id, key=reservation.key)
        except Exception:
            logger.warning("closing a connection of user %s: cleanup failed", connection.user_id, exc_info=True)

    async def _tell(self, connections: list[Connection]) -> None:
        for connection in connections:
            try:
                await connection.on_change()
            except Exception:
                logger.exception("ending a connection of user %s failed", connection.user_id)

    async def changed(self, user_id: int) -> None:
        """The user's credentials changed: tell each of their connections on this worker."""
        await self._tell(list(self.by_user.get(user_id, ())))

    async def _on_reconnect(self) -> None:
        everyone = [c for connections in self.by_user.values() for c in connections if c.credential is not None]
        if not everyone:
            return
        invalid = await in_db_thread(credentials_invalid, credentials={c.credential for c in everyone if c.credential})
        await self._tell([c for c in everyone if c.credential in invalid])

    async def _tick_forever(self) -> None:
        heartbeat = float(settings.WS_HEARTBEAT_SECONDS)
        while True:
            await asyncio.sleep(heartbeat)
            try:
                await self._heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("connections heartbeat failed")

    async def _heartbeat(self) -> None:
        counted: dict[str, list[str]] = defaultdict(list)
        beating = []
        for connections in self.by_user.values():
            for connection in connections:
                if connection.reservation is not None:
                    reservation = connection.reservation
                    counted[_count_key(reservation.kind, connection.user_id)].append(reservation.key)
                if connection.on_heartbeat is not None:
                    beating.append(connection.on_heartbeat)
        if counted:
            await _counts_refresh(counted)
        for beat in beating:
            try:
                await beat()
            except Exception:
                logger.debug("a heartbeat failed", exc_info=True)

    async def aclose(self) -> None:
        self._ticker.cancel()


# The connections of the running event loop (one per worker process; tests get one per loop).
get_connections: PerLoop[Connections] = PerLoop(Connections)


async def _credentials_changed(user_id: int) -> None:
    registry = get_connections.existing()  # a worker that holds no connection has none to tell
    if registry is not None:
        await registry.changed(user_id)


token_cache.also_tell(_credentials_changed)


# ---- SSE responses -----------------------------------------------------------------------------
async def until_credentials_change(
    body: AsyncIterator[str], *, user_id: int, credential: Credential, reservation: Reservation | None = None
) -> AsyncGenerator[str, None]:
    """``body`` (an SSE response's), registered as a connection of the user and ended
    when the user's credentials change. ``reservation``: its place under a per-user cap
    (notification streams are capped), released when the body ends."""
    ended = False
    waiting: asyncio.Task[object] | None = None  # the task in the body's own wait, if it is in it
    cancelled: asyncio.Task[object] | None = None

    async def credentials_changed() -> None:
        # A body that is waiting (for tokens, a task, a notification) is cancelled in its
        # wait, so that the response ends within the 2 seconds docs/protocol.md promises;
        # one that is being sent ends after the send. The cancel goes to the task that
        # reads the body (Django's, for the response): a task of our own per chunk, to
        # cancel instead, would cost every chunk of every stream a task and two turns of
        # the event loop.
        nonlocal ended, cancelled
        ended = True
        if waiting is not None and cancelled is None:
            cancelled = waiting
            waiting.cancel()

    registry = get_connections()
    connection = await registry.open(
        user_id=user_id, credential=credential, on_change=credentials_changed, reservation=reservation
    )
    iterator = aiter(body)
    try:
        while not ended:
            waiting = asyncio.current_task()
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                # Ours (the credentials changed) unless the task was cancelled by someone else too.
                ours = cancelled
                if ours is asyncio.current_task() and ours is not None and ours.uncancel() == 0:
                    return
                raise
            finally:
                waiting = None
            yield chunk
    finally:
        if connection is not None:
            await registry.close(connection)


def credential_watch(
    request: HttpRequest, *, user_id: int, reservation: Reservation | None = None
) -> Callable[[AsyncIterator[str]], AsyncIterator[str]]:
    """The ``watch`` of core.sse.sse_response for a request of ``user_id``: the response
    ends when the user's credentials change (docs/protocol.md, "Connections and credentials")."""
    return partial(
        until_credentials_change,
        user_id=user_id,
        credential=credential_for_request(request, user_id=user_id),
        reservation=reservation,
    )
