"""The moderators' admin through Django's test client, as a moderator (staff, in the
Moderators group, not a superuser): changelist action posts, their effects in the
database, and (with WebsocketCommunicator) in live frames."""

from __future__ import annotations

import pytest
import pytest_asyncio
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Group
from django.test import Client

from chat import protocol, selectors
from chat.hub import get_hub
from chat.models import Ban, Message, ModerationAction, Mute, Report, Room
from chat.services import moderation
from chat.services.messages import message_create, message_edit
from chat.services.reactions import reaction_set
from chat.services.rooms import dm_open, room_create
from chat.writer import get_writer
from config.asgi import application
from notifications.models import Notification
from tests.support.factories import make_messages, make_room, make_token, make_user

TIMEOUT = 5


def make_moderator(username: str = "mod"):
    user = make_user(username)
    moderation.moderator_make(user=user)
    user.refresh_from_db()
    assert user.is_staff and not user.is_superuser
    return user


def admin_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def act(client: Client, changelist: str, action: str, objects, **fields):
    """Post a changelist action for ``objects``; with ``fields``, as the intermediate
    page's second post (``apply``), the way the form on that page submits."""
    data = {"action": action, ACTION_CHECKBOX_NAME: [str(o.pk) for o in objects]}
    if fields:
        data.update(fields, apply="1")
    else:
        data["index"] = "0"
    return client.post(changelist, data)


# What the room form needed while created_at was editable, so that the attacks below would
# have been saved rather than refused for a missing field.
CREATED_AT = {"created_at_0": "2026-01-01", "created_at_1": "00:00:00"}


