from datetime import timedelta

import pytest
from django.utils import timezone

from chat import selectors
from chat.models import Ban, Message
from chat.services.moderation import ban_create, message_remove
from tests.support.factories import make_messages, make_room, make_user

pytestmark = pytest.mark.django_db


def test_backlog_without_last_id_is_the_newest_50_oldest_first():
    room, user = make_room(), make_user()
    messages = make_messages(room, user, 60)
    missed, frames = selectors.message_backlog(room_id=room.pk, room_slug=room.slug, last_id=None)
    assert missed == 0
    assert [f["id"] for f in frames] == [m.pk for m in messages[-50:]]


def test_backlog_after_last_id_counts_what_it_leaves_out():
    room, user = make_room(), make_user()
    messages = make_messages(room, user, 1005)
    missed, frames = selectors.message_backlog(room_id=room.pk, room_slug=room.slug, last_id=messages[1].pk)
    assert missed == 1003 - 1000
    assert [f["id"] for f in frames] == [m.pk for m in messages[-1000:]]
    missed, frames = selectors.message_backlog(room_id=room.pk, room_slug=room.slug, last_id=messages[-3].pk)
    assert (missed, [f["id"] for f in frames]) == (0, [m.pk for m in messages[-2:]])


def test_removed_messages_are_never_replayed():
    room, user = make_room(), make_user()
    messages = make_messages(room, user, 3)
    message_remove(message=messages[1], removed_by=user)
    expected = [messages[0].pk, messages[2].pk]
    assert [f["id"] for f in selectors.message_backlog(room_id=room.pk, room_slug=room.slug, last_id=None)[1]] == expected
    assert [f["id"] for f in selectors.message_backlog(room_id=room.pk, room_slug=room.slug, last_id=0)[1]] == expected
    assert [f["id"] for f in selectors.message_list_after(room=room, after=0, limit=10)] == expected
    replayed = selectors.change_replay(room_id=room.pk, room_slug=room.slug, after=0).changes
    assert [c.frame["id"] for c in replayed if c.frame["type"] == "message"] == expected


def test_message_frames_carry_an_explicit_utc_offset():
    room, user = make_room(), make_user()
    make_messages(room, user, 1)
    [frame] = selectors.message_list_after(room=room, after=0, limit=1)
    assert frame["ts"].endswith("+00:00")
    assert frame["nonce"] is None and frame["user"] == "alice" and frame["room"] == "lobby"


def test_bans_apply_while_active_and_site_wide_bans_cover_every_room():
    room, other, user = make_room(), make_room("other"), make_user()
    assert not selectors.user_is_banned(user_id=user.pk, room_id=room.pk)
    ban = ban_create(user=user, room=room, minutes=10)
    assert selectors.user_is_banned(user_id=user.pk, room_id=room.pk)
    assert not selectors.user_is_banned(user_id=user.pk, room_id=other.pk)
    Ban.objects.filter(pk=ban.pk).update(ends_at=timezone.now() - timedelta(seconds=1))
    assert not selectors.user_is_banned(user_id=user.pk, room_id=room.pk), "an expired ban no longer applies"
    ban_create(user=user)
    assert selectors.user_is_banned(user_id=user.pk, room_id=other.pk)
    assert Message.objects.count() == 0
