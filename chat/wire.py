"""Room events between workers: each kind encoded and decoded side by side.

They travel as raw texts on the channel layer's groups (core.layer's fast path): a
room's events on ``room.<slug>``, a user's on ``user.<id>``, so the one subscription a
worker holds per group carries both these and the messages of Channels' group_send.
A text is one or more events, each a header line and a line of frame JSON (compact JSON
never contains a raw newline); only changes (new messages, reactions) are batched like that:

    c <seq> <new message id or 0>   a change of the room (docs/protocol.md, "Room changes"):
                                    its frame carries the same seq; seqs are dense, so the
                                    hub sees a gap as a jump; the id is that of the message
                                    a ``created`` change makes, 0 for the other kinds
    f                               a frame for everyone in the room (notice, room_locked)
    t <user id>                     a typing frame (not sent back to that user's connections)
    p <version>                     a presence frame (older versions are dropped)
    k <close code> <room id or 0>   close the user's connections (to that room, or all)
    r <room id> <connection key>    a ``read`` frame for the user's connections to that room
                                    but the one with that key (``-``: all of them)

The frame JSON is encoded once, by the publisher, and written as it is to every socket.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.layer import user_group as user_group  # the user's group is core's; re-exported beside the room's

logger = logging.getLogger(__name__)


def room_group(slug: str) -> str:
    """The room's group (docs/protocol.md, "Channels integration")."""
    return f"room.{slug}"


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    new_id: int  # the id of the message a "created" change makes; 0 for the other kinds
    text: str


@dataclass(frozen=True, slots=True)
class RoomFrame:
    text: str


@dataclass(frozen=True, slots=True)
class Typing:
    user_id: int
    text: str


@dataclass(frozen=True, slots=True)
class Presence:
    version: int
    text: str


@dataclass(frozen=True, slots=True)
class CloseConnections:
    code: int
    room_id: int  # 0: every room


@dataclass(frozen=True, slots=True)
class ReadMarker:
    room_id: int
    except_key: str  # the connection that moved it ("": none)
    text: str


WireEvent = Change | RoomFrame | Typing | Presence | CloseConnections | ReadMarker


def encode_change(*, seq: int, new_id: int, text: str) -> str:
    return f"c {seq} {new_id}\n{text}"


def encode_many(events: list[str]) -> str:
    """Several events in one text, in order."""
    return "\n".join(events)


def encode_frame(*, text: str) -> str:
    return f"f\n{text}"


def encode_typing(*, user_id: int, text: str) -> str:
    return f"t {user_id}\n{text}"


def encode_presence(*, version: int, text: str) -> str:
    return f"p {version}\n{text}"


def encode_close(*, code: int, room_id: int | None) -> str:
    return f"k {code} {room_id or 0}\n"


def encode_read(*, room_id: int, except_key: str | None, text: str) -> str:
    return f"r {room_id} {except_key or '-'}\n{text}"


def decode(data: str) -> list[WireEvent]:
    """The events of a text; a malformed event is logged and skipped, never raised."""
    lines = data.split("\n")
    decoded: list[WireEvent] = []
    for position in range(0, len(lines) - 1, 2):
        header, text = lines[position], lines[position + 1]
        kind, *args = header.split(" ")
        try:
            if kind == "c":
                decoded.append(Change(int(args[0]), int(args[1]), text))
            elif kind == "f":
                decoded.append(RoomFrame(text))
            elif kind == "t":
                decoded.append(Typing(int(args[0]), text))
            elif kind == "p":
                decoded.append(Presence(int(args[0]), text))
            elif kind == "k":
                decoded.append(CloseConnections(int(args[0]), int(args[1])))
            elif kind == "r":
                decoded.append(ReadMarker(int(args[0]), "" if args[1] == "-" else args[1], text))
            else:
                raise ValueError(f"unknown kind {kind!r}")
        except (ValueError, IndexError):
            logger.warning("skipped a malformed room event %r", header)
    return decoded