# ---- without sockets ----------------------------------------------------------------------
@pytest.mark.django_db
class TestAsModerator:
    @pytest.fixture(autouse=True)
    def _set_up(self):
        self.moderator = make_moderator()
        self.client = admin_client(self.moderator)

    def test_every_moderation_page_opens(self):
        room = make_room()
        [message] = make_messages(room, make_user("author"), 1)
        moderation.report_create(message=message, reporter=make_user("bob"), reason="rude")
        moderation.ban_create(user=make_user("carol"), reason="spam")
        moderation.mute_create(user=make_user("dan"), room=room)
        make_token(make_user("eve"))
        for url in [
            "/admin/",
            "/admin/chat/room/",
            f"/admin/chat/room/{room.pk}/change/",
            "/admin/chat/message/",
            f"/admin/chat/message/{message.pk}/change/",
            "/admin/chat/report/",
            "/admin/chat/ban/",
            "/admin/chat/ban/add/",
            "/admin/chat/mute/",
            "/admin/chat/moderationaction/",
            "/admin/auth/user/",
            "/admin/accounts/apitoken/",
        ]:
            assert self.client.get(url).status_code == 200, url

    def test_what_a_moderator_may_not_do(self):
        moderation.ban_create(user=make_user("carol"))
        entry = ModerationAction.objects.get()
        assert self.client.get("/admin/chat/moderationaction/add/").status_code == 403
        assert self.client.post(f"/admin/chat/moderationaction/{entry.pk}/delete/").status_code == 403
        response = self.client.post(f"/admin/chat/moderationaction/{entry.pk}/change/", {"reason": "rewritten"})
        assert response.status_code == 403
        assert ModerationAction.objects.get().reason == ""
        assert self.client.get("/admin/auth/user/add/").status_code == 403
        assert self.client.get("/admin/chat/room/add/").status_code == 403
        assert self.client.post(f"/admin/chat/ban/{Ban.objects.get().pk}/delete/").status_code == 403
        assert self.client.get("/admin/auth/group/").status_code == 403

    def test_the_room_changelist_shows_online_users_and_message_counts(self):
        room = make_room()
        messages = make_messages(room, make_user("author"), 3)
        moderation.message_remove(message=messages[0], removed_by=self.moderator)
        response = self.client.get("/admin/chat/room/")
        [row] = response.context["cl"].result_list
        assert (row.online_now, row.visible_messages) == (0, 2)
        assert b"online now" in response.content.lower()

    def test_lock_and_unlock_rooms(self):
        rooms = [make_room(), make_room("other")]
        response = act(self.client, "/admin/chat/room/", "lock_rooms", rooms)
        assert response.status_code == 302
        assert list(Room.objects.values_list("locked", flat=True)) == [True, True]
        act(self.client, "/admin/chat/room/", "unlock_rooms", rooms[:1])
        assert list(Room.objects.order_by("slug").values_list("slug", "locked")) == [("lobby", False), ("other", True)]
        assert [a.action for a in ModerationAction.objects.order_by("pk")] == ["lock", "lock", "unlock"]
        assert all(a.actor == self.moderator for a in ModerationAction.objects.all())

    def test_a_room_cannot_be_locked_by_editing_it(self):
        room = make_room()
        self.client.post(f"/admin/chat/room/{room.pk}/change/", {"slug": "lobby", "title": "Lobby", "locked": "on"})
        assert Room.objects.get().locked is False, "locked is read-only in the form: only the actions tell the room"

    def test_editing_a_dm_changes_nothing_and_it_stays_private(self):
        alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
        dm, _ = dm_open(user=alice, other=bob)
        message_create(room=dm, user=alice, content="just between us")
        # The attack: untick "private" (an unticked box is not posted), take the slug and the room.
        form = {"slug": "open", "title": "Everyone welcome", "created_by": str(carol.pk), **CREATED_AT}
        self.client.post(f"/admin/chat/room/{dm.pk}/change/", form)
        dm.refresh_from_db()
        assert (dm.slug.startswith("dm-"), dm.title, dm.private, dm.created_by) == (True, "alice and bob", True, alice)
        outsider = Client(headers={"Authorization": f"Bearer {make_token(carol)}"})
        assert outsider.get(f"/api/rooms/{dm.slug}/messages").status_code == 404
        assert dm.slug not in [r["slug"] for r in outsider.get("/api/rooms/").json()["rooms"]]
        assert not ModerationAction.objects.exists()

    def test_only_the_title_of_a_room_can_be_edited(self):
        alice, carol = make_user("alice"), make_user("carol")
        club = room_create(slug="club", title="Club", created_by=alice, private=True)
        form = {"slug": "taken-over", "title": "The Club", "created_by": str(carol.pk), **CREATED_AT}
        assert self.client.post(f"/admin/chat/room/{club.pk}/change/", form).status_code == 302
        club.refresh_from_db()
        assert (club.slug, club.title, club.private, club.created_by) == ("club", "The Club", True, alice)
        lobby = room_create(slug="lobby", title="Lobby", created_by=alice)
        self.client.post(
            f"/admin/chat/room/{lobby.pk}/change/", {"slug": "lobby", "title": "Lobby", "private": "on", **CREATED_AT}
        )
        assert Room.objects.get(pk=lobby.pk).private is False, "nor made private by ticking the box"

    def test_send_notice_asks_for_the_text_first(self):
        room = make_room()
        page = act(self.client, "/admin/chat/room/", "send_notice", [room])
        assert page.status_code == 200
        assert page.templates[0].name == "admin/chat/action_form.html"
        assert b'name="content"' in page.content and b'value="send_notice"' in page.content
        assert not ModerationAction.objects.exists()
        invalid = act(self.client, "/admin/chat/room/", "send_notice", [room], content="")
        assert invalid.status_code == 200 and invalid.context["form"].errors
        done = act(self.client, "/admin/chat/room/", "send_notice", [room], content="Be kind")
        assert done.status_code == 302
        assert ModerationAction.objects.get().detail == {"content": "Be kind"}

    def test_search_and_filter_messages(self):
        room, other = make_room(), make_room("other")
        author, bob = make_user("author"), make_user("bob")
        message_create(room=room, user=author, content="hello world")
        message_create(room=other, user=bob, content="goodbye")
        gone = message_create(room=room, user=bob, content="rude words")
        moderation.message_remove(message=gone, removed_by=self.moderator)

        def listed(query: str) -> list[str]:
            response = self.client.get(f"/admin/chat/message/?{query}")
            assert response.status_code == 200
            return sorted(m.content for m in response.context["cl"].result_list)

        assert listed("q=hello") == ["hello world"]
        assert listed("q=bob") == ["goodbye", "rude words"]
        assert listed("q=other") == ["goodbye"]
        assert listed(f"room__id__exact={room.pk}") == ["hello world", "rude words"]
        assert listed("removed=yes") == ["rude words"]
        assert listed("removed=no") == ["goodbye", "hello world"]
        changelist = self.client.get("/admin/chat/message/").context["cl"]
        [date_filter] = [f for f in changelist.filter_specs if f.title == "created at"]
        today = next(c["query_string"] for c in date_filter.choices(changelist) if c["display"] == "Today")
        assert listed(today.lstrip("?")) == ["goodbye", "hello world", "rude words"]

    def test_bulk_remove_and_restore_messages(self):
        room, author = make_room(), make_user("author")
        messages = make_messages(room, author, 3)
        act(self.client, "/admin/chat/message/", "remove_messages", messages[:2])
        for message in Message.objects.filter(pk__in=[m.pk for m in messages[:2]]):
            assert message.removed_by == self.moderator and message.removed_at is not None
        assert [f["id"] for f in selectors_backlog(room)] == [messages[2].pk]
        assert Notification.objects.filter(user=author, kind="moderation").count() == 2
        act(self.client, "/admin/chat/message/", "restore_messages", messages[:1])
        assert [f["id"] for f in selectors_backlog(room)] == [messages[0].pk, messages[2].pk]
        assert "delete_selected" not in self.client.get("/admin/chat/message/").context["action_form"].fields["action"].choices

    def test_ban_users_through_the_intermediate_form(self):
        room, carol, dan = make_room(), make_user("carol"), make_user("dan")
        page = act(self.client, "/admin/auth/user/", "ban_users", [carol, dan])
        assert page.status_code == 200 and b'name="minutes"' in page.content and b'name="reason"' in page.content
        assert not Ban.objects.exists()
        bad = act(self.client, "/admin/auth/user/", "ban_users", [carol], minutes="0", reason="")
        assert bad.status_code == 200 and "minutes" in bad.context["form"].errors
        done = act(self.client, "/admin/auth/user/", "ban_users", [carol, dan], minutes="60", reason="spam", room=str(room.pk))
        assert done.status_code == 302
        bans = list(Ban.objects.order_by("user__username"))
        assert [(b.user.username, b.room, b.reason, b.created_by) for b in bans] == [
            ("carol", room, "spam", self.moderator),
            ("dan", room, "spam", self.moderator),
        ]
        assert all(b.ends_at is not None for b in bans)
        site_wide = act(self.client, "/admin/auth/user/", "ban_users", [carol], minutes="", reason="", room="")
        assert site_wide.status_code == 302
        ban = Ban.objects.latest("pk")
        assert (ban.room, ban.ends_at) == (None, None)
        assert [n.data["action"] for n in Notification.objects.filter(user=carol)] == ["ban", "ban"]

    def test_mute_users_through_the_intermediate_form(self):
        carol = make_user("carol")
        assert act(self.client, "/admin/auth/user/", "mute_users", [carol]).status_code == 200
        act(self.client, "/admin/auth/user/", "mute_users", [carol], minutes="5", reason="calm down", room="")
        mute = Mute.objects.get()
        assert (mute.user, mute.reason, mute.created_by, mute.room) == (carol, "calm down", self.moderator, None)
        assert ModerationAction.objects.get().action == "mute"

    def test_add_a_ban_from_the_ban_admin_and_lift_it(self):
        carol = make_user("carol")
        response = self.client.post("/admin/chat/ban/add/", {"user": carol.pk, "room": "", "minutes": "10", "reason": "spam"})
        assert response.status_code == 302, response.context and response.context["adminform"].form.errors
        ban = Ban.objects.get()
        assert (ban.user, ban.created_by, ban.reason) == (carol, self.moderator, "spam") and ban.ends_at is not None
        assert ModerationAction.objects.get().action == "ban", "added through the service: logged"
        act(self.client, "/admin/chat/ban/", "lift", [ban])
        ban.refresh_from_db()
        assert ban.lifted_at is not None
        assert [a.action for a in ModerationAction.objects.order_by("pk")] == ["ban", "ban_lift"]

    def test_lift_mutes(self):
        mute = moderation.mute_create(user=make_user("carol"))
        act(self.client, "/admin/chat/mute/", "lift", [mute])
        mute.refresh_from_db()
        assert mute.lifted_at is not None

    def test_the_report_queue_shows_open_reports_and_resolves_them(self):
        room, author = make_room(), make_user("author")
        rude, fine = make_messages(room, author, 2)
        first = moderation.report_create(message=rude, reporter=make_user("bob"), reason="insult")
        second = moderation.report_create(message=rude, reporter=make_user("carol"))
        unfounded = moderation.report_create(message=fine, reporter=make_user("dan"))
        queue = self.client.get("/admin/chat/report/").context["cl"].result_list
        assert [r.pk for r in queue] == [first.pk, second.pk, unfounded.pk]
        act(self.client, "/admin/chat/report/", "remove_messages", [first])
        act(self.client, "/admin/chat/report/", "dismiss_reports", [unfounded])
        assert Message.objects.get(pk=rude.pk).removed_by == self.moderator
        assert Message.objects.get(pk=fine.pk).removed_at is None
        assert dict(Report.objects.values_list("pk", "resolution")) == {
            first.pk: "removed",
            second.pk: "removed",
            unfounded.pk: "dismissed",
        }
        assert list(self.client.get("/admin/chat/report/").context["cl"].result_list) == []
        assert len(self.client.get("/admin/chat/report/?status=resolved").context["cl"].result_list) == 3
        log = self.client.get("/admin/chat/moderationaction/").context["cl"].result_list
        assert sorted(a.action for a in log) == ["message_remove", "report_dismiss"]


