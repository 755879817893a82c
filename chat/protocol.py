"""The room protocol of docs/protocol.md, "The room protocol": every frame declared once.

Client frames are parsed by ``parse_client_frame``; server frames are built by the
``*_frame`` functions and encoded once by ``encode`` (a message frame is encoded once
per message, not once per recipient).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

# Every socket's close codes and heartbeat are core's (core.consumers); the room protocol
# names them here too, beside its frames.
from core.consumers import CLOSE_BANNED as CLOSE_BANNED
from core.consumers import CLOSE_IDLE as CLOSE_IDLE
from core.consumers import CLOSE_NO_ROOM as CLOSE_NO_ROOM
from core.consumers import CLOSE_REAUTHENTICATE as CLOSE_REAUTHENTICATE
from core.consumers import CLOSE_SERVICE_RESTART as CLOSE_SERVICE_RESTART
from core.consumers import CLOSE_TOO_MANY_CONNECTIONS as CLOSE_TOO_MANY_CONNECTIONS
from core.consumers import CLOSE_TOO_SLOW as CLOSE_TOO_SLOW
from core.consumers import CLOSE_TRY_AGAIN_LATER as CLOSE_TRY_AGAIN_LATER
from core.consumers import CLOSE_UNAUTHENTICATED as CLOSE_UNAUTHENTICATED
from core.consumers import CLOSE_UNAVAILABLE as CLOSE_UNAVAILABLE
from core.consumers import PING_TEXT as PING_TEXT
from core.consumers import PONG_TEXT as PONG_TEXT
from core.errors import DomainError, Kind
from core.text import is_storable_text as is_storable_text

# ---- limits ----------------------------------------------------------------------
MAX_CONTENT_CHARS = 4000
MAX_NONCE_CHARS = 64
BACKLOG_DEFAULT = 50
# 1000: enough to cover a few minutes of a busy room for a reconnecting client while
# bounding the burst one reconnect can cost the server; older history is on REST.
BACKLOG_MAX = 1000
# A connection's "is typing" is announced to the room at most once a second; "stopped"
# only after an announced "typing" (docs/protocol.md, "Typing"). Clients re-send
# "typing" every few seconds while the user types, so they never meet the limit.
TYPING_INTERVAL = 1.0
# A ``last_seq`` resume replays at most this many changes; past it the client gets a
# ``gap`` and reloads (docs/protocol.md, "Room changes"): the same bound, for the same
# reason, as the backlog of messages.
REPLAY_MAX = 1000
# Pages of older history (``before=<id>``) and of newer (``after=<id>``) hold at most this many.
PAGE_MAX = 200

ErrorCode = Literal[
    "bad_json",
    "bad_frame",
    "empty",
    "too_long",
    "rate_limited",
    "muted",
    "room_locked",
    "unavailable",
    "not_found",
    "forbidden",
    "edit_window_passed",
    "bad_emoji",
    "banned",
    "busy",
]


# ---- server frames -------------------------------------------------------------------
class HelloFrame(TypedDict):
    type: Literal["hello"]
    room: str
    user: str
    heartbeat: float


Reactions = dict[str, list[str]]  # emoji -> usernames, in the order they reacted


class MessageFrame(TypedDict):
    type: Literal["message"]
    id: int
    room: str
    user: str
    content: str
    ts: str
    nonce: str | None
    reply_to: int | None
    edited_at: str | None
    reactions: Reactions
    seq: int  # the seq of the message's creation (its content is the current one)


class ReplyFrame(MessageFrame):
    """An assistant's reply (docs/protocol.md, "The assistant in a room"): a message frame
    that says whether the reply is still growing, and how it ended (None while it
    streams); only replies carry these."""

    streaming: bool
    finish_reason: str | None


class MessageDeltaFrame(TypedDict):
    """More of a streaming reply: ``delta`` goes at ``offset`` (code points before it)."""

    type: Literal["message_delta"]
    id: int
    offset: int
    delta: str


class MessageReasoningFrame(TypedDict):
    """More of a streaming reply's reasoning (an extension): ``delta`` at ``offset`` of it."""

    type: Literal["message_reasoning"]
    id: int
    offset: int
    delta: str


