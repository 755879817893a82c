"""The one place that publishes room events to the other workers.

Called from chat's services and its hub (presence). Events about database writes are
published after the transaction commits (``transaction.on_commit``), so nobody ever
receives a message that is not in the database. Frames are encoded here, once, and
travel as raw texts on the room's and the user's channel-layer groups (chat.wire has
the format), which every worker's hub writes as they are to its sockets.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from django.db import transaction

from chat import protocol, wire
from core.layer import RealtimeChannelLayer


def _on_commit(group: str, text: str) -> None:
    transaction.on_commit(partial(RealtimeChannelLayer.publish, group, text))


@dataclass(frozen=True, slots=True)
class CreatedMessage:
    room_id: int
    room_slug: str
    message_id: int
    previous_id: int  # the room's newest message before this one (0: none)
    frame: protocol.MessageFrame


def messages_created_on_commit(*, messages: list[CreatedMessage]) -> None:
    """Broadcast new messages once their transaction commits: one publish per room
    (its messages in id order, one event after the other), one round trip in all."""
    per_room: dict[str, list[str]] = {}
    for m in messages:
        text = wire.encode_message(id=m.message_id, previous_id=m.previous_id, text=protocol.encode(m.frame))
        per_room.setdefault(m.room_slug, []).append(text)
    batch = [(wire.room_group(slug), wire.encode_many(texts)) for slug, texts in per_room.items()]
    transaction.on_commit(partial(RealtimeChannelLayer.publish_many, batch))


def room_frame_on_commit(*, room_slug: str, frame: protocol.ServerFrame) -> None:
    _on_commit(wire.room_group(room_slug), wire.encode_frame(text=protocol.encode(frame)))


def user_close_on_commit(*, user_id: int, code: int, room_id: int | None) -> None:
    _on_commit(wire.user_group(user_id), wire.encode_close(code=code, room_id=room_id))


async def typing_publish(*, room_slug: str, user_id: int, frame: protocol.TypingFrame) -> None:
    await RealtimeChannelLayer.apublish(
        wire.room_group(room_slug), wire.encode_typing(user_id=user_id, text=protocol.encode(frame))
    )


async def presence_publish(*, room_slug: str, version: int, frame: protocol.PresenceFrame) -> None:
    await RealtimeChannelLayer.apublish(
        wire.room_group(room_slug), wire.encode_presence(version=version, text=protocol.encode(frame))
    )
