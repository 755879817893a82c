"""Starting the assistant's reply in a room, and setting a room's assistant.

The reply runs as a generation of streaming (its limits, its stream log, Stop through
the log's cancel flag) whose content is not stored as a conversation but as the room
message chat keeps for it (chat.services.replies): started empty and marked as
streaming once the generation was accepted, ended with the whole content once the
generation ends. Every worker's hub turns the stream into ``message_delta`` frames.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User

from chat import protocol, selectors
from chat.models import Room
from chat.protocol import ChatError
from chat.services import replies, rooms
from core.db_thread import in_db_thread
from core.eventlog import get_log
from streaming import catalog
from streaming import services as streaming
from streaming.backends import ChatTurn

logger = logging.getLogger(__name__)

# The room's recent messages the assistant reads (the asking one last): enough for the
# thread of a conversation, bounded so that a busy room's reply costs a bounded prompt.
CONTEXT_MESSAGES = 20
SYSTEM_PROMPT = (
    "You are the assistant in the chat room {title!r}. Several people talk here; each of their"
    " messages carries its author's name. Answer the last message, briefly, in Markdown."
)


@dataclass(frozen=True, slots=True)
class RoomAssistant:
    enabled: bool
    model: str
    title: str


def _room_assistant(*, room_id: int) -> RoomAssistant:
    enabled, model, title = Room.objects.values_list("assistant", "assistant_model", "title").get(pk=room_id)
    return RoomAssistant(enabled=enabled, model=model, title=title)


def _participant(username: str) -> str:
    """A username as OpenAI's ``name`` of a message allows it: 1 to 64 of a-z, A-Z, 0-9, _ and -."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", username)[:64] or "user"


def _context(*, room_id: int, title: str, upto: int) -> list[ChatTurn]:
    """The system prompt, then the room's recent messages: the assistant's own as its turns,
    everyone else's as user turns carrying the author as the message's ``name`` (what
    OpenAI's API has for several participants), the text itself unchanged."""
    turns = [ChatTurn("system", SYSTEM_PROMPT.format(title=title))]
    for author, content in selectors.room_recent_messages(room_id=room_id, limit=CONTEXT_MESSAGES, upto=upto):
        if author == replies.ASSISTANT_USERNAME:
            turns.append(ChatTurn("assistant", content))
        else:
            message = {"role": "user", "name": _participant(author), "content": content}
            turns.append(ChatTurn("user", content, message=message))
    return turns


async def on_assistant_asked(*, sender: Any, frame: protocol.MessageFrame, room_id: int, user_id: int, **_: Any) -> None:
    """chat.signals.assistant_asked's receiver: the room socket's message mentioned @assistant."""
    await reply_start(room_id=room_id, user_id=user_id, asking=frame)


async def reply_start(*, room_id: int, user_id: int, asking: protocol.MessageFrame) -> int | None:
    """Start the assistant's reply to ``asking`` if the room has an assistant; return the
    reply's message id (None: the room has none). The reply runs on this worker.

    Refusals (for the asker alone, carrying the asking message's nonce): ChatError
    ``busy`` while the room has a reply streaming, streaming's StreamRefusedError for a
    limit (``budget_exceeded``, ``busy``), a site-wide ban or a model no longer served
    (``model_not_found``). Nothing is shown in the room for a refused reply."""
    room = await in_db_thread(_room_assistant, room_id=room_id)
    if not room.enabled:
        return None
    nonce = asking["nonce"]
    await _refuse_if_busy(room_id=room_id, room_slug=asking["room"], nonce=nonce)
    turns = await in_db_thread(_context, room_id=room_id, title=room.title, upto=asking["id"])
    reply_id: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def finish(finished: streaming.Finished) -> None:
        message_id = await reply_id
        if message_id is not None:
            await in_db_thread(
                replies.reply_finish, message_id=message_id, content=finished.content, finish_reason=finished.finish_reason
            )

    started = await streaming.generation_start(
        user_id=user_id,
        turns=turns,
        conversation_id=None,
        max_tokens=None,
        model=room.model or None,
        # Nobody needs to watch for the reply to go on: it is a message of the room.
        abandonable=False,
        record=False,
        on_finish=finish,
    )
    try:
        frame = await in_db_thread(replies.reply_create, room_id=room_id, reply_to=asking["id"], stream_id=started.stream_id)
    except BaseException as error:
        reply_id.set_result(None)
        await get_log().cancel(started.stream_id)
        if isinstance(error, ChatError):
            error.nonce = nonce
        raise
    reply_id.set_result(frame["id"])
    return frame["id"]


async def _refuse_if_busy(*, room_id: int, room_slug: str, nonce: str | None) -> None:
    """ChatError ``busy`` while a reply streams in the room. A reply whose producer died
    while nobody was in the room to notice is ended first (``interrupted``), so that it
    does not hold the room for ever."""
    for frame, stream_id in await in_db_thread(selectors.streaming_replies, room_id=room_id, room_slug=room_slug):
        meta = await get_log().meta(stream_id)
        if meta is not None and meta.status == "running" and not meta.producer_lost:
            raise ChatError("busy", replies.BUSY_DETAIL, nonce=nonce)
        content = await _stream_content(stream_id)
        await in_db_thread(replies.reply_finish, message_id=frame["id"], content=content, finish_reason="interrupted")


async def _stream_content(stream_id: str) -> str:
    """The text of a stream's token events (what is left of it: "" once it expired)."""
    parts: list[str] = []
    after = 0
    while events := await get_log().read(stream_id, after=after, wait=0):
        parts.extend(event.data["token"] for event in events if event.kind == "token")
        after = events[-1].seq
    return "".join(parts)


def room_assistant_configure(*, room: Room, user: User, enabled: object, model: object) -> Room:
    """PATCH /api/rooms/<slug>'s write: check the values, then chat's room_assistant_set.
    ChatError ``bad_frame`` (400) for a wrong type or a model not in GET /v1/models;
    ``forbidden`` for someone other than the owner or staff."""
    if enabled is not None and not isinstance(enabled, bool):
        raise ChatError("bad_frame", "assistant must be true or false")
    if model is not None and (not isinstance(model, str) or catalog.find(model) is None):
        names = ", ".join(spec.name for spec in catalog.models())
        raise ChatError("bad_frame", f"assistant_model must be one of GET /v1/models: {names}")
    return rooms.room_assistant_set(
        room=room,
        user=user,
        enabled=room.assistant if enabled is None else enabled,
        model=room.assistant_model if model is None else model,
    )