@pytest.mark.django_db
def test_a_message_page_shows_its_edit_history_and_reactions_read_only():
    room = make_room()
    author = make_user("author")
    message = message_create(room=room, user=author, content="first words", nonce="")
    assert message_edit(room=room, user=author, message_id=message.pk, content="second words")
    assert message_edit(room=room, user=author, message_id=message.pk, content="third words")
    reaction_set(room=room, user=make_user("fan"), message_id=message.pk, emoji="🎉", on=True)

    page = admin_client(make_moderator()).get(f"/admin/chat/message/{message.pk}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "edit history" in html.lower()
    assert html.index("first words") < html.index("second words")  # oldest first
    assert "third words" in html  # the current content
    assert "🎉" in html and "fan" in html
    # Read-only: no inline forms to add, change or delete history or reactions.
    assert 'name="edits-0-content_before"' not in html and 'name="reactions-0-emoji"' not in html


@pytest.mark.django_db
def test_staff_outside_the_group_cannot_moderate():
    client = admin_client(make_user("intern", staff=True))
    room = make_room()
    assert client.get("/admin/chat/room/").status_code == 403
    act(client, "/admin/chat/room/", "lock_rooms", [room])
    assert Room.objects.get().locked is False


# Everything a moderator needs, nothing more: the moderation actions, reading what they act on,
# and no editing of fields only a service may change (docs/moderation.md).
MODERATOR_PERMISSIONS = [
    "accounts.revoke_apitoken",
    "accounts.view_apitoken",
    "auth.view_user",
    "chat.add_ban",
    "chat.add_mute",
    "chat.change_ban",
    "chat.change_message",
    "chat.change_mute",
    "chat.change_report",
    "chat.change_room",
    "chat.view_ban",
    "chat.view_message",
    "chat.view_moderationaction",
    "chat.view_mute",
    "chat.view_report",
    "chat.view_room",
]


@pytest.mark.django_db
def test_the_moderators_group_has_exactly_the_listed_permissions():
    group = Group.objects.get(name="Moderators")
    names = sorted(f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type"))
    assert names == MODERATOR_PERMISSIONS
    assert sorted(moderation.MODERATOR_PERMISSIONS) == MODERATOR_PERMISSIONS
    moderator = make_moderator()
    assert sorted(moderator.get_all_permissions()) == MODERATOR_PERMISSIONS


@pytest.mark.django_db
def test_making_a_room_public_is_a_logged_action_never_for_a_dm_nor_a_moderator():
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    club = room_create(slug="club", title="Club", created_by=alice, private=True)
    dm, _ = dm_open(user=alice, other=bob)
    moderators = admin_client(make_moderator())
    choices = moderators.get("/admin/chat/room/").context["action_form"].fields["action"].choices
    assert "make_public" not in [name for name, _ in choices]
    act(moderators, "/admin/chat/room/", "make_public", [club, dm])
    assert list(Room.objects.order_by("pk").values_list("private", flat=True)) == [True, True]
    root = make_user("root", staff=True)
    root.is_superuser = True
    root.save()
    response = act(admin_client(root), "/admin/chat/room/", "make_public", [club, dm])
    assert response.status_code == 302
    assert list(Room.objects.order_by("pk").values_list("slug", "private")) == [("club", False), (dm.slug, True)]
    entry = ModerationAction.objects.get()
    assert (entry.action, entry.actor, entry.room) == ("room_public", root, club)
    outsider = Client(headers={"Authorization": f"Bearer {make_token(carol)}"})
    assert [r["slug"] for r in outsider.get("/api/rooms/").json()["rooms"]] == ["club"]


def selectors_backlog(room):
    return selectors.message_backlog(room_id=room.pk, room_slug=room.slug, last_id=0)[1]


# ---- live frames ---------------------------------------------------------------------------
async def room_socket(user, path: str = "/ws/rooms/lobby/") -> WebsocketCommunicator:
    token = await database_sync_to_async(make_token)(user)
    return WebsocketCommunicator(application, path, headers=[(b"authorization", f"Bearer {token}".encode())])


@pytest_asyncio.fixture
async def live():
    """A room with alice's socket joined and a moderator's admin client."""
    room = await database_sync_to_async(make_room)()
    alice = await database_sync_to_async(make_user)("alice")
    socket = await room_socket(alice)
    connected, _ = await socket.connect(timeout=TIMEOUT)
    assert connected
    frame = await socket.receive_json_from(timeout=TIMEOUT)
    while frame["type"] != "presence":
        frame = await socket.receive_json_from(timeout=TIMEOUT)
    client = await database_sync_to_async(lambda: admin_client(make_moderator()))()
    yield room, alice, socket, client
    await socket.disconnect()
    await get_hub().close()
    await get_writer().close()


async def admin_act(client, changelist, action, objects, **fields):
    response = await database_sync_to_async(act)(client, changelist, action, objects, **fields)
    assert response.status_code == 302, response
    return response


async def next_frame(socket) -> dict:
    return await socket.receive_json_from(timeout=TIMEOUT)


async def close_code(socket) -> int:
    output = await socket.receive_output(timeout=TIMEOUT)
    while output["type"] == "websocket.send":
        output = await socket.receive_output(timeout=TIMEOUT)
    assert output["type"] == "websocket.close", output
    return output["code"]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_locking_from_the_admin_is_heard_live_and_refuses_messages(live):
    room, _alice, socket, client = live
    await admin_act(client, "/admin/chat/room/", "lock_rooms", [room])
    assert await next_frame(socket) == {"type": "room_locked", "locked": True}
    await socket.send_json_to({"type": "message", "content": "hello?", "nonce": "n1"})
    error = await next_frame(socket)
    assert (error["type"], error["code"], error["nonce"]) == ("error", "room_locked", "n1")
    await admin_act(client, "/admin/chat/room/", "unlock_rooms", [room])
    assert await next_frame(socket) == {"type": "room_locked", "locked": False}
    await socket.send_json_to({"type": "message", "content": "hello again"})
    assert (await next_frame(socket))["content"] == "hello again"


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_notice_from_the_admin_reaches_the_room(live):
    room, _alice, socket, client = live
    await admin_act(client, "/admin/chat/room/", "send_notice", [room], content="Closing at ten")
    assert await next_frame(socket) == {"type": "notice", "content": "Closing at ten"}


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_removing_from_the_admin_deletes_live_and_from_the_next_backlog(live):
    _room, alice, socket, client = live
    await socket.send_json_to({"type": "message", "content": "regrettable"})
    sent = await next_frame(socket)
    message = await database_sync_to_async(Message.objects.get)(pk=sent["id"])
    await admin_act(client, "/admin/chat/message/", "remove_messages", [message])
    assert await next_frame(socket) == {"type": "message_deleted", "id": sent["id"], "seq": sent["seq"] + 1}
    await socket.disconnect()
    again = await room_socket(alice, "/ws/rooms/lobby/?last_id=0")
    await again.connect(timeout=TIMEOUT)
    frames = [await next_frame(again)]
    while frames[-1]["type"] != "synced":
        frames.append(await next_frame(again))
    assert [f["type"] for f in frames] == ["hello", "synced"], "the removed message is not replayed"
    await again.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_restoring_from_the_admin_is_heard_live_as_message_restored(live):
    _room, _alice, socket, client = live
    await socket.send_json_to({"type": "message", "content": "not so bad after all"})
    sent = await next_frame(socket)
    message = await database_sync_to_async(Message.objects.get)(pk=sent["id"])
    await admin_act(client, "/admin/chat/message/", "remove_messages", [message])
    assert (await next_frame(socket))["type"] == "message_deleted"
    await admin_act(client, "/admin/chat/message/", "restore_messages", [message])
    restored = await next_frame(socket)
    assert restored == {**sent, "type": "message_restored", "seq": sent["seq"] + 2}, "the whole message, at the next seq"


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_banning_from_the_admin_closes_the_socket_with_4003(live):
    _room, alice, socket, client = live
    await admin_act(client, "/admin/auth/user/", "ban_users", [alice], minutes="10", reason="spam", room="")
    assert await close_code(socket) == protocol.CLOSE_BANNED
    assert await database_sync_to_async(Ban.objects.filter(user=alice).exists)()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_muting_from_the_admin_refuses_the_next_message(live):
    room, alice, socket, client = live
    await admin_act(client, "/admin/auth/user/", "mute_users", [alice], minutes="10", reason="", room=str(room.pk))
    await socket.send_json_to({"type": "message", "content": "can you hear me", "nonce": "m1"})
    error = await next_frame(socket)
    assert (error["type"], error["code"], error["nonce"]) == ("error", "muted", "m1")
    mute = await database_sync_to_async(Mute.objects.get)(user=alice)
    await admin_act(client, "/admin/chat/mute/", "lift", [mute])
    await socket.send_json_to({"type": "message", "content": "and now?"})
    assert (await next_frame(socket))["content"] == "and now?"


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_removing_a_reported_message_from_the_queue_deletes_it_live(live):
    _room, _alice, socket, client = live
    await socket.send_json_to({"type": "message", "content": "offensive"})
    sent = await next_frame(socket)

    def report():
        bob = make_user("bob")
        return moderation.report_create(message=Message.objects.get(pk=sent["id"]), reporter=bob, reason="offensive")

    reported = await database_sync_to_async(report)()
    await admin_act(client, "/admin/chat/report/", "remove_messages", [reported])
    assert await next_frame(socket) == {"type": "message_deleted", "id": sent["id"], "seq": sent["seq"] + 1}
