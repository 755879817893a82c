"""Reactions (docs/protocol.md, "Room changes"): one react at a time (reaction_set, as REST
and the admin use it) and a writer's batch (reaction_set_batch, as room sockets reach it
through chat.writer). What each stores, which seq it takes, what it publishes after
commit, and every refusal with its code."""

import pytest
from django.test import override_settings

from chat import selectors
from chat.models import Reaction, Room
from chat.protocol import ChatError
from chat.services.moderation import ban_create, message_remove, mute_create, room_lock
from chat.services.reactions import ReactionDraft, reaction_set, reaction_set_batch
from tests.support.chat_changes import change_log, refused, room_events
from tests.support.factories import make_messages, make_room, make_user

pytestmark = pytest.mark.django_db
THUMBS, HEART, PARTY = "\U0001f44d", "\u2764\ufe0f", "\U0001f389"


def draft(room, user, message, emoji, on=True):
    return ReactionDraft(
        room_id=room.pk,
        room_slug=room.slug,
        user_id=user.pk,
        username=user.username,
        message_id=message.pk,
        emoji=emoji,
        on=on,
    )


@pytest.mark.django_db(transaction=True)
def test_reactions_publish_the_whole_set_and_only_real_changes_take_a_seq(django_capture_on_commit_callbacks, published):
    room, author, bob = make_room(), make_user(), make_user("bob")
    [message] = make_messages(room, author, 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert reaction_set(room=room, user=bob, message_id=message.pk, emoji=HEART, on=True) == {HEART: ["bob"]}
        assert reaction_set(room=room, user=author, message_id=message.pk, emoji=THUMBS, on=True) == {
            THUMBS: ["alice"],
            HEART: ["bob"],
        }, "emoji in CHAT_REACTIONS' order"
        assert reaction_set(room=room, user=bob, message_id=message.pk, emoji=HEART, on=True) == {
            THUMBS: ["alice"],
            HEART: ["bob"],
        }
        assert reaction_set(room=room, user=bob, message_id=message.pk, emoji=HEART, on=False) == {THUMBS: ["alice"]}
        assert reaction_set(room=room, user=bob, message_id=message.pk, emoji=HEART, on=False) == {THUMBS: ["alice"]}
    assert [kind for _, _, kind in change_log(room)] == ["created", "reactions", "reactions", "reactions"]
    last = room_events(published, room)[-1]
    assert last.startswith("c 4 0\n") and f'"reactions":{{"{THUMBS}":["alice"]}}' in last


def test_reactions_outside_the_set_on_removed_messages_or_by_the_muted_are_refused():
    room, author = make_room(), make_user()
    first, second = make_messages(room, author, 2)
    refused("bad_emoji", reaction_set, room=room, user=author, message_id=first.pk, emoji="\U0001f4a9", on=True)
    with override_settings(CHAT_REACTIONS=["\U0001f4a9"]):
        assert reaction_set(room=room, user=author, message_id=first.pk, emoji="\U0001f4a9", on=True)
    message_remove(message=second, removed_by=author)
    refused("not_found", reaction_set, room=room, user=author, message_id=second.pk, emoji=THUMBS, on=True)
    mute_create(user=author, minutes=5)
    refused("muted", reaction_set, room=room, user=author, message_id=first.pk, emoji=THUMBS, on=True)
    assert Reaction.objects.count() == 1


# ---- a writer's batch --------------------------------------------------------------------------------
def test_a_batch_plays_its_reacts_in_order_one_seq_each_and_every_set_is_the_one_the_database_ends_with(
    django_capture_on_commit_callbacks, published
):
    room, alice, bob = make_room(), make_user(), make_user("bob")
    first, second = make_messages(room, alice, 2)
    reaction_set(room=room, user=alice, message_id=first.pk, emoji=THUMBS, on=True)  # seq 3
    batch = [
        draft(room, bob, first, HEART),  # 4
        draft(room, bob, first, THUMBS),  # 5
        draft(room, alice, first, THUMBS, on=False),  # 6: an older row deleted
        draft(room, bob, first, HEART, on=False),  # 7: a row of this batch, never written
        draft(room, bob, first, HEART, on=False),  # nothing to take back: no seq
        draft(room, alice, second, PARTY),  # 8
        draft(room, bob, first, HEART),  # 9: again, after bob's thumbs
    ]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        results = reaction_set_batch(drafts=batch)
    assert published == [], "nothing before commit"
    assert results == [
        {THUMBS: ["alice"], HEART: ["bob"]},
        {THUMBS: ["alice", "bob"], HEART: ["bob"]},
        {THUMBS: ["bob"], HEART: ["bob"]},
        {THUMBS: ["bob"]},
        {THUMBS: ["bob"]},
        {PARTY: ["alice"]},
        {THUMBS: ["bob"], HEART: ["bob"]},
    ]
    final = selectors.reactions_of(message_ids=[first.pk, second.pk])
    assert final == {first.pk: results[-1], second.pk: results[5]}, "the last frame of each message is the database's set"
    assert change_log(room)[2:] == [(seq, first.pk if seq != 8 else second.pk, "reactions") for seq in range(3, 10)]
    assert Room.objects.get(pk=room.pk).seq == 9
    for callback in callbacks:
        callback()
    [event] = room_events(published, room)  # one publish for the room's whole batch
    headers = [line for line in event.split("\n") if line.startswith("c ")]
    assert headers == [f"c {seq} 0" for seq in range(4, 10)]
    assert '"seq":7' in event and f'"reactions":{{"{THUMBS}":["bob"]}}' in event


def test_a_batch_refuses_each_draft_on_its_own_and_the_others_go_through():
    room, locked_room = make_room(), make_room("quiet")
    alice, bob, staff = make_user(), make_user("bob"), make_user("mod", staff=True)
    muted, banned = make_user("mute"), make_user("ban")
    [message, gone] = make_messages(room, alice, 2)
    [elsewhere] = make_messages(locked_room, alice, 1)
    message_remove(message=gone, removed_by=staff)
    mute_create(user=muted, room=room, minutes=5)
    ban_create(user=banned, minutes=5)  # site-wide
    room_lock(room=locked_room, locked=True, locked_by=staff)
    seq_before = Room.objects.get(pk=room.pk).seq
    results = reaction_set_batch(
        drafts=[
            draft(room, alice, message, "\U0001f4a9"),
            draft(room, alice, gone, THUMBS),
            draft(room, alice, elsewhere, THUMBS),  # a message of another room
            draft(room, muted, message, THUMBS),
            draft(room, banned, message, THUMBS),
            draft(locked_room, alice, elsewhere, THUMBS),
            draft(room, bob, message, THUMBS),
        ]
    )
    codes = [result.code if isinstance(result, ChatError) else result for result in results]
    assert codes == ["bad_emoji", "not_found", "not_found", "muted", "banned", "room_locked", {THUMBS: ["bob"]}]
    assert list(Reaction.objects.values_list("user__username", "emoji")) == [("bob", THUMBS)]
    assert Room.objects.get(pk=room.pk).seq == seq_before + 1, "refusals take no seq"


@override_settings(CHAT_RATE_LIMIT=2, CHAT_RATE_WINDOW=60)
def test_in_a_batch_only_reacts_that_change_something_spend_the_rate():
    room, alice = make_room(), make_user()
    [message] = make_messages(room, alice, 1)
    results = reaction_set_batch(
        drafts=[
            draft(room, alice, message, THUMBS, on=False),  # already so: free
            draft(room, alice, message, THUMBS),
            draft(room, alice, message, HEART),
            draft(room, alice, message, PARTY),  # the third change in the window
        ]
    )
    assert results[:3] == [{}, {THUMBS: ["alice"]}, {THUMBS: ["alice"], HEART: ["alice"]}]
    assert isinstance(results[3], ChatError) and results[3].code == "rate_limited" and results[3].retry_after
    assert selectors.reactions_of(message_ids=[message.pk]) == {message.pk: results[2]}
