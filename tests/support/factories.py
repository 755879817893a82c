"""Small builders for test data (plain functions, no factory library)."""

from __future__ import annotations

from django.contrib.auth.models import User

from accounts.services import token_create
from chat.models import Message, Room, RoomChange


def make_user(username: str = "alice", *, staff: bool = False) -> User:
    return User.objects.create_user(username=username, password="pw-for-tests-only", is_staff=staff)


def make_token(user: User) -> str:
    return token_create(user=user)[1]


def make_room(slug: str = "lobby", title: str = "Lobby") -> Room:
    return Room.objects.create(slug=slug, title=title)


def make_messages(room: Room, user: User, count: int) -> list[Message]:
    """Many messages at once, keeping the room's last-message pointer and its change log
    (a ``created`` change each, numbered on from the room's seq) right."""
    room.refresh_from_db(fields=["seq"])
    Message.objects.bulk_create(Message(room=room, user=user, content=f"m{i}") for i in range(count))
    messages = list(Message.objects.filter(room=room).order_by("pk"))
    new = messages[-count:]
    RoomChange.objects.bulk_create(
        RoomChange(room=room, seq=room.seq + number, message=message, kind=RoomChange.Kind.CREATED)
        for number, message in enumerate(new, 1)
    )
    Room.objects.filter(pk=room.pk).update(last_message_id=messages[-1].pk, seq=room.seq + count)
    room.seq += count
    return messages
