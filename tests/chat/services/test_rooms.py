"""Room services: creating rooms (private rooms, members and direct messages are in
tests/chat/test_private_rooms.py, with their REST and socket sides)."""

import pytest
from django.core.exceptions import ValidationError

from chat.services.rooms import RoomExistsError, room_create
from tests.support.factories import make_user

pytestmark = pytest.mark.django_db


def test_room_create_validates_and_refuses_duplicates():
    user = make_user()
    room = room_create(slug="my-room", title=" Mine ", created_by=user)
    assert room.title == "Mine"
    with pytest.raises(RoomExistsError):
        room_create(slug="my-room", title="again", created_by=user)
    for slug in ["", "UPPER", "a" * 51, "sp ace", "ü"]:
        with pytest.raises(ValidationError):
            room_create(slug=slug, title="t", created_by=user)