class MessageToolCallFrame(TypedDict):
    """A streaming reply's model called a tool (an extension): its index and name, once."""

    type: Literal["message_tool_call"]
    id: int
    index: int
    name: str


class MessageDoneFrame(TypedDict):
    """A reply ended: its whole content, how it ended, and the seq of that change."""

    type: Literal["message_done"]
    id: int
    content: str
    finish_reason: str  # stop | length | cancelled | interrupted | error
    seq: int


class MessageRestoredFrame(TypedDict):
    """A removed message is back: the message frame's fields."""

    type: Literal["message_restored"]
    id: int
    room: str
    user: str
    content: str
    ts: str
    nonce: str | None
    reply_to: int | None
    edited_at: str | None
    reactions: Reactions
    seq: int


class MessageEditedFrame(TypedDict):
    type: Literal["message_edited"]
    id: int
    content: str
    edited_at: str
    seq: int


class ReactionsFrame(TypedDict):
    """The whole reaction set of a message, so that a lost frame is healed by the next."""

    type: Literal["reactions"]
    id: int
    reactions: Reactions
    seq: int


class ReadFrame(TypedDict):
    """The user's read marker moved, on another of their connections."""

    type: Literal["read"]
    user: str
    id: int


class GapFrame(TypedDict):
    type: Literal["gap"]
    missed: int


class SyncedFrame(TypedDict):
    type: Literal["synced"]
    last_id: int
    seq: int


class PresenceFrame(TypedDict):
    type: Literal["presence"]
    users: list[str]


class TypingFrame(TypedDict):
    type: Literal["typing"]
    user: str
    is_typing: bool


class MessageDeletedFrame(TypedDict):
    type: Literal["message_deleted"]
    id: int
    seq: int


class NoticeFrame(TypedDict):
    type: Literal["notice"]
    content: str


class RoomLockedFrame(TypedDict):
    """An extension of docs/protocol.md, "The room protocol": a moderator locked (or unlocked) the room."""

    type: Literal["room_locked"]
    locked: bool


class PingFrame(TypedDict):
    type: Literal["ping"]


class PongFrame(TypedDict):
    type: Literal["pong"]


class ErrorFrame(TypedDict, total=False):
    type: Literal["error"]
    code: ErrorCode | str  # the room protocol's codes; any other service's refusal keeps its own
    detail: str
    nonce: str | None
    retry_after: float


ServerFrame = (
    HelloFrame
    | MessageFrame
    | ReplyFrame
    | MessageDeltaFrame
    | MessageReasoningFrame
    | MessageToolCallFrame
    | MessageDoneFrame
    | GapFrame
    | SyncedFrame
    | PresenceFrame
    | TypingFrame
    | MessageDeletedFrame
    | MessageRestoredFrame
    | MessageEditedFrame
    | ReactionsFrame
    | ReadFrame
    | NoticeFrame
    | RoomLockedFrame
    | PingFrame
    | PongFrame
    | ErrorFrame
)


# The frames that change a room's state: each carries its seq (docs/protocol.md, "Room changes").
ChangeFrame = MessageFrame | MessageEditedFrame | MessageDeletedFrame | MessageRestoredFrame | ReactionsFrame | MessageDoneFrame

# What only a streaming reply's encoded message frame contains: a key and value outside
# any string (inside one, JSON escapes the quotes), so a plain substring test is exact.
_STREAMING_MARK = '"streaming":true'


def is_streaming_reply(text: str) -> bool:
    """Whether an encoded ``message`` frame is an assistant's reply still streaming."""
    return _STREAMING_MARK in text


def encode(frame: ServerFrame) -> str:
    """Compact JSON, UTF-8 kept as is (smaller than \\u escapes)."""
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def decode_frame(text: str) -> dict[str, Any]:
    """A frame ``encode`` made, as a dict again (to amend one before sending it on)."""
    frame: dict[str, Any] = json.loads(text)
    return frame


