"""Message services: what a message write stores and publishes, the refusals it answers
with (ChatError), and the room's notices."""

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from chat.models import Message, ModerationAction, Room, RoomChange
from chat.protocol import ChatError
from chat.services.messages import message_create, room_notice
from chat.services.moderation import mute_create
from tests.support.factories import make_room, make_user

pytestmark = pytest.mark.django_db


def test_message_create_stores_then_publishes_after_commit(django_capture_on_commit_callbacks, published):
    room, user = make_room(), make_user()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        message = message_create(room=room, user=user, content="  hello  ", nonce="n1")
    assert published == [], "nothing may be published before the transaction commits"
    assert Message.objects.get(pk=message.pk).content == "hello"
    for callback in callbacks:
        callback()
    [(topic, data)] = published
    assert topic == f"room.{room.slug}"
    assert data.startswith(f"c 1 {message.pk}\n"), "the room's first change, creating this message"
    assert '"nonce":"n1"' in data and '"content":"hello"' in data


def test_each_broadcast_carries_the_rooms_next_seq(django_capture_on_commit_callbacks, published):
    room, other, user = make_room(), make_room("other"), make_user()
    with django_capture_on_commit_callbacks(execute=True):
        first = message_create(room=room, user=user, content="one")
    with django_capture_on_commit_callbacks(execute=True):
        message_create(room=other, user=user, content="elsewhere")
    with django_capture_on_commit_callbacks(execute=True):
        second = message_create(room=room, user=user, content="two")
    assert published[0][1].startswith(f"c 1 {first.pk}\n") and published[2][1].startswith(f"c 2 {second.pk}\n")
    assert published[1][1].startswith("c 1 "), "each room counts its own changes"
    assert Room.objects.get(pk=room.pk).last_message_id == second.pk and Room.objects.get(pk=room.pk).seq == 2
    assert list(RoomChange.objects.filter(room=room).values_list("seq", "message_id", "kind")) == [
        (1, first.pk, "created"),
        (2, second.pk, "created"),
    ]


@pytest.mark.parametrize(("content", "code"), [("", "empty"), ("  ", "empty"), ("x" * 4001, "too_long"), (7, "bad_frame")])
def test_message_create_rejects_bad_content(content, code):
    with pytest.raises(ChatError) as raised:
        message_create(room=make_room(), user=make_user(), content=content)
    assert raised.value.code == code
    assert Message.objects.count() == 0


def test_locked_room_refuses_messages():
    room = make_room()
    Room.objects.filter(pk=room.pk).update(locked=True)
    with pytest.raises(ChatError) as raised:
        message_create(room=room, user=make_user(), content="hi")
    assert raised.value.code == "room_locked"


def test_muted_user_is_refused_in_that_room_only():
    room, other, user = make_room(), make_room("other"), make_user()
    mute_create(user=user, room=room, minutes=5)
    with pytest.raises(ChatError) as raised:
        message_create(room=room, user=user, content="hi")
    assert raised.value.code == "muted"
    message_create(room=other, user=user, content="hi")


@override_settings(CHAT_RATE_LIMIT=3, CHAT_RATE_WINDOW=60)
def test_rate_limit_refuses_past_the_limit_with_retry_after():
    room, user = make_room(), make_user()
    for i in range(3):
        message_create(room=room, user=user, content=f"m{i}")
    with pytest.raises(ChatError) as raised:
        message_create(room=room, user=user, content="one too many")
    assert raised.value.code == "rate_limited"
    assert raised.value.retry_after is not None and 0 < raised.value.retry_after <= 60
    assert Message.objects.count() == 3
    message_create(room=room, user=make_user("bob"), content="others are not limited")


# ---- notices ------------------------------------------------------------------------------
def test_a_notice_is_published_after_commit_and_logged(django_capture_on_commit_callbacks, published):
    room, moderator = make_room(), make_user("mod", staff=True)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        room_notice(room=room, content="  Be kind.  ", sent_by=moderator)
    assert published == []
    for callback in callbacks:
        callback()
    assert published == [(f"room.{room.slug}", 'f\n{"type":"notice","content":"Be kind."}')]
    entry = ModerationAction.objects.get()
    assert (entry.action, entry.room, entry.detail) == ("notice", room, {"content": "Be kind."})


@pytest.mark.parametrize("content", ["", "   ", "x" * 4001])
def test_a_bad_notice_is_refused(content, published):
    with pytest.raises(ValidationError):
        room_notice(room=make_room(), content=content)
    assert published == [] and not ModerationAction.objects.exists()
