"""One assistant's reply, followed from its token stream for one worker's sockets in the room.

Exactly once, from any worker (docs/protocol.md, "The assistant in a room")
---------------------------------------------------------------------------
Every worker with sockets in the room follows the reply's stream (core.eventlog) once
and keeps its content so far. Each socket remembers, per reply, how many code points of
it it has been sent (``RoomConnection.replies``); a delta is sent to a socket only past
that point, so nothing is sent twice, and every socket's count is set in the same step
(no ``await`` between) as the content it was given, so nothing is skipped:

- a socket that gets the reply's ``message`` frame live gets the content so far in it;
- a socket that joins or resumes mid-reply gets, while it syncs, the frame with the
  content read from the stream up to now (``catch_up``), then the deltas after it;
- the reply's end (``message_done``, a change of the room with its seq) is sent once the
  follower has read the stream's final event, so no delta comes after it.

When the producing worker dies, the first reader to notice writes the stream's final
event for everyone (core.eventlog.follow), and the follower that reads it ends the reply
as ``interrupted`` (chat.services.replies.reply_finish, which does it once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from channels.db import database_sync_to_async

from chat import protocol, selectors
from chat.services import replies
from core.aio import spawn
from core.eventlog import LogEvent, Produced, follow, get_log

logger = logging.getLogger(__name__)

# The events a reply's stream ends with (docs/protocol.md, "Events").
FINAL_KINDS = ("done", "error")
# What a reader appends, once for everyone, when the producer's worker died.
PRODUCER_LOST = Produced(
    lost_kind="error",
    lost_data={"code": "producer_lost", "detail": "the worker producing this reply stopped"},
)
# How long the reply's end waits for the follower to read the stream's last deltas: the
# producer writes the final event before it stores the end, so this is one read at most.
END_WAIT_SECONDS = 2.0


class ReplyReader(Protocol):
    """What the follower needs of a socket (chat.consumers.RoomConsumer)."""

    connection_key: str
    syncing: bool
    pending: list[tuple[int, int, str]]
    replies: dict[int, int] | None  # reply id -> code points of it sent

    async def send_text(self, text: str) -> None: ...


class ReplyFollower:
    def __init__(
        self,
        *,
        message_id: int,
        stream_id: str | None,
        readers: Callable[[], Iterable[ReplyReader]],
    ) -> None:
        self.message_id = message_id
        self.stream_id = stream_id
        self.readers = readers
        self.parts: list[str] = []
        self.length = 0  # code points so far
        # The model's reasoning and tool calls, an extension shown while the reply streams
        # and not stored (docs/protocol.md, "The assistant in a room").
        self.reasoning = ""
        self.tool_calls: dict[int, str] = {}  # index -> name
        self.last_seq = 0  # the stream's events up to here are in ``parts``
        self.lock = asyncio.Lock()
        self.stream_known = asyncio.Event()
        self.ended = asyncio.Event()  # the stream's final event was read (or there is none)
        self.task = spawn(self._run(), name=f"reply-{message_id}")

    @property
    def content(self) -> str:
        if len(self.parts) > 1:
            self.parts[:] = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def give(self, reader: ReplyReader, frame_text: str) -> str:
        """The reply's ``message`` frame for ``reader`` with the content so far, which
        counts as sent to it from now on (call it right before sending the result)."""
        content = self.content
        if reader.replies is None:
            reader.replies = {}
        reader.replies[self.message_id] = len(content)
        # The reasoning's count is kept under the negated id (a reply's ids are positive).
        reader.replies[-self.message_id] = len(self.reasoning)
        if not content and not self.reasoning and not self.tool_calls:
            return frame_text
        frame = protocol.decode_frame(frame_text)
        frame["content"] = content
        if self.reasoning:
            frame["reasoning"] = self.reasoning
        if self.tool_calls:
            frame["tool_calls"] = [self.tool_calls[index] for index in sorted(self.tool_calls)]
        return protocol.encode(frame)  # type: ignore[arg-type]

    async def catch_up(self) -> None:
        """Read what the stream holds beyond what the follower has, now."""
        async with asyncio.timeout(END_WAIT_SECONDS):  # not wait_for: Python 3.11's can drop a cancel
            await self.stream_known.wait()
        if self.stream_id is None:
            return
        async with self.lock:
            while not self.ended.is_set():
                events = await get_log().read(self.stream_id, after=self.last_seq, wait=0)
                if not events:
                    break
                await self._apply(events)

    async def wait_end(self) -> None:
        """Until the stream's final event was read (at most END_WAIT_SECONDS)."""
        try:
            async with asyncio.timeout(END_WAIT_SECONDS):
                await self.ended.wait()
        except TimeoutError:
            logger.warning("reply %s ended before its follower read its stream's end", self.message_id)

    def stop(self) -> None:
        self.task.cancel()

    async def _run(self) -> None:
        try:
            if self.stream_id is None:
                found = await database_sync_to_async(selectors.reply_stream)(message_id=self.message_id)
                self.stream_id = found[0] if found and found[1] else None
            self.stream_known.set()
            if self.stream_id is None:  # it ended before we looked: its end is a change of the room
                return
            async for events in follow(self.stream_id, after=self.last_seq, final=FINAL_KINDS, produced=PRODUCER_LOST):
                async with self.lock:
                    await self._apply(events)
                if self.ended.is_set():
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("following reply %s failed", self.message_id)
        finally:
            self.stream_known.set()
            self.ended.set()

    async def _apply(self, events: list[LogEvent]) -> None:
        """Add the events past ``last_seq`` to the content and send the delta (caller holds the lock)."""
        tokens: list[str] = []
        thoughts: list[str] = []
        final: LogEvent | None = None
        for event in events:
            if event.seq <= self.last_seq:
                continue
            self.last_seq = event.seq
            if event.kind == "token":
                tokens.append(event.data["token"])
            elif event.kind == "reasoning":
                thoughts.append(event.data["text"])
            elif event.kind == "tool_call" and event.data.get("name") and event.data["index"] not in self.tool_calls:
                await self._deliver_reasoning(thoughts)
                thoughts = []
                self.tool_calls[event.data["index"]] = event.data["name"]
                await self._deliver_to_all(
                    {"type": "message_tool_call", "id": self.message_id, "index": event.data["index"], "name": event.data["name"]}
                )
            elif event.kind in FINAL_KINDS:
                final = event
        await self._deliver_reasoning(thoughts)
        if tokens:
            delta = "".join(tokens)
            offset = self.length
            self.parts.append(delta)
            self.length += len(delta)
            await self._deliver(offset, delta)
        if final is not None:
            self.ended.set()
            if final.kind == "error" and final.data.get("code") == "producer_lost":
                await database_sync_to_async(replies.reply_finish)(
                    message_id=self.message_id, content=self.content, finish_reason="interrupted"
                )

    async def _deliver_reasoning(self, thoughts: list[str]) -> None:
        if not thoughts:
            return
        delta = "".join(thoughts)
        offset = len(self.reasoning)
        self.reasoning += delta
        await self._deliver(offset, delta, kind="message_reasoning")

    async def _deliver_to_all(self, frame: protocol.MessageToolCallFrame) -> None:
        """A frame for every socket that was given the reply (it had what came before)."""
        text = protocol.encode(frame)
        for reader in list(self.readers()):
            if reader.replies is not None and self.message_id in reader.replies:
                await self._send(reader, text)

    async def _send(self, reader: ReplyReader, text: str) -> None:
        if reader.syncing:
            reader.pending.append((0, 0, text))
            return
        try:
            await reader.send_text(text)
        except Exception:  # a socket that went away mid-send must not stop the others
            logger.debug("send to %s failed", reader.connection_key, exc_info=True)

    async def _deliver(self, offset: int, delta: str, kind: str = "message_delta") -> None:
        end = offset + len(delta)
        key = self.message_id if kind == "message_delta" else -self.message_id
        # Encoded once per part sent, not once per socket: almost every socket gets the whole
        # delta (bench/room_assistant.py's profile had the per-socket encoding second only
        # to the send itself).
        texts: dict[int, str] = {}
        for reader in list(self.readers()):
            given = reader.replies
            sent = given.get(key) if given is not None else None
            if given is None or sent is None or sent >= end:
                continue  # not given the reply (yet), or given this part in its frame
            skip = max(0, sent - offset)
            text = texts.get(skip)
            if text is None:
                frame = {"type": kind, "id": self.message_id, "offset": offset + skip, "delta": delta[skip:]}
                text = texts[skip] = protocol.encode(frame)  # type: ignore[arg-type]
            given[key] = end
            await self._send(reader, text)