def iso(moment: datetime) -> str:
    # isoformat of an aware UTC datetime ends in +00:00: the explicit offset clients rely on.
    return moment.astimezone(UTC).isoformat()


def message_frame(
    *,
    id: int,
    room: str,
    user: str,
    content: str,
    created_at: datetime,
    nonce: str | None,
    seq: int,
    reply_to: int | None = None,
    edited_at: datetime | None = None,
    reactions: Reactions | None = None,
    streaming: bool | None = None,
    finish_reason: str | None = None,
) -> MessageFrame:
    """A message's frame; ``streaming`` (True or False) makes it an assistant's reply's
    (ReplyFrame), None an ordinary message's, which has no such field."""
    frame: MessageFrame = {
        "type": "message",
        "id": id,
        "room": room,
        "user": user,
        "content": content,
        "ts": iso(created_at),
        "nonce": nonce or None,
        "reply_to": reply_to,
        "edited_at": iso(edited_at) if edited_at else None,
        "reactions": reactions or {},
        "seq": seq,
    }
    if streaming is not None:
        reply: ReplyFrame = {**frame, "streaming": streaming, "finish_reason": finish_reason or None}
        return reply
    return frame


def restored_frame(message: MessageFrame, *, seq: int) -> MessageRestoredFrame:
    return {**message, "type": "message_restored", "seq": seq}


def error_frame(code: ErrorCode, detail: str, *, nonce: str | None = None, retry_after: float | None = None) -> ErrorFrame:
    frame: ErrorFrame = {"type": "error", "code": code, "detail": detail, "nonce": nonce}
    if retry_after is not None:
        frame["retry_after"] = retry_after
    return frame


# ---- client frames -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SendMessage:
    content: str
    nonce: str | None
    reply_to: int | None = None


@dataclass(frozen=True, slots=True)
class Edit:
    id: int
    content: str
    nonce: str | None


@dataclass(frozen=True, slots=True)
class Delete:
    id: int
    nonce: str | None


@dataclass(frozen=True, slots=True)
class React:
    id: int
    emoji: str
    on: bool
    nonce: str | None


@dataclass(frozen=True, slots=True)
class Read:
    id: int
    nonce: str | None


@dataclass(frozen=True, slots=True)
class Typing:
    is_typing: bool


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop an assistant's reply that is still streaming (docs/protocol.md, "The assistant in a room")."""

    id: int
    nonce: str | None


ClientFrame = SendMessage | Edit | Delete | React | Read | Typing | Ping | Pong | Stop

# The largest id a database integer column holds (core.http.MAX_ID).
MAX_ID = 2**63 - 1


# The kind of refusal each code is; REST answers with the kind's status (core.errors).
# Content that does not fit is "invalid" (400, too_long included), as the contract says.
_KINDS: dict[ErrorCode, Kind] = {
    "bad_json": "invalid",
    "bad_frame": "invalid",
    "empty": "invalid",
    "too_long": "invalid",
    "rate_limited": "rate_limited",
    "muted": "forbidden",
    "room_locked": "locked",
    "unavailable": "unavailable",
    "not_found": "not_found",
    "forbidden": "forbidden",
    "edit_window_passed": "forbidden",
    "bad_emoji": "invalid",
    "banned": "forbidden",
    "busy": "rate_limited",
}


