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

# A change to a message that exists already (its wire header's new id is 0).
ExistingMessageChange = (
    protocol.MessageEditedFrame
    | protocol.MessageDeletedFrame
    | protocol.MessageRestoredFrame
    | protocol.ReactionsFrame
    | protocol.MessageDoneFrame
)


def _on_commit(group: str, text: str) -> None:
    transaction.on_commit(partial(RealtimeChannelLayer.publish, group, text))


@dataclass(frozen=True, slots=True)
class CreatedMessage:
    room_id: int
    room_slug: str
    message_id: int
    frame: protocol.MessageFrame  # carries the seq of its creation


def messages_created_on_commit(*, messages: list[CreatedMessage]) -> None:
    """Broadcast new messages once their transaction commits: one publish per room
    (its messages in seq order, one event after the other), one round trip in all."""
    per_room: dict[str, list[str]] = {}
    for m in messages:
        text = wire.encode_change(seq=m.frame["seq"], new_id=m.message_id, text=protocol.encode(m.frame))
        per_room.setdefault(m.room_slug, []).append(text)
    batch = [(wire.room_group(slug), wire.encode_many(texts)) for slug, texts in per_room.items()]
    transaction.on_commit(partial(RealtimeChannelLayer.publish_many, batch))


def change_on_commit(
    *,
    room_slug: str,
    frame: ExistingMessageChange,
) -> None:
    """Broadcast a change to an existing message (its frame carries its seq) after commit."""
    changes_on_commit(changes=[(room_slug, frame)])


def changes_on_commit(
    *,
    changes: list[tuple[str, ExistingMessageChange]],
) -> None:
    """Broadcast several changes (room slug, frame with its seq; in seq order within a room)
    after commit: one publish per room, one round trip in all, as for new messages."""
    per_room: dict[str, list[str]] = {}
    for room_slug, frame in changes:
        per_room.setdefault(room_slug, []).append(wire.encode_change(seq=frame["seq"], new_id=0, text=protocol.encode(frame)))
    batch = [(wire.room_group(slug), wire.encode_many(texts)) for slug, texts in per_room.items()]
    transaction.on_commit(partial(RealtimeChannelLayer.publish_many, batch))


def room_frame_on_commit(*, room_slug: str, frame: protocol.ServerFrame) -> None:
    """A frame that changes no message (a notice, a lock), for everyone in the room now."""
    _on_commit(wire.room_group(room_slug), wire.encode_frame(text=protocol.encode(frame)))


def read_on_commit(*, user_id: int, room_id: int, except_key: str | None, frame: protocol.ReadFrame) -> None:
    """The user's read marker moved: tell their connections to the room, on every worker,
    but the one that moved it (``except_key``; None: all of them)."""
    _on_commit(wire.user_group(user_id), wire.encode_read(room_id=room_id, except_key=except_key, text=protocol.encode(frame)))


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
