"""The room change log's one writer (docs/protocol.md, "Room changes").

Every change to a message (created, edited, removed, restored, its reactions) takes the
room's next ``seq`` inside the transaction that makes the change: the UPDATE holds the
room's row lock until commit on PostgreSQL (SQLite serialises writers), so seqs are
dense and commit order is seq order. The message writer (chat.services.messages) takes
its seqs with its own SQL (chat.message_store); every other change comes through here.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import F

from chat.models import Room, RoomChange


@dataclass(frozen=True, slots=True)
class RoomTurn:
    """The room as the change sees it, under its row lock."""

    seq: int  # the seq this change gets
    locked: bool


def room_next_seq(*, room_id: int) -> RoomTurn:
    """Take the room's next seq (and its row lock, until commit). Inside a transaction."""
    assert transaction.get_connection().in_atomic_block, "a seq is taken in the change's own transaction"
    Room.objects.filter(pk=room_id).update(seq=F("seq") + 1)
    seq, locked = Room.objects.values_list("seq", "locked").get(pk=room_id)
    return RoomTurn(seq=seq, locked=locked)


def change_record(*, room_id: int, seq: int, message_id: int, kind: RoomChange.Kind) -> None:
    RoomChange.objects.create(room_id=room_id, seq=seq, message_id=message_id, kind=kind)
