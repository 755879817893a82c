"""The one place that publishes chat events to the other workers.

Called from chat.services only. Events about database writes are published after the
transaction commits (``transaction.on_commit``), so nobody ever receives a message that
is not in the database. Frames are encoded here, once, and forwarded as text by every
worker's hub.

Wire format between workers: one header line, a newline, then the frame's JSON text
(compact JSON never contains a raw newline). A payload may carry several events one
after the other; only ``m`` events are ever batched like that.
    m <id> <previous id>   a new message (the hub checks the chain for gaps)
    f                      a frame for everyone in the room (notice, message_deleted)
    t <user id>            a typing frame (not sent back to that user's connections)
    p <version>            a presence frame (older versions are dropped)
    k <close code> <room id or 0>   close the user's connections (to that room, or all)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from django.db import transaction

from chat import protocol
from project import broker


def room_topic(room_id: int) -> str:
    return f"room:{room_id}"


def user_topic(user_id: int) -> str:
    return f"user:{user_id}"


def _on_commit(topic: str, data: str) -> None:
    transaction.on_commit(partial(broker.publish, topic, data))


@dataclass(frozen=True, slots=True)
class CreatedMessage:
    room_id: int
    message_id: int
    previous_id: int  # the room's newest message before this one (0: none)
    frame: protocol.MessageFrame


def messages_created_on_commit(*, messages: list[CreatedMessage]) -> None:
    """Broadcast new messages once their transaction commits: one publish per room
    (its messages in id order, one event after the other), one round trip in all."""
    per_room: dict[int, list[str]] = {}
    for m in messages:
        per_room.setdefault(m.room_id, []).append(f"m {m.message_id} {m.previous_id}\n{protocol.encode(m.frame)}")
    batch = [(room_topic(room_id), "\n".join(events)) for room_id, events in per_room.items()]
    transaction.on_commit(partial(broker.publish_many, batch))


def room_frame_on_commit(*, room_id: int, frame: protocol.ServerFrame) -> None:
    _on_commit(room_topic(room_id), f"f\n{protocol.encode(frame)}")


def user_close_on_commit(*, user_id: int, code: int, room_id: int | None) -> None:
    _on_commit(user_topic(user_id), f"k {code} {room_id or 0}\n")


async def typing_publish(*, room_id: int, user_id: int, frame: protocol.TypingFrame) -> None:
    await broker.apublish(room_topic(room_id), f"t {user_id}\n{protocol.encode(frame)}")


async def presence_publish(*, room_id: int, version: int, frame: protocol.PresenceFrame) -> None:
    await broker.apublish(room_topic(room_id), f"p {version}\n{protocol.encode(frame)}")