class ChatError(DomainError):
    """A frame or message that cannot be accepted: an ``error`` frame over WebSocket
    (``frame``, which echoes the nonce), a JSON error over REST (by its kind). Raised by
    the parser and by chat.services.messages."""

    def __init__(self, code: ErrorCode, detail: str, *, nonce: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(code, detail, kind=_KINDS[code], retry_after=retry_after)
        self.code: ErrorCode = code
        self.nonce = nonce

    def frame(self) -> ErrorFrame:
        return error_frame(self.code, self.detail, nonce=self.nonce, retry_after=self.retry_after)


def refusal_frame(error: DomainError, *, nonce: str | None = None) -> ErrorFrame:
    """The ``error`` frame for any service's refusal: a ChatError's own (it echoes the
    nonce); another DomainError's code, detail and retry_after. ``nonce`` is the refused
    frame's, for refusals that do not carry one."""
    frame: ErrorFrame
    if isinstance(error, ChatError):
        frame = error.frame()
        if frame["nonce"] is None:
            frame["nonce"] = nonce
        return frame
    frame = {"type": "error", "code": error.code, "detail": error.detail, "nonce": nonce}
    if error.retry_after is not None:
        frame["retry_after"] = error.retry_after
    return frame


def clean_content(content: object, *, nonce: str | None = None) -> str:
    """Trim and check message content, shared by WebSocket and REST."""
    if not isinstance(content, str):
        raise ChatError("bad_frame", "content must be a string", nonce=nonce)
    if not is_storable_text(content):
        raise ChatError("bad_frame", "content must be Unicode text without NUL or lone surrogates", nonce=nonce)
    content = content.strip()
    if not content:
        raise ChatError("empty", "content is empty", nonce=nonce)
    if len(content) > MAX_CONTENT_CHARS:
        raise ChatError("too_long", f"content is longer than {MAX_CONTENT_CHARS} characters", nonce=nonce)
    return content


_CHANGING = frozenset({"message", "edit", "delete", "react", "read", "stop"})


def _message_id(value: object, name: str, nonce: str | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise ChatError("bad_frame", f"{name} must be a message id (a positive integer)", nonce=nonce)
    return value


def parse_client_frame(text: str) -> ClientFrame:
    """Parse one text frame; raise ChatError with the contract's code when it is bad."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ChatError("bad_json", "frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise ChatError("bad_frame", "frame must be a JSON object")
    raw_nonce = data.get("nonce")
    valid_nonce = isinstance(raw_nonce, str) and len(raw_nonce) <= MAX_NONCE_CHARS and is_storable_text(raw_nonce)
    nonce = raw_nonce if valid_nonce else None  # an invalid nonce is never echoed: it may not even encode
    kind = data.get("type")
    if isinstance(kind, str) and kind in _CHANGING and raw_nonce is not None and nonce is None:
        # Frames that can be refused echo their nonce; one that cannot be echoed is refused.
        raise ChatError("bad_frame", f"nonce must be a string of at most {MAX_NONCE_CHARS} characters")
    if kind == "message":
        if "content" not in data:
            raise ChatError("bad_frame", "message frame needs content", nonce=nonce)
        reply_to = data.get("reply_to")
        reply_to = None if reply_to is None else _message_id(reply_to, "reply_to", nonce)
        return SendMessage(content=clean_content(data["content"], nonce=nonce), nonce=nonce, reply_to=reply_to)
    if kind == "edit":
        if "content" not in data:
            raise ChatError("bad_frame", "edit frame needs content", nonce=nonce)
        message_id = _message_id(data.get("id"), "id", nonce)
        return Edit(id=message_id, content=clean_content(data["content"], nonce=nonce), nonce=nonce)
    if kind == "delete":
        return Delete(id=_message_id(data.get("id"), "id", nonce), nonce=nonce)
    if kind == "react":
        message_id = _message_id(data.get("id"), "id", nonce)
        emoji, on = data.get("emoji"), data.get("on", True)
        if not isinstance(emoji, str) or not isinstance(on, bool):
            raise ChatError("bad_frame", "react needs an emoji (a string) and on (true or false)", nonce=nonce)
        return React(id=message_id, emoji=emoji, on=on, nonce=nonce)
    if kind == "read":
        return Read(id=_message_id(data.get("id"), "id", nonce), nonce=nonce)
    if kind == "typing":
        is_typing = data.get("is_typing")
        if not isinstance(is_typing, bool):
            raise ChatError("bad_frame", "is_typing must be true or false", nonce=nonce)
        return Typing(is_typing=is_typing)
    if kind == "stop":
        return Stop(id=_message_id(data.get("id"), "id", nonce), nonce=nonce)
    if kind == "ping":
        return Ping()
    if kind == "pong":
        return Pong()
    raise ChatError("bad_frame", "unknown frame type", nonce=nonce)
