"""The staff API of docs/protocol.md, "Moderation" and message reports: statuses, bodies, errors."""

import json

import pytest
from django.test import Client

from chat.models import Ban, Message, ModerationAction, Mute, Report, Room
from tests.support.factories import make_messages, make_room, make_token, make_user

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    return Client(headers={"Authorization": f"Bearer {make_token(user)}"})


@pytest.fixture
def staff():
    return client_for(make_user("mod", staff=True))


@pytest.fixture
def member():
    return client_for(make_user("member"))


@pytest.fixture
def target():
    return make_user("target")


def post(client, url, body):
    return client.post(url, data=body if isinstance(body, str) else json.dumps(body), content_type="application/json")


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == code, response.json()
    assert response.json()["error"]["detail"]


STAFF_CALLS = [
    ("post", "/api/moderation/bans", {"user": "target"}),
    ("post", "/api/moderation/mutes", {"user": "target"}),
    ("delete", "/api/moderation/bans/{ban}", None),
    ("delete", "/api/moderation/mutes/{mute}", None),
    ("post", "/api/rooms/lobby/lock", {"locked": True}),
    ("post", "/api/rooms/lobby/notice", {"content": "hello"}),
]


@pytest.mark.parametrize(("method", "url", "body"), STAFF_CALLS)
def test_non_staff_get_403_and_nothing_happens(member, target, method, url, body):
    room = make_room()
    ban, mute = Ban.objects.create(user=target), Mute.objects.create(user=target)
    url = url.format(ban=ban.pk, mute=mute.pk)
    response = post(member, url, body) if method == "post" else member.delete(url)
    assert_error(response, 403, "forbidden")
    assert (Ban.objects.count(), Mute.objects.count()) == (1, 1)
    assert Ban.objects.get().lifted_at is None and Mute.objects.get().lifted_at is None
    assert Room.objects.get(pk=room.pk).locked is False
    assert not ModerationAction.objects.exists()


@pytest.mark.parametrize(("method", "url", "body"), STAFF_CALLS)
def test_anonymous_callers_get_401(method, url, body):
    url = url.format(ban=1, mute=1)
    response = post(Client(), url, body) if method == "post" else Client().delete(url)
    assert_error(response, 401, "not_authenticated")


@pytest.mark.parametrize(("kind", "model"), [("bans", Ban), ("mutes", Mute)])
def test_staff_create_and_lift_sanctions(staff, target, kind, model):
    make_room()
    response = post(staff, f"/api/moderation/{kind}", {"user": "target", "room": "lobby", "minutes": 30, "reason": "spam"})
    assert response.status_code == 201, response.content
    body = response.json()
    sanction = model.objects.get()
    assert body["id"] == sanction.pk
    shown = (body["user"], body["room"], body["reason"], body["created_by"], body["active"])
    assert shown == ("target", "lobby", "spam", "mod", True)
    assert body["ends_at"].endswith("+00:00") and body["lifted_at"] is None
    site_wide = post(staff, f"/api/moderation/{kind}", {"user": "target"}).json()
    assert (site_wide["room"], site_wide["ends_at"]) == (None, None)
    assert staff.delete(f"/api/moderation/{kind}/{body['id']}").status_code == 204
    assert staff.delete(f"/api/moderation/{kind}/{body['id']}").status_code == 204, "lifting twice is harmless"
    assert model.objects.get(pk=body["id"]).lifted_at is not None
    assert_error(staff.delete(f"/api/moderation/{kind}/999999"), 404, f"no_such_{kind[:-1]}")


@pytest.mark.parametrize("kind", ["bans", "mutes"])
def test_unknown_user_or_room_is_404(staff, target, kind):
    assert_error(post(staff, f"/api/moderation/{kind}", {"user": "nobody"}), 404, "no_such_user")
    assert_error(post(staff, f"/api/moderation/{kind}", {"user": "target", "room": "nowhere"}), 404, "no_such_room")


@pytest.mark.parametrize(
    "body",
    [
        "{",
        "[1]",
        {},
        {"user": ""},
        {"user": 5},
        {"user": "target", "room": 5},
        {"user": "target", "minutes": "ten"},
        {"user": "target", "minutes": True},
        {"user": "target", "minutes": 0},
        {"user": "target", "minutes": -5},
        {"user": "target", "minutes": 10**12},
        '{"user": "target", "minutes": NaN}',
        {"user": "target", "reason": 5},
        {"user": "target", "reason": "x" * 501},
    ],
)
@pytest.mark.parametrize("kind", ["bans", "mutes"])
def test_bad_sanction_bodies_are_400(staff, target, kind, body):
    response = post(staff, f"/api/moderation/{kind}", body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] in {"bad_json", "bad_request", "invalid"}
    assert not Ban.objects.exists() and not Mute.objects.exists()


