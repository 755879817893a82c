"""Changes to existing messages (docs/protocol.md, "Room changes"): edits, deletions,
restorations, reactions, replies and read markers. What each stores, which seq it takes,
what it publishes after commit, and every refusal (ChatError) with its code."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from chat.models import Message, MessageEdit, ReadMarker, Room
from chat.services.messages import message_create, message_delete, message_edit
from chat.services.moderation import ban_create, message_remove, message_restore, mute_create, room_lock
from chat.services.reactions import reaction_set
from chat.services.rooms import read_marker_move
from tests.support.chat_changes import change_log, refused, room_events
from tests.support.factories import make_messages, make_room, make_user

pytestmark = pytest.mark.django_db
THUMBS, HEART = "\U0001f44d", "\u2764\ufe0f"


# ---- edits --------------------------------------------------------------------------------------
def test_an_edit_keeps_the_old_text_takes_the_next_seq_and_is_published_after_commit(
    django_capture_on_commit_callbacks, published
):
    room, author = make_room(), make_user()
    [message] = make_messages(room, author, 1)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert message_edit(room=room, user=author, message_id=message.pk, content="  better  ") is True
    assert published == [], "nothing before commit"
    for callback in callbacks:
        callback()
    row = Message.objects.get(pk=message.pk)
    assert row.content == "better" and row.edited_at is not None
    assert list(MessageEdit.objects.values_list("message_id", "content_before", "edited_by")) == [(message.pk, "m0", author.pk)]
    assert change_log(room) == [(1, message.pk, "created"), (2, message.pk, "edited")]
    [data] = room_events(published, room)
    assert data.startswith("c 2 0\n") and '"type":"message_edited"' in data and '"content":"better"' in data
    assert message_edit(room=room, user=author, message_id=message.pk, content="better") is False, "the same text: no change"
    assert Room.objects.get(pk=room.pk).seq == 2


def test_staff_edit_any_message_any_time_authors_within_the_window():
    room, author, other, staff = make_room(), make_user(), make_user("bob"), make_user("mod", staff=True)
    [message] = make_messages(room, author, 1)
    refused("forbidden", message_edit, room=room, user=other, message_id=message.pk, content="mine now")
    Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - timedelta(seconds=3601))
    refused("edit_window_passed", message_edit, room=room, user=author, message_id=message.pk, content="late")
    with override_settings(CHAT_EDIT_WINDOW_SECONDS=7200):
        assert message_edit(room=room, user=author, message_id=message.pk, content="in a longer window")
    assert message_edit(room=room, user=staff, message_id=message.pk, content="moderated")
    assert Message.objects.get(pk=message.pk).content == "moderated"


@pytest.mark.parametrize(("content", "code"), [("", "empty"), ("x" * 4001, "too_long"), (7, "bad_frame")])
def test_bad_edits_are_refused_and_change_nothing(content, code):
    room, author = make_room(), make_user()
    [message] = make_messages(room, author, 1)
    refused(code, message_edit, room=room, user=author, message_id=message.pk, content=content)
    assert Message.objects.get(pk=message.pk).content == "m0" and Room.objects.get(pk=room.pk).seq == 1


def test_edits_of_unknown_removed_or_other_rooms_messages_are_not_found():
    room, other_room, author = make_room(), make_room("other"), make_user()
    [message] = make_messages(room, author, 1)
    [elsewhere] = make_messages(other_room, author, 1)
    refused("not_found", message_edit, room=room, user=author, message_id=999999, content="x")
    refused("not_found", message_edit, room=room, user=author, message_id=elsewhere.pk, content="x")
    message_remove(message=message, removed_by=author)
    refused("not_found", message_edit, room=room, user=author, message_id=message.pk, content="x")


def test_muted_banned_locked_and_rate_limited_users_cannot_edit():
    room, author, staff = make_room(), make_user(), make_user("mod", staff=True)
    [message] = make_messages(room, author, 1)
    mute = mute_create(user=author, room=room, minutes=5)
    refused("muted", message_edit, room=room, user=author, message_id=message.pk, content="x")
    mute.lifted_at = timezone.now()
    mute.save()
    ban_create(user=author, room=room, minutes=5)
    refused("banned", message_edit, room=room, user=author, message_id=message.pk, content="x")
    room_lock(room=room, locked=True, locked_by=staff)
    refused("room_locked", message_edit, room=room, user=staff, message_id=message.pk, content="x")
    room_lock(room=room, locked=False, locked_by=staff)
    fresh = make_user("fresh", staff=True)  # the refused edits above used up some of the staff's rate
    with override_settings(CHAT_RATE_LIMIT=1, CHAT_RATE_WINDOW=60):
        message_edit(room=room, user=fresh, message_id=message.pk, content="one")
        error = refused("rate_limited", message_edit, room=room, user=fresh, message_id=message.pk, content="two")
        assert error.retry_after and error.retry_after > 0
    assert Room.objects.get(pk=room.pk).seq == 2, "refusals take no seq"


# ---- deletion and restoration ----------------------------------------------------------------------------
def test_authors_and_staff_delete_others_do_not_and_a_locked_room_stops_authors_only(published):
    room, author, other, staff = make_room(), make_user(), make_user("bob"), make_user("mod", staff=True)
    first, second = make_messages(room, author, 2)
    refused("forbidden", message_delete, room=room, user=other, message_id=first.pk)
    room_lock(room=room, locked=True, locked_by=staff)
    refused("room_locked", message_delete, room=room, user=author, message_id=first.pk)
    message_delete(room=room, user=staff, message_id=first.pk)  # moderation goes on in a locked room
    room_lock(room=room, locked=False, locked_by=staff)
    message_delete(room=room, user=author, message_id=second.pk)
    refused("not_found", message_delete, room=room, user=author, message_id=second.pk)
    assert [kind for _, _, kind in change_log(room)] == ["created", "created", "removed", "removed"]


def test_restoration_publishes_the_whole_message_at_the_next_seq(django_capture_on_commit_callbacks, published):
    room, author, staff = make_room(), make_user(), make_user("mod", staff=True)
    [message] = make_messages(room, author, 1)
    reaction_set(room=room, user=staff, message_id=message.pk, emoji=THUMBS, on=True)
    with django_capture_on_commit_callbacks(execute=True):
        message_remove(message=message, removed_by=staff)
        assert message_restore(message=Message.objects.get(pk=message.pk), restored_by=staff) is True
        assert message_restore(message=Message.objects.get(pk=message.pk), restored_by=staff) is False
    deleted, restored = room_events(published, room)
    assert deleted.startswith("c 3 0\n") and restored.startswith("c 4 0\n")
    assert '"type":"message_restored"' in restored and '"content":"m0"' in restored and '"seq":4' in restored
    assert f'"reactions":{{"{THUMBS}":["mod"]}}' in restored
    assert Room.objects.get(pk=room.pk).seq == 4, "restoring a visible message takes no seq"


# ---- replies ------------------------------------------------------------------------------------------
def test_a_reply_names_a_visible_message_of_its_own_room():
    room, other_room, author = make_room(), make_room("other"), make_user()
    first, gone = make_messages(room, author, 2)
    [elsewhere] = make_messages(other_room, author, 1)
    reply = message_create(room=room, user=author, content="indeed", reply_to=first.pk)
    assert Message.objects.get(pk=reply.pk).reply_to_id == first.pk
    message_remove(message=gone, removed_by=author)
    for target in (elsewhere.pk, gone.pk, 999999):
        error = refused("not_found", message_create, room=room, user=author, content="what?", reply_to=target, nonce="n")
        assert error.nonce == "n"
    message_remove(message=first, removed_by=author)
    assert Message.objects.get(pk=reply.pk).reply_to_id == first.pk, "a reply to a removed message stays a reply"


# ---- read markers -------------------------------------------------------------------------------------------
def test_a_read_marker_moves_forward_only_and_tells_the_users_other_sockets(django_capture_on_commit_callbacks, published):
    room, other_room, reader = make_room(), make_room("other"), make_user()
    first, second = make_messages(room, make_user("bob"), 2)
    [elsewhere] = make_messages(other_room, reader, 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert read_marker_move(room=room, user=reader, message_id=second.pk, connection_key="w1:7") is True
        assert read_marker_move(room=room, user=reader, message_id=first.pk) is False
        assert read_marker_move(room=room, user=reader, message_id=second.pk) is False
    assert ReadMarker.objects.get(user=reader, room=room).message_id == second.pk
    assert published == [(f"user.{reader.pk}", f'r {room.pk} w1:7\n{{"type":"read","user":"alice","id":{second.pk}}}')]
    refused("not_found", read_marker_move, room=room, user=reader, message_id=elsewhere.pk)
    refused("not_found", read_marker_move, room=room, user=reader, message_id=999999)
