from datetime import timedelta

import pytest
from django.utils import timezone

from chat import selectors
from chat.models import Ban, Message, Mute
from chat.services.messages import message_create, message_edit
from chat.services.moderation import ban_create, message_remove, message_restore
from chat.services.reactions import reaction_set
from chat.services.rooms import read_marker_move
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


# ---- the change log (docs/protocol.md, "Room changes") -----------------------------------------
THUMBS = "\U0001f44d"


def replayed(room, after, **kwargs):
    replay = selectors.change_replay(room_id=room.pk, room_slug=room.slug, after=after, **kwargs)
    return replay, [(c.frame["type"], c.frame["id"], c.seq, c.new_id) for c in replay.changes]


def test_a_replay_collapses_each_kind_of_change_to_its_newest_seq_in_seq_order():
    room, author, staff = make_room(), make_user(), make_user("mod", staff=True)
    kept, edited, removed, restored = make_messages(room, author, 4)  # seqs 1-4
    message_edit(room=room, user=author, message_id=edited.pk, content="first edit")  # 5
    reaction_set(room=room, user=staff, message_id=kept.pk, emoji=THUMBS, on=True)  # 6
    message_remove(message=removed, removed_by=staff)  # 7
    message_remove(message=restored, removed_by=staff)  # 8
    message_edit(room=room, user=author, message_id=edited.pk, content="second edit")  # 9
    message_restore(message=restored, restored_by=staff)  # 10
    new = message_create(room=room, user=author, content="new")  # 11
    message_edit(room=room, user=author, message_id=new.pk, content="new, edited")  # 12
    replay, frames = replayed(room, 4)
    assert replay.seq == 12 and replay.missed == 0
    assert frames == [
        ("reactions", kept.pk, 6, 0),
        ("message_deleted", removed.pk, 7, 0),
        ("message_edited", edited.pk, 9, 0),
        ("message_restored", restored.pk, 10, 0),
        ("message", new.pk, 11, new.pk),
        ("message_edited", new.pk, 12, 0),
    ]
    frame = {(c.frame["type"], c.frame["id"]): c.frame for c in replay.changes}
    assert frame["message_edited", edited.pk]["content"] == "second edit"
    assert frame["reactions", kept.pk]["reactions"] == {THUMBS: ["mod"]}
    assert frame["message", new.pk]["content"] == "new, edited" and frame["message", new.pk]["seq"] == 11, "current state"
    assert "content" not in frame["message_deleted", removed.pk], "a removed message's text is never replayed"
    _, upto = replayed(room, 4, upto=8)
    assert upto == [
        ("message_edited", edited.pk, 5, 0),
        ("reactions", kept.pk, 6, 0),
        ("message_deleted", removed.pk, 7, 0),
        ("message_restored", restored.pk, 8, 0),
    ], "up to a seq: the changes in range only (as the messages are now)"


def test_a_replay_past_the_limit_is_a_gap_with_the_count():
    room, author = make_room(), make_user()
    make_messages(room, author, 12)
    replay, frames = replayed(room, 1, limit=10)
    assert (replay.missed, frames, replay.seq) == (11, [], 12)
    replay, frames = replayed(room, 2, limit=10)
    assert replay.missed == 0 and len(frames) == 10 and replay.seq == 12
    replay, frames = replayed(room, 50)
    assert (frames, replay.seq) == ([], 12), "a seq from the future: nothing, and the room's real seq"


def test_unread_counts_others_visible_messages_after_the_marker():
    room, other, reader, bob = make_room(), make_room("other"), make_user(), make_user("bob")
    first, second, third = make_messages(room, bob, 3)
    make_messages(room, reader, 2)  # one's own messages are never unread
    make_messages(other, bob, 1)
    assert selectors.room_unread_counts(user_id=reader.pk, room_ids=[room.pk, other.pk]) == {room.pk: 3, other.pk: 1}
    read_marker_move(room=room, user=reader, message_id=first.pk)
    message_remove(message=third, removed_by=bob)
    assert selectors.room_unread_counts(user_id=reader.pk, room_ids=[room.pk, other.pk]) == {room.pk: 1, other.pk: 1}
    assert selectors.read_marker_get(user_id=reader.pk, room_id=room.pk) == first.pk
    assert selectors.read_marker_get(user_id=reader.pk, room_id=other.pk) == 0
    assert second.pk > first.pk


def test_older_pages_before_an_id_ascend_and_skip_removed_messages():
    room, user = make_room(), make_user()
    messages = make_messages(room, user, 10)
    message_remove(message=messages[6], removed_by=user)
    page = selectors.message_list_before(room=room, before=messages[8].pk, limit=3)
    assert [f["id"] for f in page] == [messages[4].pk, messages[5].pk, messages[7].pk]
    assert [f["id"] for f in selectors.message_list_before(room=room, before=messages[2].pk, limit=200)] == [
        messages[0].pk,
        messages[1].pk,
    ]
    assert [f["seq"] for f in page] == [5, 6, 8], "each message frame carries the seq of its creation"


def test_message_frames_carry_replies_edits_and_reactions():
    room, user = make_room(), make_user()
    first = make_messages(room, user, 1)[0]
    reply = message_create(room=room, user=user, content="re", reply_to=first.pk)
    message_edit(room=room, user=user, message_id=first.pk, content="edited")
    reaction_set(room=room, user=user, message_id=reply.pk, emoji=THUMBS, on=True)
    one, two = selectors.message_list_after(room=room, after=0, limit=10)
    assert (one["content"], one["reply_to"], one["reactions"]) == ("edited", None, {})
    assert one["edited_at"] is not None and one["edited_at"].endswith("+00:00")
    assert (two["reply_to"], two["edited_at"], two["reactions"], two["seq"]) == (first.pk, None, {THUMBS: ["alice"]}, 2)


def test_mutes_apply_while_active_and_site_wide_mutes_cover_every_room():
    room, other, user = make_room(), make_room("other"), make_user()
    assert not selectors.user_is_muted(user_id=user.pk, room_id=room.pk)
    mute = Mute.objects.create(user=user, room=room, ends_at=timezone.now() + timedelta(minutes=10))
    assert selectors.user_is_muted(user_id=user.pk, room_id=room.pk)
    assert not selectors.user_is_muted(user_id=user.pk, room_id=other.pk)
    Mute.objects.filter(pk=mute.pk).update(lifted_at=timezone.now())
    assert not selectors.user_is_muted(user_id=user.pk, room_id=room.pk), "a lifted mute no longer applies"
    Mute.objects.create(user=user)
    assert selectors.user_is_muted(user_id=user.pk, room_id=other.pk)
    assert not selectors.user_is_banned_site_wide(user_id=user.pk), "a mute is not a ban"
    ban = ban_create(user=user, room=room)
    assert not selectors.user_is_banned_site_wide(user_id=user.pk), "a room's ban is not site-wide"
    Ban.objects.filter(pk=ban.pk).update(room=None)
    assert selectors.user_is_banned_site_wide(user_id=user.pk)
