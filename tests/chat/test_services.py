import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from chat import services
from chat.models import Message, Room
from chat.protocol import ChatError
from core import broker
from tests.support.factories import make_room, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(monkeypatch):
    """Everything the services publish, as (topic, data) pairs."""
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(broker, "publish", lambda topic, data: sent.append((topic, data)))
    monkeypatch.setattr(broker, "publish_many", sent.extend)
    return sent


def test_message_create_stores_then_publishes_after_commit(django_capture_on_commit_callbacks, published):
    room, user = make_room(), make_user()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        message = services.message_create(room=room, user=user, content="  hello  ", nonce="n1")
    assert published == [], "nothing may be published before the transaction commits"
    assert Message.objects.get(pk=message.pk).content == "hello"
    for callback in callbacks:
        callback()
    [(topic, data)] = published
    assert topic == f"room.{room.slug}"
    assert data.startswith(f"m {message.pk} 0\n")
    assert '"nonce":"n1"' in data and '"content":"hello"' in data


def test_each_broadcast_names_the_previous_message(django_capture_on_commit_callbacks, published):
    room, user = make_room(), make_user()
    with django_capture_on_commit_callbacks(execute=True):
        first = services.message_create(room=room, user=user, content="one")
    with django_capture_on_commit_callbacks(execute=True):
        second = services.message_create(room=room, user=user, content="two")
    assert published[1][1].startswith(f"m {second.pk} {first.pk}\n")
    assert Room.objects.get(pk=room.pk).last_message_id == second.pk


@pytest.mark.parametrize(("content", "code"), [("", "empty"), ("  ", "empty"), ("x" * 4001, "too_long"), (7, "bad_frame")])
def test_message_create_rejects_bad_content(content, code):
    with pytest.raises(ChatError) as raised:
        services.message_create(room=make_room(), user=make_user(), content=content)
    assert raised.value.code == code
    assert Message.objects.count() == 0


def test_locked_room_refuses_messages():
    room = make_room()
    Room.objects.filter(pk=room.pk).update(locked=True)
    with pytest.raises(ChatError) as raised:
        services.message_create(room=room, user=make_user(), content="hi")
    assert raised.value.code == "room_locked"


def test_muted_user_is_refused_in_that_room_only():
    room, other, user = make_room(), make_room("other"), make_user()
    services.mute_create(user=user, room=room, minutes=5)
    with pytest.raises(ChatError) as raised:
        services.message_create(room=room, user=user, content="hi")
    assert raised.value.code == "muted"
    services.message_create(room=other, user=user, content="hi")


@override_settings(CHAT_RATE_LIMIT=3, CHAT_RATE_WINDOW=60)
def test_rate_limit_refuses_past_the_limit_with_retry_after():
    room, user = make_room(), make_user()
    for i in range(3):
        services.message_create(room=room, user=user, content=f"m{i}")
    with pytest.raises(ChatError) as raised:
        services.message_create(room=room, user=user, content="one too many")
    assert raised.value.code == "rate_limited"
    assert raised.value.retry_after is not None and 0 < raised.value.retry_after <= 60
    assert Message.objects.count() == 3
    services.message_create(room=room, user=make_user("bob"), content="others are not limited")


def test_message_remove_is_soft_and_published_once(django_capture_on_commit_callbacks, published):
    room, user = make_room(), make_user()
    message = services.message_create(room=room, user=user, content="oops")
    with django_capture_on_commit_callbacks(execute=True):
        services.message_remove(message=message, removed_by=user)
        services.message_remove(message=message, removed_by=user)
    message.refresh_from_db()
    assert message.removed_at is not None and message.removed_by == user
    assert [data for _, data in published] == [f'f\n{{"type":"message_deleted","id":{message.pk}}}']


def test_room_create_validates_and_refuses_duplicates():
    user = make_user()
    room = services.room_create(slug="my-room", title=" Mine ", created_by=user)
    assert room.title == "Mine"
    with pytest.raises(services.RoomExistsError):
        services.room_create(slug="my-room", title="again", created_by=user)
    for slug in ["", "UPPER", "a" * 51, "sp ace", "ü"]:
        with pytest.raises(ValidationError):
            services.room_create(slug=slug, title="t", created_by=user)


def test_ban_closes_the_users_connections_after_commit(django_capture_on_commit_callbacks, published):
    room, user = make_room(), make_user()
    with django_capture_on_commit_callbacks(execute=True):
        services.ban_create(user=user, room=room, minutes=1)
    # (The user's moderation notification is published too: tests/chat/test_moderation_services.py.)
    closes = [(topic, data) for topic, data in published if topic.startswith("user.")]
    assert closes == [(f"user.{user.pk}", f"k 4003 {room.pk}\n")]
