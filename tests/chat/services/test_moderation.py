"""Moderation services without sockets: what they store, log, notify and publish, and
that sanctions end on time with nobody acting."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.services import token_create, user_for_token
from chat import selectors
from chat.models import Ban, Message, ModerationAction, Mute, Report, Room
from chat.protocol import ChatError
from chat.services.messages import message_create
from chat.services.moderation import (
    MAX_SANCTION_MINUTES,
    MODERATOR_PERMISSIONS,
    ReportExistsError,
    apitoken_revoke,
    ban_create,
    ban_lift,
    message_remove,
    message_restore,
    moderator_make,
    mute_create,
    mute_lift,
    report_create,
    report_resolve,
    room_lock,
    room_make_public,
)
from chat.services.rooms import dm_open, room_create
from notifications.models import Notification
from tests.support.factories import make_messages, make_room, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def later(monkeypatch):
    """Move the clock forward: ``later(minutes=5)``. Nothing but the clock changes."""

    def move(**delta):
        moved_to = timezone.now() + timedelta(**delta)
        monkeypatch.setattr(timezone, "now", lambda: moved_to)

    return move


def chat_events(published):
    return [(topic, data) for topic, data in published if not topic.startswith("notify.")]


def moderation_notifications(user):
    return [n.data for n in Notification.objects.filter(user=user, kind="moderation").order_by("pk")]


def log():
    return list(ModerationAction.objects.order_by("pk").values_list("action", "actor__username", "target_user__username"))


# ---- bans --------------------------------------------------------------------------------
def test_a_ban_is_stored_logged_notified_and_closes_connections_after_commit(django_capture_on_commit_callbacks, published):
    room, user, moderator = make_room(), make_user("spammer"), make_user("mod", staff=True)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        ban = ban_create(user=user, room=room, minutes=30, reason=" spam ", created_by=moderator)
    assert published == [], "nothing is published before commit"
    for callback in callbacks:
        callback()
    assert chat_events(published) == [(f"user.{user.pk}", f"k 4003 {room.pk}\n")]
    assert ban.reason == "spam" and ban.created_by == moderator
    assert ban.ends_at is not None and timedelta(minutes=29) < ban.ends_at - timezone.now() <= timedelta(minutes=30)
    assert log() == [("ban", "mod", "spammer")]
    entry = ModerationAction.objects.get()
    assert (entry.room, entry.reason, entry.detail["id"]) == (room, "spam", ban.pk)
    [data] = moderation_notifications(user)
    assert data == {"action": "ban", "room": "lobby", "reason": "spam", "until": ban.ends_at.isoformat()}
    assert data["until"].endswith("+00:00")


def test_a_site_wide_ban_without_end_closes_every_connection(django_capture_on_commit_callbacks, published):
    user = make_user()
    with django_capture_on_commit_callbacks(execute=True):
        ban = ban_create(user=user)
    assert ban.ends_at is None and ban.room is None
    # Every connection closes, and every worker forgets that the user was not banned (chat.ban_cache).
    assert chat_events(published) == [(f"user.{user.pk}", "k 4003 0\n"), ("credentials", str(user.pk))]
    assert moderation_notifications(user) == [{"action": "ban", "room": None, "reason": "", "until": None}]


@pytest.mark.parametrize("minutes", [0, -1, float("nan"), float("inf"), True, "5", MAX_SANCTION_MINUTES + 1])
def test_bad_durations_are_refused_and_nothing_is_written(minutes):
    user = make_user()
    for create in (ban_create, mute_create):
        with pytest.raises(ValidationError):
            create(user=user, minutes=minutes)
    assert not Ban.objects.exists() and not Mute.objects.exists() and not ModerationAction.objects.exists()


def test_an_overlong_reason_is_refused():
    with pytest.raises(ValidationError):
        ban_create(user=make_user(), reason="x" * 501)


def test_a_ban_ends_on_time_without_anyone_acting(later):
    room, other, user = make_room(), make_room("other"), make_user()
    ban_create(user=user, room=room, minutes=10)
    assert selectors.user_is_banned(user_id=user.pk, room_id=room.pk)
    assert not selectors.user_is_banned(user_id=user.pk, room_id=other.pk)
    later(minutes=9, seconds=59)
    assert selectors.user_is_banned(user_id=user.pk, room_id=room.pk)
    later(minutes=10, seconds=1)
    assert not selectors.user_is_banned(user_id=user.pk, room_id=room.pk)


def test_lifting_a_ban_lets_the_user_back_and_is_logged_once():
    room, user, moderator = make_room(), make_user(), make_user("mod", staff=True)
    ban = ban_create(user=user, created_by=moderator)
    assert selectors.user_is_banned(user_id=user.pk, room_id=room.pk)
    assert ban_lift(ban=ban, lifted_by=moderator) is True
    assert ban_lift(ban=ban, lifted_by=moderator) is False
    assert not selectors.user_is_banned(user_id=user.pk, room_id=room.pk)
    ban.refresh_from_db()
    assert ban.lifted_at is not None
    assert log() == [("ban", "mod", "alice"), ("ban_lift", "mod", "alice")]
    assert len(moderation_notifications(user)) == 1, "the user is told of the ban, not of its end"


def test_ban_closes_the_users_connections_after_commit(django_capture_on_commit_callbacks, published):
    room, user = make_room(), make_user()
    with django_capture_on_commit_callbacks(execute=True):
        ban_create(user=user, room=room, minutes=1)
    # (The user's moderation notification is published too: see the test above.)
    closes = [(topic, data) for topic, data in published if topic.startswith("user.")]
    assert closes == [(f"user.{user.pk}", f"k 4003 {room.pk}\n")]


# ---- mutes -------------------------------------------------------------------------------
def test_a_mute_refuses_the_next_message_and_ends_on_time(later, published):
    room, user = make_room(), make_user()
    mute = mute_create(user=user, minutes=5, reason="calm down")
    assert chat_events(published) == [], "a mute needs no live event: the write path reads it"
    with pytest.raises(ChatError) as raised:
        message_create(room=room, user=user, content="hi")
    assert raised.value.code == "muted"
    assert mute.ends_at is not None
    assert moderation_notifications(user) == [
        {"action": "mute", "room": None, "reason": "calm down", "until": mute.ends_at.isoformat()}
    ]
    later(minutes=5, seconds=1)
    message_create(room=room, user=user, content="I am back")
    assert Message.objects.filter(user=user).count() == 1


def test_lifting_a_mute_lets_the_next_message_through():
    room, user = make_room(), make_user()
    mute = mute_create(user=user, room=room)
    with pytest.raises(ChatError):
        message_create(room=room, user=user, content="hi")
    assert mute_lift(mute=mute, lifted_by=None) is True
    message_create(room=room, user=user, content="hi")
    assert [action for action, *_ in log()] == ["mute", "mute_lift"]


# ---- rooms -------------------------------------------------------------------------------
def test_locking_refuses_messages_and_tells_the_room_once(django_capture_on_commit_callbacks, published):
    room, user, moderator = make_room(), make_user(), make_user("mod", staff=True)
    with django_capture_on_commit_callbacks(execute=True):
        assert room_lock(room=room, locked=True, locked_by=moderator).locked is True
        room_lock(room=room, locked=True, locked_by=moderator)  # already locked: nothing
    assert chat_events(published) == [(f"room.{room.slug}", 'f\n{"type":"room_locked","locked":true}')]
    with pytest.raises(ChatError) as raised:
        message_create(room=room, user=user, content="hi")
    assert raised.value.code == "room_locked"
    with django_capture_on_commit_callbacks(execute=True):
        assert room_lock(room=room, locked=False, locked_by=moderator).locked is False
    assert chat_events(published)[-1] == (f"room.{room.slug}", 'f\n{"type":"room_locked","locked":false}')
    message_create(room=room, user=user, content="hi")
    assert [action for action, *_ in log()] == ["lock", "unlock"]
    assert Room.objects.get(pk=room.pk).locked is False


# ---- messages and reports ----------------------------------------------------------------
def test_removal_by_a_moderator_is_logged_notified_and_never_replayed(django_capture_on_commit_callbacks, published):
    room, author, moderator = make_room(), make_user(), make_user("mod", staff=True)
    messages = make_messages(room, author, 3)
    with django_capture_on_commit_callbacks(execute=True):
        assert message_remove(message=messages[1], removed_by=moderator, reason="rude") is True
        assert message_remove(message=messages[1], removed_by=moderator) is False
    assert chat_events(published) == [(f"room.{room.slug}", f'c 4 0\n{{"type":"message_deleted","id":{messages[1].pk},"seq":4}}')]
    assert Room.objects.get(pk=room.pk).seq == 4, "removing it again took no seq"
    row = Message.objects.get(pk=messages[1].pk)
    assert row.removed_by == moderator and row.removed_at is not None and row.content == "m1", "redacted, not deleted"
    assert moderation_notifications(author) == [{"action": "message_removed", "room": "lobby", "message_id": messages[1].pk}]
    entry = ModerationAction.objects.get()
    assert (entry.action, entry.actor, entry.target_user, entry.message_id, entry.reason) == (
        "message_remove",
        moderator,
        author,
        messages[1].pk,
        "rude",
    )
    visible = [messages[0].pk, messages[2].pk]
    assert [f["id"] for f in selectors.message_backlog(room_id=room.pk, room_slug="lobby", last_id=0)[1]] == visible
    replayed = selectors.change_replay(room_id=room.pk, room_slug="lobby", after=0).changes
    assert [(c.frame["type"], c.frame["id"], c.seq) for c in replayed] == [
        ("message", visible[0], 1),
        ("message", visible[1], 3),
        ("message_deleted", messages[1].pk, 4),
    ], "its content is never replayed; its removal is"


def test_message_remove_is_soft_and_published_once(django_capture_on_commit_callbacks, published):
    room, user = make_room(), make_user()
    message = message_create(room=room, user=user, content="oops")
    with django_capture_on_commit_callbacks(execute=True):
        message_remove(message=message, removed_by=user)
        message_remove(message=message, removed_by=user)
    message.refresh_from_db()
    assert message.removed_at is not None and message.removed_by == user
    assert [data for _, data in published] == [f'c 2 0\n{{"type":"message_deleted","id":{message.pk},"seq":2}}']


def test_an_author_removing_their_own_message_is_not_moderation():
    room, author = make_room(), make_user()
    [message] = make_messages(room, author, 1)
    assert message_remove(message=message, removed_by=author)
    assert not ModerationAction.objects.exists() and moderation_notifications(author) == []


def test_a_restored_message_is_replayed_again():
    room, author, moderator = make_room(), make_user(), make_user("mod", staff=True)
    messages = make_messages(room, author, 3)
    message_remove(message=messages[1], removed_by=moderator)
    assert message_restore(message=messages[1], restored_by=moderator) is True
    assert message_restore(message=messages[1], restored_by=moderator) is False
    row = Message.objects.get(pk=messages[1].pk)
    assert row.removed_at is None and row.removed_by is None
    every = [m.pk for m in messages]
    assert [f["id"] for f in selectors.message_backlog(room_id=room.pk, room_slug="lobby", last_id=None)[1]] == every
    assert [f["id"] for f in selectors.message_backlog(room_id=room.pk, room_slug="lobby", last_id=0)[1]] == every
    assert [f["id"] for f in selectors.message_list_after(room=room, after=0, limit=10)] == every
    replayed = selectors.change_replay(room_id=room.pk, room_slug="lobby", after=3).changes
    assert [(c.frame["type"], c.frame["id"], c.seq) for c in replayed] == [("message_restored", messages[1].pk, 5)]
    assert [action for action, *_ in log()] == ["message_remove", "message_restore"]


def test_one_report_per_user_per_message():
    room, author, reporter = make_room(), make_user(), make_user("bob")
    [message] = make_messages(room, author, 1)
    report = report_create(message=message, reporter=reporter, reason=" rude ")
    assert (report.reason, report.resolved_at, report.resolution) == ("rude", None, "")
    with pytest.raises(ReportExistsError):
        report_create(message=message, reporter=reporter, reason="again")
    report_create(message=message, reporter=make_user("carol"))
    assert Report.objects.count() == 2


def test_resolving_a_report_by_removal_closes_every_open_report_on_the_message(published):
    room, author, moderator = make_room(), make_user(), make_user("mod", staff=True)
    [message, other] = make_messages(room, author, 2)
    first = report_create(message=message, reporter=make_user("bob"), reason="spam")
    second = report_create(message=message, reporter=make_user("carol"))
    elsewhere = report_create(message=other, reporter=make_user("dan"))
    assert report_resolve(report=first, resolution=Report.Resolution.REMOVED, resolved_by=moderator) is True
    assert Message.objects.get(pk=message.pk).removed_by == moderator
    for report in (first, second):
        report.refresh_from_db()
        assert (report.resolution, report.resolved_by, report.resolved_at is not None) == ("removed", moderator, True)
    elsewhere.refresh_from_db()
    assert elsewhere.resolved_at is None
    assert [(a, t) for a, _, t in log()] == [("message_remove", "alice")]
    assert ModerationAction.objects.get().reason == "spam"


def test_dismissing_a_report_keeps_the_message_and_closes_that_report_only():
    room, author, moderator = make_room(), make_user(), make_user("mod", staff=True)
    [message] = make_messages(room, author, 1)
    first = report_create(message=message, reporter=make_user("bob"))
    second = report_create(message=message, reporter=make_user("carol"))
    assert report_resolve(report=first, resolution=Report.Resolution.DISMISSED, resolved_by=moderator) is True
    assert report_resolve(report=first, resolution=Report.Resolution.DISMISSED, resolved_by=moderator) is False
    assert first.resolution == "dismissed" and first.resolved_by == moderator
    second.refresh_from_db()
    assert second.resolved_at is None
    assert Message.objects.get(pk=message.pk).removed_at is None
    assert log() == [("report_dismiss", "mod", "alice")]
    assert moderation_notifications(author) == []


def test_a_private_room_is_made_public_once_and_logged_a_direct_message_never():
    owner, mod = make_user("owner"), make_user("mod", staff=True)
    club = room_create(slug="club", title="Club", created_by=owner, private=True)
    assert room_make_public(room=club, changed_by=mod, reason="an open club now") is True
    assert room_make_public(room=club, changed_by=mod) is False
    assert club.private is False and Room.objects.get(pk=club.pk).private is False
    [entry] = ModerationAction.objects.all()
    assert (entry.action, entry.actor, entry.room, entry.reason) == ("room_public", mod, club, "an open club now")
    dm, _ = dm_open(user=owner, other=make_user("bob"))
    with pytest.raises(ValidationError, match="always private"):
        room_make_public(room=dm, changed_by=mod)
    assert Room.objects.get(pk=dm.pk).private is True and ModerationAction.objects.count() == 1


def test_revoking_a_token_as_a_moderator_is_logged_once(django_capture_on_commit_callbacks):
    alice, mod = make_user("alice"), make_user("mod", staff=True)
    token, raw = token_create(user=alice)
    with django_capture_on_commit_callbacks(execute=True):
        assert apitoken_revoke(token=token, revoked_by=mod) is True
    assert apitoken_revoke(token=token, revoked_by=mod) is False
    assert user_for_token(raw=raw) is None
    assert log() == [("token_revoke", "mod", "alice")]
    assert ModerationAction.objects.get().detail == {"id": token.pk, "prefix": token.prefix}


# ---- moderators --------------------------------------------------------------------------
def permission_names(group):
    return sorted(f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type"))


def test_the_migration_ships_a_moderators_group_with_exactly_the_moderator_permissions():
    assert permission_names(Group.objects.get(name="Moderators")) == sorted(MODERATOR_PERMISSIONS)


def test_making_a_moderator_makes_staff_in_the_group_not_superuser():
    user = make_user("mo")
    Group.objects.filter(name="Moderators").delete()  # even if someone deleted the group
    moderator_make(user=user)
    user.refresh_from_db()
    assert user.is_staff and not user.is_superuser
    assert [g.name for g in user.groups.all()] == ["Moderators"]
    assert permission_names(user.groups.get()) == sorted(MODERATOR_PERMISSIONS)
    assert user.has_perm("chat.add_ban") and not user.has_perm("chat.delete_ban")