def test_lock_answers_the_room_object_and_blocks_messages(staff, member):
    make_room()
    response = post(staff, "/api/rooms/lobby/lock", {"locked": True})
    assert response.status_code == 200
    assert response.json() == {
        "slug": "lobby",
        "title": "Lobby",
        "online": 0,
        "locked": True,
        "private": False,
        "direct": False,
        "assistant": False,
        "assistant_model": None,
    }
    assert_error(post(member, "/api/rooms/lobby/messages", {"content": "hi"}), 423, "room_locked")
    assert post(staff, "/api/rooms/lobby/lock", {"locked": False}).json()["locked"] is False
    assert post(member, "/api/rooms/lobby/messages", {"content": "hi"}).status_code == 201
    for body in [{}, {"locked": "yes"}, {"locked": 1}]:
        assert_error(post(staff, "/api/rooms/lobby/lock", body), 400, "invalid")
    assert_error(post(staff, "/api/rooms/nowhere/lock", {"locked": True}), 404, "no_such_room")


def test_notice_is_202_and_bad_content_400(staff):
    make_room()
    response = post(staff, "/api/rooms/lobby/notice", {"content": " Maintenance at noon "})
    assert response.status_code == 202
    assert ModerationAction.objects.get().detail == {"content": "Maintenance at noon"}
    for body in [{}, {"content": 5}, {"content": "  "}, {"content": "x" * 4001}]:
        assert_error(post(staff, "/api/rooms/lobby/notice", body), 400, "invalid")
    assert_error(post(staff, "/api/rooms/nowhere/notice", {"content": "hi"}), 404, "no_such_room")


def test_staff_remove_any_message_and_it_is_gone_from_rest(staff, member):
    room = make_room()
    [message] = make_messages(room, make_user("author"), 1)
    assert_error(member.delete(f"/api/rooms/lobby/messages/{message.pk}"), 403, "forbidden")
    assert staff.delete(f"/api/rooms/lobby/messages/{message.pk}").status_code == 204
    assert Message.objects.filter(pk=message.pk, removed_by__username="mod").exists()
    assert member.get("/api/rooms/lobby/messages").json() == {"messages": []}
    assert_error(staff.delete(f"/api/rooms/lobby/messages/{message.pk}"), 404, "no_such_message")
    assert_error(staff.delete("/api/rooms/nowhere/messages/1"), 404, "no_such_room")


def test_a_banned_user_cannot_post_over_rest_either(staff, member):
    make_room()
    assert post(staff, "/api/moderation/bans", {"user": "member", "room": "lobby"}).status_code == 201
    assert_error(post(member, "/api/rooms/lobby/messages", {"content": "hi"}), 403, "banned")
    assert not Message.objects.exists()


def test_a_muted_user_gets_403_muted_over_rest(staff, member):
    make_room()
    assert post(staff, "/api/moderation/mutes", {"user": "member", "minutes": 5}).status_code == 201
    assert_error(post(member, "/api/rooms/lobby/messages", {"content": "hi"}), 403, "muted")


# ---- reports -----------------------------------------------------------------------------
def test_users_report_a_message_once(member):
    room = make_room()
    [message] = make_messages(room, make_user("author"), 1)
    url = f"/api/rooms/lobby/messages/{message.pk}/report"
    response = post(member, url, {"reason": "insults"})
    assert response.status_code == 201
    report = Report.objects.get()
    assert response.json() == {
        "id": report.pk,
        "message": message.pk,
        "reason": "insults",
        "created_at": report.created_at.isoformat(),
    }
    assert_error(post(member, url, {"reason": "again"}), 409, "exists")
    assert post(client_for(make_user("other")), url, {}).status_code == 201, "the reason is optional"
    assert Report.objects.count() == 2


def test_reports_of_unknown_or_removed_messages_are_404_and_bad_bodies_400(member, staff):
    room = make_room()
    [message] = make_messages(room, make_user("author"), 1)
    assert_error(post(member, "/api/rooms/lobby/messages/999999/report", {}), 404, "no_such_message")
    assert_error(post(member, f"/api/rooms/nowhere/messages/{message.pk}/report", {}), 404, "no_such_room")
    make_room("other")
    assert_error(post(member, f"/api/rooms/other/messages/{message.pk}/report", {}), 404, "no_such_message")
    url = f"/api/rooms/lobby/messages/{message.pk}/report"
    assert_error(post(member, url, {"reason": 5}), 400, "invalid")
    assert_error(post(member, url, {"reason": "x" * 501}), 400, "invalid")
    assert_error(post(member, url, "{"), 400, "bad_json")
    assert staff.delete(f"/api/rooms/lobby/messages/{message.pk}").status_code == 204
    assert_error(post(member, url, {}), 404, "no_such_message")
    assert_error(Client().post(url), 401, "not_authenticated")
    assert not Report.objects.exists()
