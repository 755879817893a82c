"""The assistant WebSocket of docs/protocol.md, "Token streams": parse -> service -> send.

A reply is generated detached from this socket (streaming.services) and read back from
the stream log by a reader task of this socket, so ``receive`` stays free: a ``cancel``
frame is handled while tokens are flowing, and closing the socket stops only the
reading, never the generation (which the client can resume).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings

from accounts import connections
from accounts.connections import Connection, get_connections
from core.consumers import (
    CLOSE_IDLE,
    CLOSE_NO_ROOM,
    CLOSE_REAUTHENTICATE,
    CLOSE_TOO_MANY_CONNECTIONS,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNAVAILABLE,
    PING_TEXT,
    LayerConsumer,
)
from core.errors import DomainError
from core.eventlog import LogEvent
from core.http import MAX_ID
from core.layer import user_group
from streaming import services
from streaming.backends import ChatTurn

# A stream id as the server makes them (uuid4().hex), the same as in streaming/urls.py.
STREAM_ID = re.compile(r"[0-9a-f]{32}")
# The log's events besides tokens and the end, each sent as an ``ai_stream_<event>`` frame.
TYPED_EVENTS = frozenset({"reasoning", "tool_call", "tool_result", "status", "sources"})


def _frame(**fields: Any) -> str:
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


class AssistantConsumer(LayerConsumer):
    user_id = 0
    stream_id: str | None = None
    reader: asyncio.Task[None] | None = None
    registered: Connection | None = None  # in accounts.connections: counted, pinged, told of credential changes
    last_seen = 0.0

    async def connect(self) -> None:
        """Runs on the handshake; accept first so that close codes reach the client."""
        await self.accept()
        if self.scope.get("database_unavailable"):  # set by accounts.middleware: try again later
            return await self.close(code=CLOSE_UNAVAILABLE)
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return await self.close(code=CLOSE_UNAUTHENTICATED)
        self.user_id = user.pk
        self.last_seen = time.monotonic()
        self.groups = [user_group(user.pk)]  # docs/protocol.md, "Channels integration"
        await self.channel_layer.group_add(self.groups[0], self.channel_name)
        self.registered = await get_connections().open(
            user_id=user.pk,
            credential=self.scope.get("credential"),
            on_change=self._credentials_changed,
            on_heartbeat=self._heartbeat,
            kind=connections.ASSISTANT,
            limit=int(settings.ASSISTANT_MAX_SOCKETS_PER_USER),
        )
        if self.registered is None:
            return await self.close(code=CLOSE_TOO_MANY_CONNECTIONS)
        values = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("conversation_id")
        self.conversation_id: str | None = values[0] if values else None
        if self.conversation_id:
            history = await database_sync_to_async(services.conversation_history)(
                conversation_id=self.conversation_id, owner_id=self.user_id
            )
            if history is None:
                return await self.close(code=CLOSE_NO_ROOM)
            await self.send(_frame(type="history", messages=[{"role": t.role, "content": t.content} for t in history]))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Runs for every frame from the client."""
        self.last_seen = time.monotonic()
        try:
            frame = json.loads(text_data) if text_data is not None else None
        except (ValueError, RecursionError):
            return await self._error("bad_json", "frame is not valid JSON")
        if not isinstance(frame, dict):
            return await self._error("bad_frame", "frame must be a JSON object")
        try:
            await self._dispatch(frame)
        except DomainError as refused:  # the one place a refusal becomes a frame
            await self._error(refused.code, refused.detail)

    async def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "user_message":
            await self._start(frame)
        elif kind == "cancel":
            if self.stream_id:
                await services.stream_cancel(stream_id=self.stream_id, user_id=self.user_id)
        elif kind == "resume":
            await self._resume(frame)
        elif kind == "ping":
            await self.send(_frame(type="pong"))
        elif kind != "pong":
            await self._error("bad_frame", "unknown frame type")

    async def disconnect(self, code: int) -> None:
        """Runs when the socket closes: stop reading; the generation goes on."""
        if self.reader is not None:
            self.reader.cancel()
        if self.registered is not None:
            await get_connections().close(self.registered)

    async def room_notice(self, event: dict[str, Any]) -> None:
        """Runs for a group_send of ``{"type": "room.notice", "content": …}`` to the user's group."""
        content = event.get("content")
        if isinstance(content, str):
            await self.send(_frame(type="notice", content=content))

    async def _credentials_changed(self) -> None:
        """Runs when the user's credentials change, on whichever worker: reconnect, and
        let the new handshake decide (docs/protocol.md, "Connections and credentials")."""
        await self.close(code=CLOSE_REAUTHENTICATE)

    async def _heartbeat(self) -> None:
        """Runs once a heartbeat: ping, or close a client silent for three heartbeats
        (a dead peer that TCP has not noticed), as room sockets do."""
        if time.monotonic() - self.last_seen > 3 * float(settings.WS_HEARTBEAT_SECONDS):
            await self.close(code=CLOSE_IDLE)
        else:
            await self.send(PING_TEXT)

    async def _start(self, frame: dict[str, Any]) -> None:
        conversation_id = frame.get("conversation_id") or self.conversation_id
        message, max_tokens = services.clean_request(message=frame.get("content"), max_tokens=frame.get("max_tokens"))
        if conversation_id is not None and not isinstance(conversation_id, str):
            raise services.StreamRefusedError("bad_request", "conversation_id must be a string")
        started = await services.generation_start(
            user_id=self.user_id,
            turns=[ChatTurn("user", message)],
            conversation_id=conversation_id,
            max_tokens=max_tokens,
            credential=self.scope.get("credential"),
            model=services.model_name(frame.get("model")),
        )
        self.conversation_id, self.stream_id = started.conversation_id, started.stream_id
        await self.send(_frame(type="conversation_start", conversation_id=started.conversation_id, stream_id=started.stream_id))
        await self.send(_frame(type="typing"))
        self._read(started.stream_id, after=0)

    async def _resume(self, frame: dict[str, Any]) -> None:
        stream_id, after = frame.get("stream_id"), frame.get("after", -1)
        if not isinstance(stream_id, str) or isinstance(after, bool) or not isinstance(after, int) or after >= MAX_ID:
            return await self._error("bad_frame", "resume needs stream_id (string) and after (integer index)")
        # Only a well-formed id is looked up: any other string names no stream, and one with
        # a lone surrogate would not even encode as a Redis key (the socket died with 1011).
        if not STREAM_ID.fullmatch(stream_id) or not await services.stream_owner_check(stream_id=stream_id, user_id=self.user_id):
            return await self._error("not_found", "no such stream (or it expired)")
        self.stream_id = stream_id
        self._read(stream_id, after=max(after + 1, 0))  # chunk index i is log event i + 1

    def _read(self, stream_id: str, *, after: int) -> None:
        if self.reader is not None:
            self.reader.cancel()
        self.reader = asyncio.get_running_loop().create_task(self._forward(stream_id, after))

    async def _forward(self, stream_id: str, after: int) -> None:
        """Send the log's events after ``after`` as chunks, then ``ai_stream_end``."""
        async for events in services.stream_follow(stream_id=stream_id, after=after):
            for event in events:
                await self._send_event(stream_id, event)

    async def _send_event(self, stream_id: str, event: LogEvent) -> None:
        data = event.data
        if event.kind == "token":
            await self.send(_frame(type="ai_stream_chunk", stream_id=stream_id, index=data["index"], content=data["token"]))
        elif event.kind in TYPED_EVENTS:
            # Its own frame, with the event's data and the index a resume counts by (seq - 1,
            # as a chunk's); a tool call's own index is its call_index: docs/protocol.md, "Events".
            fields = {("call_index" if key == "index" else key): value for key, value in data.items()}
            await self.send(_frame(type=f"ai_stream_{event.kind}", stream_id=stream_id, index=event.seq - 1, **fields))
        elif event.kind == "done":
            await self.send(
                _frame(type="ai_stream_end", stream_id=stream_id, finish_reason=data["finish_reason"], content=data["content"])
            )
        elif event.kind == "error":
            content = data.get("content", "")
            frame = _frame(
                type="ai_stream_end",
                stream_id=stream_id,
                finish_reason="error",
                content=content,
                code=data["code"],
                detail=data["detail"],
            )
            await self.send(frame)

    async def _error(self, code: str, detail: str) -> None:
        await self.send(_frame(type="error", code=code, detail=detail))
