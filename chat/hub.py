"""The worker's hub: one subscription per room, fanned out to the room's local sockets.

Exactly once, although every broker is at most once
---------------------------------------------------
Every change of a room (a new message, an edit, a removal, a restoration, a message's
reactions) carries the room's ``seq``, taken in the change's own transaction (see
chat.services.changes): 1, 2, 3 … with no holes, in commit order. Per room the hub keeps
``last_seq``, the newest change delivered to its sockets:

- an event whose seq is not above ``last_seq`` is a duplicate and is dropped;
- an event whose seq is above ``last_seq + 1`` reveals a gap: most often only two
  workers' publishes overtaking each other (each publishes after its own commit), so the
  event is held for up to GAP_WAIT_SECONDS while the ones before it arrive; a gap still
  open then (a lost publish, a Redis restart, a full buffer) is backfilled from the
  database (chat.selectors.change_replay, which ``last_seq`` resumes use too);
- once a second the hub compares ``last_seq`` with the room's seq in the database,
  which repairs a lost *last* change that no later broadcast would reveal (the check
  waits one round, so that broadcasts merely in flight are not fetched twice);
- on every (re)connection to Redis it re-subscribes and backfills every room.

A joining socket is registered before its backlog is read; broadcasts meanwhile are
held in its ``pending`` list and flushed after the backlog, skipping what the backlog
already sent. Each socket also remembers the highest seq it sent (and the highest
message id, so that a ``message`` frame its ``last_id`` backlog sent is not sent again),
so no path sends a change twice.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from channels.db import database_sync_to_async
from django.conf import settings

from chat import events, presence, protocol, selectors, wire
from chat.reply_follower import ReplyFollower
from core import metrics
from core.aio import PerLoop, new_worker_key, spawn
from core.layer import RealtimeChannelLayer, get_layer

logger = logging.getLogger(__name__)

# How often rooms are compared with the database, and the hub's clock tick.
GAP_CHECK_SECONDS = 1.0


class RoomConnection(Protocol):
    """What the hub needs of a socket (chat.consumers.RoomConsumer)."""

    room_id: int
    room_slug: str
    user_id: int
    username: str
    connection_key: str
    last_sent_id: int
    last_sent_seq: int
    syncing: bool
    pending: list[tuple[int, int, str]]  # (seq or 0, new message id or 0, text) held while syncing
    pending_presence: tuple[int, str] | None
    presence_version: int
    last_seen: float
    replies: dict[int, int] | None  # assistant's reply id -> code points of it sent (chat.reply_follower)

    async def send_text(self, text: str) -> None: ...

    async def close_with(self, code: int) -> None: ...


# How long a change that arrived ahead of a gap waits for the ones before it. Two workers
# publish their commits independently, so on a busy room one's publish often overtakes the
# other's by a millisecond or two; reading the gap from the database instead cost 14 % of a
# worker's CPU at 340 messages a second (docs/performance.md, "Room changes"). 50 ms: far
# above that reordering, and what a truly lost publish costs on top of the database read.
GAP_WAIT_SECONDS = 0.05
# Held changes per room at most (the backlog limit of a resume): beyond, they are dropped
# and read from the database with the rest.
MAX_HELD = 1000
# How the frames that end a reply begin (protocol.encode puts the type first).
_REPLY_ENDS = ('{"type":"message_done"', '{"type":"message_deleted"')


@dataclass(eq=False)
class RoomFeed:
    room_id: int
    room_slug: str
    last_seq: int = 0
    connections: set[RoomConnection] = field(default_factory=set)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    failed: bool = False
    early: list[str] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The room's seq in the database at the last check, while we were behind it.
    suspected_upto: int = 0
    # Changes that arrived ahead of a gap, by seq, while the ones before them may still be
    # on their way (GAP_WAIT_SECONDS); and the timer that backfills the gap if not.
    held: dict[int, wire.Change] = field(default_factory=dict)
    gap_timer: asyncio.TimerHandle | None = None
    # The assistant's replies streaming in the room, followed for its sockets (chat.reply_follower).
    replies: dict[int, ReplyFollower] = field(default_factory=dict)


class Hub:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.feeds: dict[int, RoomFeed] = {}
        self.feeds_by_group: dict[str, RoomFeed] = {}
        self.users: dict[int, set[RoomConnection]] = {}
        # The channel layer's fast path: one subscription per room group and user group,
        # shared with the Channels consumers of those groups (core.layer).
        self.layer: RealtimeChannelLayer = get_layer()
        self.layer.on_reconnect(self._on_reconnect)
        self._pings_sent: collections.deque[float] = collections.deque(maxlen=3)  # the last three heartbeats
        self._ticker = spawn(self._tick_forever(), name="hub-ticker")

    def new_connection_key(self) -> str:
        return new_worker_key()

    # ---- joining and leaving ---------------------------------------------------------
    async def join(self, connection: RoomConnection) -> None:
        """Register a socket; broadcasts go to its ``pending`` list while it syncs."""
        feed = self.feeds.get(connection.room_id)
        if feed is None:
            feed = RoomFeed(connection.room_id, connection.room_slug)
            self.feeds[connection.room_id] = feed
            self.feeds_by_group[wire.room_group(feed.room_slug)] = feed
            try:
                await self.layer.listen(wire.room_group(feed.room_slug), self._on_room_event)
                seqs = await database_sync_to_async(selectors.room_seqs)(room_ids=[feed.room_id])
                feed.last_seq = seqs.get(feed.room_id, 0)
            except BaseException:
                feed.failed = True
                self.feeds.pop(feed.room_id, None)
                self.feeds_by_group.pop(wire.room_group(feed.room_slug), None)
                raise
            finally:
                feed.ready.set()
            early, feed.early = feed.early, []
            for data in early:
                await self._room_event(feed, data)
        else:
            await feed.ready.wait()
            if feed.failed:
                return await self.join(connection)
        feed.connections.add(connection)
        user_connections = self.users.setdefault(connection.user_id, set())
        if not user_connections:
            await self.layer.listen(wire.user_group(connection.user_id), self._on_user_event)
        user_connections.add(connection)
        metrics.WS_CONNECTIONS.inc()

    async def synced(self, connection: RoomConnection) -> None:
        """Flush what arrived while the backlog was being sent; then deliver live.

        Runs after the socket has sent ``synced`` and its presence snapshot."""
        if connection.pending_presence and connection.pending_presence[0] > connection.presence_version:
            connection.presence_version, text = connection.pending_presence
            await connection.send_text(text)
        connection.pending_presence = None
        feed = self.feeds.get(connection.room_id)
        while connection.pending:
            seq, new_id, text = connection.pending.pop(0)
            if seq == 0 or self._is_new(connection, seq, new_id):
                if feed is not None and new_id and protocol.is_streaming_reply(text):
                    text = self._reply_follower(feed, new_id).give(connection, text)
                await connection.send_text(text)
        connection.syncing = False

    @staticmethod
    def _is_new(connection: RoomConnection, seq: int, new_id: int) -> bool:
        """Whether the socket has not had this change yet; it counts as had from now on.

        A change at or below the socket's seq was in its replay (or sent already); a new
        message at or below its id was in its ``last_id`` backlog."""
        if seq <= connection.last_sent_seq:
            return False
        connection.last_sent_seq = seq
        if new_id:
            if new_id <= connection.last_sent_id:
                return False
            connection.last_sent_id = new_id
        return True

    async def leave(self, connection: RoomConnection) -> None:
        feed = self.feeds.get(connection.room_id)
        if feed is None or connection not in feed.connections:
            return
        metrics.WS_CONNECTIONS.dec()
        feed.connections.discard(connection)
        if not feed.connections:
            if feed.gap_timer is not None:
                feed.gap_timer.cancel()
            for follower in feed.replies.values():
                follower.stop()
            del self.feeds[connection.room_id]
            self.feeds_by_group.pop(wire.room_group(feed.room_slug), None)
            await self.layer.unlisten(wire.room_group(feed.room_slug))
        user_connections = self.users.get(connection.user_id, set())
        user_connections.discard(connection)
        if not user_connections:
            self.users.pop(connection.user_id, None)
            await self.layer.unlisten(wire.user_group(connection.user_id))

    async def presence_enter(self, connection: RoomConnection) -> list[str]:
        """Count the (still syncing) socket as online and announce the change.

        Returns who is online now, for the socket's own snapshot; later changes that
        arrive while it syncs are kept in ``pending_presence``."""
        member = presence.member_name(connection.username, connection.connection_key)
        change = await presence.room_enter(room_id=connection.room_id, member=member)
        connection.presence_version = max(connection.presence_version, change.version)
        await self._announce(connection.room_id, change)
        return change.users_after

    async def presence_leave(self, connection: RoomConnection) -> None:
        member = presence.member_name(connection.username, connection.connection_key)
        change = await presence.room_leave(room_id=connection.room_id, member=member)
        await self._announce(connection.room_id, change)

    async def _announce(self, room_id: int, change: presence.PresenceChange) -> None:
        if change.changed:
            feed = self.feeds.get(room_id)
            if feed is None:
                return
            await events.presence_publish(
                room_slug=feed.room_slug, version=change.version, frame={"type": "presence", "users": change.users_after}
            )

    # ---- events from the channel layer ---------------------------------------------------
    async def _on_room_event(self, group: str, data: str) -> None:
        feed = self.feeds_by_group.get(group)
        if feed is None:
            return
        if not feed.ready.is_set():
            feed.early.append(data)
            return
        await self._room_event(feed, data)

    async def _room_event(self, feed: RoomFeed, data: str) -> None:
        for event in wire.decode(data):
            await self._room_single_event(feed, event)

    async def _room_single_event(self, feed: RoomFeed, event: wire.WireEvent) -> None:
        if isinstance(event, wire.Change):
            async with feed.lock:
                if event.seq <= feed.last_seq:
                    return
                if event.seq > feed.last_seq + 1:
                    if len(feed.held) >= MAX_HELD:  # the database is down for long: it has them all
                        feed.held.clear()
                    feed.held[event.seq] = event
                    if feed.gap_timer is None:
                        feed.gap_timer = self.loop.call_later(GAP_WAIT_SECONDS, self._gap_waited, feed)
                    return
                feed.last_seq = event.seq
                await self._send_change(feed, event.seq, event.new_id, event.text)
                await self._send_held(feed)
        elif isinstance(event, wire.RoomFrame):
            for connection in list(feed.connections):
                if connection.syncing:
                    connection.pending.append((0, 0, event.text))
                else:
                    await self._send(connection, event.text)
        elif isinstance(event, wire.Typing):
            for connection in list(feed.connections):
                if not connection.syncing and connection.user_id != event.user_id:
                    await self._send(connection, event.text)
        elif isinstance(event, wire.Presence):
            for connection in list(feed.connections):
                if connection.syncing:
                    if connection.pending_presence is None or event.version > connection.pending_presence[0]:
                        connection.pending_presence = (event.version, event.text)
                elif event.version > connection.presence_version:
                    connection.presence_version = event.version
                    await self._send(connection, event.text)

    async def _on_user_event(self, group: str, data: str) -> None:
        user_id = int(group.partition(".")[2])
        for event in wire.decode(data):
            if isinstance(event, wire.CloseConnections):
                for connection in list(self.users.get(user_id, ())):
                    if event.room_id in (0, connection.room_id):
                        await connection.close_with(event.code)
            elif isinstance(event, wire.ReadMarker):
                for connection in list(self.users.get(user_id, ())):
                    if connection.room_id != event.room_id or connection.connection_key == event.except_key:
                        continue
                    if connection.syncing:
                        connection.pending.append((0, 0, event.text))
                    else:
                        await self._send(connection, event.text)

    async def _send_change(self, feed: RoomFeed, seq: int, new_id: int, text: str) -> None:
        follower: ReplyFollower | None = None
        if new_id and protocol.is_streaming_reply(text):
            follower = self._reply_follower(feed, new_id)
        elif not new_id and feed.replies and text.startswith(_REPLY_ENDS):
            await self._reply_ended(feed, text)
        for connection in list(feed.connections):
            if connection.syncing:
                connection.pending.append((seq, new_id, text))
            elif self._is_new(connection, seq, new_id):
                await self._send(connection, follower.give(connection, text) if follower else text)

    # ---- the assistant's replies (chat.reply_follower) -------------------------------------
    def _reply_follower(self, feed: RoomFeed, message_id: int, stream_id: str | None = None) -> ReplyFollower:
        follower = feed.replies.get(message_id)
        if follower is None:
            follower = ReplyFollower(message_id=message_id, stream_id=stream_id, readers=lambda: feed.connections)
            feed.replies[message_id] = follower
        return follower

    async def _reply_ended(self, feed: RoomFeed, text: str) -> None:
        """Before a reply's ``message_done`` or ``message_deleted`` goes out: its last deltas
        first (for the end), or none at all (for a removal); then it is no longer followed."""
        frame = protocol.decode_frame(text)
        follower = feed.replies.pop(frame["id"], None)
        if follower is None:
            return
        if frame["type"] == "message_done":
            await follower.wait_end()
        follower.stop()

    async def reply_snapshot(self, connection: RoomConnection, frame: protocol.MessageFrame, stream_id: str) -> str:
        """A streaming reply's frame for a socket that is syncing, with the content its
        stream holds now; the deltas after it reach the socket's ``pending`` list."""
        feed = self.feeds[connection.room_id]
        follower = self._reply_follower(feed, frame["id"], stream_id)
        try:
            await follower.catch_up()
        except Exception:  # Redis is down: the frame as stored; the deltas follow when it is back
            logger.warning("reading reply %s failed", frame["id"], exc_info=True)
        return follower.give(connection, protocol.encode(frame))

    async def _send(self, connection: RoomConnection, text: str) -> None:
        try:
            await connection.send_text(text)
        except Exception:  # a socket that went away mid-send must not stop the others
            logger.debug("send to %s failed", connection.connection_key, exc_info=True)

    async def _send_held(self, feed: RoomFeed) -> None:
        """Deliver the held changes that follow on from ``last_seq`` (caller holds feed.lock);
        drop those at or below it; stop the gap timer once nothing is held."""
        for seq in [seq for seq in feed.held if seq <= feed.last_seq]:
            del feed.held[seq]
        while (event := feed.held.pop(feed.last_seq + 1, None)) is not None:
            feed.last_seq = event.seq
            await self._send_change(feed, event.seq, event.new_id, event.text)
        if not feed.held and feed.gap_timer is not None:
            feed.gap_timer.cancel()
            feed.gap_timer = None

    def _gap_waited(self, feed: RoomFeed) -> None:
        feed.gap_timer = None
        spawn(self._fill_gap(feed), name="hub-gap")

    async def _fill_gap(self, feed: RoomFeed) -> None:
        """GAP_WAIT_SECONDS after a change arrived ahead of a gap: what is still missing
        comes from the database, then the held changes after it."""
        async with feed.lock:
            if not feed.held or feed.failed:
                return
            try:
                await self._backfill(feed, upto=max(feed.held))
            except Exception:  # the database is down: the once-a-second check tries again
                logger.warning("backfill of %s failed", feed.room_slug, exc_info=True)

    async def _backfill(self, feed: RoomFeed, *, upto: int) -> None:
        """Deliver the changes after ``feed.last_seq`` up to ``upto`` from the database (caller holds feed.lock)."""
        replay = await database_sync_to_async(selectors.change_replay)(
            room_id=feed.room_id, room_slug=feed.room_slug, after=feed.last_seq, upto=upto
        )
        metrics.BACKFILLS.inc()
        metrics.BACKFILLED_MESSAGES.inc(len(replay.changes))
        for change in replay.changes:
            await self._send_change(feed, change.seq, change.new_id, protocol.encode(change.frame))
        feed.last_seq = max(feed.last_seq, upto)
        await self._send_held(feed)  # what arrived ahead of the gap, after it

    async def _on_reconnect(self) -> None:
        for connection in itertools.chain.from_iterable(feed.connections for feed in self.feeds.values()):
            connection.presence_version = 0  # Redis may have lost the version counters
        await self._check_gaps(immediately=True)
        await self._refresh_presence()

    # ---- the clock -----------------------------------------------------------------------
    async def _tick_forever(self) -> None:
        heartbeat = float(settings.WS_HEARTBEAT_SECONDS)
        next_heartbeat = time.monotonic() + heartbeat
        while True:
            await asyncio.sleep(min(GAP_CHECK_SECONDS, heartbeat))
            try:
                await self._check_gaps(immediately=False)
                if time.monotonic() >= next_heartbeat:
                    next_heartbeat = time.monotonic() + heartbeat
                    await self._heartbeat(heartbeat)
                    await self._refresh_presence()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("hub tick failed")

    async def _check_gaps(self, *, immediately: bool) -> None:
        if not self.feeds:
            return
        feeds = [feed for feed in self.feeds.values() if feed.ready.is_set()]
        newest = await database_sync_to_async(selectors.room_seqs)(room_ids=[f.room_id for f in feeds])
        for feed in feeds:
            database_seq = newest.get(feed.room_id, 0)
            behind_since_last_check = feed.suspected_upto and feed.last_seq < feed.suspected_upto
            if immediately or behind_since_last_check:
                async with feed.lock:
                    if feed.last_seq < database_seq:
                        await self._backfill(feed, upto=database_seq)
            feed.suspected_upto = database_seq if database_seq > feed.last_seq else 0

    async def _heartbeat(self, heartbeat: float) -> None:
        # Idle means three pings went unanswered, not three heartbeats of wall time: when
        # this clock itself stood still (Redis stalled under the presence refresh, the
        # database under the gap check), no pings went out and nobody had to answer.
        now = time.monotonic()
        idle_limit = min(now - 3 * heartbeat, self._pings_sent[0]) if len(self._pings_sent) == 3 else -1.0
        self._pings_sent.append(now)
        for feed in list(self.feeds.values()):
            for connection in list(feed.connections):
                if connection.syncing:
                    continue
                if connection.last_seen < idle_limit:
                    await connection.close_with(protocol.CLOSE_IDLE)
                else:
                    await self._send(connection, protocol.PING_TEXT)

    async def _refresh_presence(self) -> None:
        rooms = {
            room_id: [presence.member_name(c.username, c.connection_key) for c in feed.connections]
            for room_id, feed in self.feeds.items()
        }
        await presence.refresh(rooms=rooms)
        for room_id in list(self.feeds):
            await self._announce(room_id, await presence.room_prune(room_id=room_id))

    async def close(self) -> None:
        """Stop the clock and every listener (tests; a worker's hub lives as long as it)."""
        self._ticker.cancel()
        for group in [*self.feeds_by_group, *(wire.user_group(user_id) for user_id in self.users)]:
            await self.layer.unlisten(group)


# The hub of the running event loop (one per worker process; tests get one per loop).
get_hub: PerLoop[Hub] = PerLoop(Hub)
