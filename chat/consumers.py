"""The room WebSocket of docs/protocol.md, "The room protocol": parse -> service -> send.

Live events do not come through a per-socket channel-layer channel: the worker's hub
(chat.hub) writes broadcast frames to ``send_text`` directly.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings
from django.contrib.auth.models import User
from django.db import Error as DatabaseError

from accounts import connections
from accounts.connections import Connection, get_connections
from chat import protocol, selectors, signals, wire
from chat.hub import Hub, get_hub
from chat.mentions import mentions_assistant
from chat.models import Room
from chat.protocol import ChatError
from chat.services import messages, reactions, replies, rooms
from chat.writer import MessageWriter, get_writer
from core import drain, metrics
from core.consumers import LayerConsumer
from core.db_thread import in_db_thread
from core.errors import DomainError
from core.http import parse_id
from core.servers import SocketGuard, guard_socket

logger = logging.getLogger(__name__)


def _query_id(query_string: bytes, name: str) -> int | None:
    values = parse_qs(query_string.decode("latin-1")).get(name)
    return parse_id(values[0]) if values else None


class RoomConsumer(LayerConsumer):
    """A room socket. Chat traffic reaches it through the worker's hub (chat.hub), written
    to ``send_text`` directly; as a Channels consumer it is also in the groups
    ``room.<slug>`` and ``user.<id>``, so anyone's group_send reaches it (``room_notice``)."""

    # Slots, not an instance dict, for what is ours (Channels' own attributes, the scope and
    # the channel among them, stay in the dict): an idle socket should cost as little memory
    # as possible (docs/performance.md, "Idle connections").
    __slots__ = (
        "assistant",
        "connection_key",
        "cut_off",
        "hub",
        "joined",
        "last_seen",
        "last_sent_id",
        "last_sent_seq",
        "pending",
        "pending_presence",
        "presence_version",
        "private",
        "registered",
        "replies",
        "room_id",
        "room_slug",
        "send_guard",
        "syncing",
        "typing",
        "user_id",
        "username",
        "writer",
    )

    scope: dict[str, Any]
    hub: Hub
    writer: MessageWriter

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.room_id = 0
        self.room_slug = ""
        self.user_id = 0
        self.username = ""
        self.connection_key = ""
        self.last_sent_id = 0
        self.last_sent_seq = 0
        self.syncing = True
        self.presence_version = 0
        self.joined = False
        self.private = False
        self.assistant = False  # the room had the assistant on when this socket joined
        # In accounts.connections: counted, told of credential changes.
        self.registered: Connection | None = None
        self.send_guard: SocketGuard | None = None  # daphne's or the asyncio server's (core.servers)
        self.cut_off = False  # closed for not reading: nothing more is sent
        self.typing: messages.TypingGate | None = None  # made on the first typing frame
        # The assistant's replies sent to it, by id (chat.reply_follower).
        self.replies: dict[int, int] | None = None
        self.pending: list[tuple[int, int, str]] = []
        self.pending_presence: tuple[int, str] | None = None
        self.last_seen = 0.0

    # ---- hooks ------------------------------------------------------------------------
    async def connect(self) -> None:
        """Runs on the handshake. Accept first: a close before accept loses its code."""
        self.last_seen = time.monotonic()
        # Before any database work: a worker that is draining sends its newcomers on (to
        # another worker), and a burst of handshakes (a drained worker's clients) waits its
        # turn, or tries again later (core.drain).
        admitted = not drain.draining() and await drain.admission().admit()
        await self.accept()
        if not admitted:
            await self.close_with(protocol.CLOSE_SERVICE_RESTART if drain.draining() else protocol.CLOSE_TRY_AGAIN_LATER)
            return
        self.send_guard = guard_socket(self.base_send)

        try:
            await self._join()
        except DatabaseError:
            # The database is down (a restart): say "try again later" (4503) rather than
            # let the consumer die with 1011; clients reconnect with back-off and last_id.
            logger.warning("handshake of %s failed: database unavailable", self.scope.get("path"), exc_info=True)
            await self.close_with(protocol.CLOSE_UNAVAILABLE)

    async def _join(self) -> None:
        if self.scope.get("database_unavailable"):  # set by accounts.middleware
            return await self.close_with(protocol.CLOSE_UNAVAILABLE)
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return await self.close_with(protocol.CLOSE_UNAUTHENTICATED)
        # A private room the user is not in does not exist for them (4004, not 4003).
        # The handshake's queries run on the database thread that keeps its connection:
        # opening one per query was a fifth of a worker's time in a reconnection burst.
        room = await in_db_thread(
            selectors.room_get_for, slug=self.scope["url_route"]["kwargs"]["slug"], user=user, staff_sees_private=False
        )
        if room is None:
            return await self.close_with(protocol.CLOSE_NO_ROOM)
        # Keep ids and names, not model instances, nor the scope's session and cookies: an
        # idle connection should cost as little memory as possible (docs/performance.md).
        self.room_id, self.room_slug, self.user_id, self.username = room.pk, room.slug, user.pk, user.get_username()
        # Channels' websocket_disconnect leaves the groups listed here.
        # Interned: the same two strings for every socket of the room and of the user.
        self.groups = [sys.intern(wire.room_group(room.slug)), sys.intern(wire.user_group(user.pk))]
        for group in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.private = room.private
        self.assistant = room.assistant
        query_string = self.scope.get("query_string", b"")
        last_id, last_seq = _query_id(query_string, "last_id"), _query_id(query_string, "last_seq")
        credential = self.scope.get("credential")
        # In place: the middleware's and Channels' frames hold this same dict (the only
        # copy, accounts.middleware), so the user and the rest go now, not at the close.
        path = self.scope["path"]
        self.scope.clear()
        self.scope.update(type="websocket", path=path)
        self.hub = get_hub()
        self.writer = get_writer()
        self.connection_key = self.hub.new_connection_key()
        self.registered = await get_connections().open(
            user_id=user.pk,
            credential=credential,
            on_change=self._credentials_changed,
            kind=connections.ROOM,
            limit=int(settings.CHAT_MAX_CONNECTIONS_PER_USER),
        )
        if self.registered is None:
            return await self.close_with(protocol.CLOSE_TOO_MANY_CONNECTIONS)
        await self.hub.join(self)  # before the ban check, so a ban issued now still reaches us
        self.joined = True
        if await in_db_thread(selectors.user_is_banned, user_id=self.user_id, room_id=self.room_id):
            return await self.close_with(protocol.CLOSE_BANNED)
        online = await self.hub.presence_enter(self)
        await self.send_frame(
            {"type": "hello", "room": room.slug, "user": self.username, "heartbeat": settings.WS_HEARTBEAT_SECONDS}
        )
        if last_seq is not None:
            await self._send_replay(last_seq)
        else:
            await self._send_backlog(last_id)
        await self.send_frame({"type": "presence", "users": online})
        await self.hub.synced(self)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Runs for every frame from the client."""
        self.last_seen = time.monotonic()
        if self.syncing:
            return
        nonce: str | None = None
        try:
            if text_data is None:
                raise ChatError("bad_frame", "binary frames are not accepted; send JSON text")
            if len(text_data) > settings.WS_MAX_FRAME_BYTES:
                raise ChatError("too_long", f"frame is larger than {settings.WS_MAX_FRAME_BYTES} bytes")
            frame = protocol.parse_client_frame(text_data)
            nonce = getattr(frame, "nonce", None)
            if isinstance(frame, protocol.SendMessage):
                # The broadcast echo, carrying the nonce, is the sender's ack.
                try:
                    posted = await self.writer.write(
                        messages.MessageDraft(
                            room_id=self.room_id,
                            room_slug=self.room_slug,
                            user_id=self.user_id,
                            username=self.username,
                            content=frame.content,
                            nonce=frame.nonce,
                            reply_to=frame.reply_to,
                        )
                    )
                except DatabaseError:
                    # Not stored (the transaction rolled back): no ack, and an error the
                    # client can act on, instead of a consumer dying with 1011.
                    raise ChatError(
                        "unavailable", "the database is unavailable; the message was not stored, send it again", nonce=frame.nonce
                    ) from None
                if mentions_assistant(posted["content"]):
                    # The room's assistant answers, if it has one (room_assistant); a refusal
                    # (busy, a limit) is this sender's alone, answered below.
                    await signals.assistant_asked.asend(
                        sender=type(self), frame=posted, room_id=self.room_id, user_id=self.user_id
                    )
            elif isinstance(frame, protocol.Typing):
                if self.typing is None:
                    self.typing = messages.TypingGate()
                await messages.typing_set(
                    room_id=self.room_id,
                    room_slug=self.room_slug,
                    user_id=self.user_id,
                    username=self.username,
                    is_typing=frame.is_typing,
                    gate=self.typing,
                )
            elif isinstance(frame, protocol.Stop):
                # Its effect (message_done, cancelled) reaches everyone, this socket too.
                await replies.reply_stop(room_id=self.room_id, user_id=self.user_id, message_id=frame.id)
            elif isinstance(frame, protocol.Ping):
                await self.send_text(protocol.PONG_TEXT)
            elif isinstance(frame, protocol.React):
                # Through the writer's batches, like messages (chat.services.reactions says why);
                # it answers nothing to the sender: the room's broadcast is what it causes.
                await self.writer.react(
                    reactions.ReactionDraft(
                        room_id=self.room_id,
                        room_slug=self.room_slug,
                        user_id=self.user_id,
                        username=self.username,
                        message_id=frame.id,
                        emoji=frame.emoji,
                        on=frame.on,
                    )
                )
            elif isinstance(frame, protocol.Edit | protocol.Delete | protocol.Read):
                # Changes answer nothing to the sender: the room's broadcast (or, for a read
                # marker, the user's other sockets) is what they cause.
                await in_db_thread(self._change, frame=frame)
        except DatabaseError:
            metrics.FRAMES_REJECTED.labels(code="unavailable").inc()
            await self.send_frame(protocol.error_frame("unavailable", "the database is unavailable; try again", nonce=nonce))
        except DomainError as error:
            # The one place the room socket answers a refusal (the parser's, the services',
            # its own): an ``error`` frame, and the socket stays open.
            metrics.FRAMES_REJECTED.labels(code=error.code).inc()
            await self.send_frame(protocol.refusal_frame(error, nonce=nonce))

    def _change(self, frame: protocol.Edit | protocol.Delete | protocol.Read) -> None:
        """A client's change to the room, on the database thread: parse -> service (the
        services raise ChatError, answered in ``receive``)."""
        user = User.objects.get(pk=self.user_id)
        room = Room.objects.get(pk=self.room_id)
        if isinstance(frame, protocol.Edit):
            messages.message_edit(room=room, user=user, message_id=frame.id, content=frame.content)
        elif isinstance(frame, protocol.Delete):
            messages.message_delete(room=room, user=user, message_id=frame.id)
        else:
            rooms.read_marker_move(room=room, user=user, message_id=frame.id, connection_key=self.connection_key)

    async def disconnect(self, code: int) -> None:
        """Runs once the socket is closed, by either side."""
        try:
            if self.joined:
                self.joined = False
                await self.hub.leave(self)
                await self.hub.presence_leave(self)
            if self.registered is not None:
                await get_connections().close(self.registered)
        except Exception:  # Redis down: the entries expire after three heartbeats anyway
            logger.warning("cleanup of %s failed", self.connection_key, exc_info=True)

    # ---- sending -------------------------------------------------------------------------
    async def _send_backlog(self, last_id: int | None) -> None:
        # The seq first: changes after it are sent live (an edit of a message the backlog
        # already shows as edited is sent again, harmlessly); a new message that the
        # backlog sent is not sent again (``last_sent_id``).
        seq = (await in_db_thread(selectors.room_seqs, room_ids=[self.room_id])).get(self.room_id, 0)
        missed, frames = await in_db_thread(
            selectors.message_backlog, room_id=self.room_id, room_slug=self.room_slug, last_id=last_id
        )
        if missed:
            await self.send_frame({"type": "gap", "missed": missed})
        await self._send_history(frames)
        sent = frames[-1]["id"] if frames else 0
        # Live messages at or below what the client says it has are not sent again.
        self.last_sent_id = max(sent, last_id or 0)
        self.last_sent_seq = seq
        await self.send_frame({"type": "synced", "last_id": sent, "seq": seq})

    async def _send_replay(self, last_seq: int) -> None:
        """docs/protocol.md, "Room changes": every change after ``last_seq`` once (as the
        messages' current state), or a ``gap`` past REPLAY_MAX; then ``synced``."""
        replay = await in_db_thread(
            selectors.change_replay,
            room_id=self.room_id,
            room_slug=self.room_slug,
            after=last_seq,
            limit=protocol.REPLAY_MAX,
        )
        if replay.missed:
            await self.send_frame({"type": "gap", "missed": replay.missed})
        await self._send_history([change.frame for change in replay.changes])
        sent = max((change.new_id for change in replay.changes), default=0)
        # Every change up to the replay's seq has been sent; a new message is sent live
        # only above that seq, so above every id the replay sent.
        self.last_sent_seq = replay.seq
        self.last_sent_id = sent
        await self.send_frame({"type": "synced", "last_id": sent, "seq": replay.seq})

    async def _send_history(self, frames: Sequence[protocol.ChangeFrame]) -> None:
        """Send a joining socket's backlog or replay, then the reply streaming in the room,
        if any, whatever the client had (docs/protocol.md, "The assistant in a room"): with
        the content it has now, followed by its deltas."""
        # Only a room with the assistant on can have a reply streaming (turned off mid-reply,
        # a joiner gets the reply's end, not its deltas): no query on other rooms' handshakes.
        found = (
            await in_db_thread(selectors.streaming_replies, room_id=self.room_id, room_slug=self.room_slug)
            if self.assistant
            else []
        )
        streaming = {frame["id"]: (frame, stream_id) for frame, stream_id in found}
        for frame in frames:
            if frame["type"] == "message" and frame["id"] in streaming:
                _, stream_id = streaming.pop(frame["id"])
                await self.send_text(await self.hub.reply_snapshot(self, frame, stream_id))
            else:
                await self.send_frame(frame)
        for frame, stream_id in streaming.values():
            await self.send_text(await self.hub.reply_snapshot(self, frame, stream_id))

    async def send_frame(self, frame: protocol.ServerFrame) -> None:
        await self.send_text(protocol.encode(frame))

    async def send_text(self, text: str) -> None:
        if self.cut_off:  # closed for not reading: nothing more is sent
            return
        guard = self.send_guard
        if guard is None:
            await self.base_send({"type": "websocket.send", "text": text})
            return
        held = guard.hold(text)
        if guard.waiting_since is not None and self._past_send_limits(guard.waiting_since, guard.waiting_bytes):
            if guard.closes_gracefully:
                # Closing frees the buffer: autobahn drops the connection when the close
                # handshake times out (1 s), as a client that does not read never answers.
                await self.close_with(protocol.CLOSE_TOO_SLOW)
            else:
                metrics.WS_CLOSES.labels(code=str(protocol.CLOSE_TOO_SLOW)).inc()
                # A close frame would wait behind everything queued for a client that does
                # not read: drop the connection instead (the client sees 1006 and resumes).
                guard.abort(protocol.CLOSE_TOO_SLOW)
            return
        if held:
            return
        await self.base_send({"type": "websocket.send", "text": text})

    def _past_send_limits(self, waiting_since: float, waiting_chars: int) -> bool:
        """Whether the client has read nothing for too long, or let too much pile up
        (WS_SEND_TIMEOUT_SECONDS, WS_SEND_BUFFER_BYTES); if so, it is cut off."""
        stalled = time.monotonic() - waiting_since
        if stalled <= settings.WS_SEND_TIMEOUT_SECONDS and waiting_chars <= settings.WS_SEND_BUFFER_BYTES:
            return False
        self.cut_off = True
        logger.info("closing %s: its client read nothing for %.1f s", self.connection_key, stalled)
        return True

    async def _credentials_changed(self) -> None:
        """Runs when the user's credentials change, on whichever worker: reconnect, and
        let the new handshake decide (docs/protocol.md, "Connections and credentials")."""
        await self.close_with(protocol.CLOSE_REAUTHENTICATE)

    async def room_notice(self, event: dict[str, Any]) -> None:
        """Runs for a group_send of ``{"type": "room.notice", "content": …}`` to this room's
        or this user's group, from any code on any worker."""
        content = event.get("content")
        if isinstance(content, str):
            await self.send_frame({"type": "notice", "content": content})
