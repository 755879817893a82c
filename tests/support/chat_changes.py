"""Reading what chat's services did: the room's published events, its change log, a refusal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from chat.models import Room, RoomChange
from chat.protocol import ChatError


def room_events(published: list[tuple[str, str]], room: Room) -> list[str]:
    """What was published to the room's group, in order."""
    return [data for topic, data in published if topic == f"room.{room.slug}"]


def change_log(room: Room) -> list[tuple[int, int, str]]:
    """The room's change log: (seq, message id, kind), in seq order."""
    return list(RoomChange.objects.filter(room=room).values_list("seq", "message_id", "kind"))


def refused(code: str, function: Callable[..., Any], **kwargs: Any) -> ChatError:
    """Call ``function`` and return the ChatError it raised, which must carry ``code``."""
    with pytest.raises(ChatError) as raised:
        function(**kwargs)
    assert raised.value.code == code, raised.value
    return raised.value
