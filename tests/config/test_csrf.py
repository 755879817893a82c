"""CSRF (docs/security.md): every state-changing request authenticated by the session
cookie needs Django's CSRF token and a same-site Origin; bearer requests need neither,
because a browser never adds an Authorization header on its own."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from chat.models import Ban, Message, Mute, Reaction, ReadMarker, Report, Room, RoomMember
from chat.services.messages import message_create
from chat.services.moderation import ban_create
from chat.services.rooms import member_add, room_create
from notifications.models import Notification
from notifications.services import notification_create
from streaming.models import Conversation
from tasks.models import Task
from tests.support.factories import make_room, make_token, make_user

HOSTILE_ORIGIN = "https://evil.example"


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: object  # a valid body: without CSRF protection this call would succeed
    control_path: str  # with the token: a call that gets past CSRF and is refused for its content
    control_body: object
    control_status: int
    staff: bool = False


THUMBS = "%F0%9F%91%8D"  # the first of CHAT_REACTIONS, as a URL carries it
CALLS = [
    Call("POST", "/api/rooms/", {"slug": "new", "title": "New"}, "/api/rooms/", {"slug": "Bad Slug"}, 400),
    Call("POST", "/api/rooms/lobby/messages", {"content": "forged"}, "/api/rooms/lobby/messages", {}, 400),
    Call("DELETE", "/api/rooms/lobby/messages/{message}", None, "/api/rooms/lobby/messages/999999", None, 404),
    Call("POST", "/api/rooms/lobby/messages/{message}/report", {}, "/api/rooms/lobby/messages/999999/report", {}, 404),
    Call("POST", "/api/rooms/club/members", {"user": "carl"}, "/api/rooms/club/members", {"user": "nobody"}, 400),
    Call("DELETE", "/api/rooms/club/members/bob", None, "/api/rooms/club/members/nobody", None, 404),
    Call("POST", "/api/rooms/lobby/read", {"id": 1}, "/api/rooms/club/read", {"id": -1}, 400),
    Call("PATCH", "/api/rooms/lobby/messages/{message}", {"content": "forged"}, "/api/rooms/lobby/messages/999999", {}, 404),
    Call(
        "PUT",
        f"/api/rooms/lobby/messages/{{message}}/reactions/{THUMBS}",
        None,
        f"/api/rooms/lobby/messages/999999/reactions/{THUMBS}",
        None,
        404,
    ),
    Call(
        "POST",
        "/api/rooms/lobby/messages/{message}/restore",
        None,
        "/api/rooms/lobby/messages/999999/restore",
        None,
        404,
        staff=True,
    ),
    Call("POST", "/api/dms/", {"user": "bob"}, "/api/dms/", {"user": "nobody"}, 400),
    Call("POST", "/api/assistant/stream", {"message": "hi"}, "/api/assistant/stream", {}, 400),
    Call(
        "POST",
        "/v1/chat/completions",
        {"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
        "/v1/chat/completions",
        {},
        400,
    ),
    Call("POST", "/api/tasks/", {"kind": "countdown", "steps": 1, "interval_ms": 0}, "/api/tasks/", {"kind": "nope"}, 400),
    Call("DELETE", "/api/tasks/{task}", None, "/api/tasks/999999", None, 404),
    Call("POST", f"/api/streams/{'a' * 32}/cancel", None, f"/api/streams/{'a' * 32}/cancel", None, 404),
    Call("POST", "/api/notifications/read", {"up_to": 10**9}, "/api/notifications/read", {}, 400),
    Call("POST", "/api/moderation/bans", {"user": "bob"}, "/api/moderation/bans", {"user": ""}, 400, staff=True),
    Call("POST", "/api/moderation/mutes", {"user": "bob"}, "/api/moderation/mutes", {"user": ""}, 400, staff=True),
    Call("DELETE", "/api/moderation/bans/{ban}", None, "/api/moderation/bans/999999", None, 404, staff=True),
    Call("POST", "/api/rooms/lobby/lock", {"locked": True}, "/api/rooms/lobby/lock", {"locked": "x"}, 400, staff=True),
    Call("POST", "/api/rooms/lobby/notice", {"content": "forged"}, "/api/rooms/lobby/notice", {"content": 5}, 400, staff=True),
]


@pytest.fixture
def world(db, settings) -> dict[str, int]:
    """alice (owner of the private room club, author of a message in lobby), bob (in club),
    carl, mod (staff); a task of alice's, a notification for her, a ban of carl's."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast: hashing is not under test
    alice, bob, mod = make_user("alice"), make_user("bob"), make_user("mod", staff=True)
    carl = make_user("carl")
    lobby = make_room()
    club = room_create(slug="club", title="Club", created_by=alice, private=True)
    member_add(room=club, user=bob, added_by=alice)
    message = message_create(room=lobby, user=alice, content="mine")
    task = Task.objects.create(owner=alice, kind="countdown", params={"steps": 1, "interval_ms": 0})
    notification_create(user_id=alice.pk, kind="mention", data={"room": "lobby"})
    ban = ban_create(user=carl, room=None, minutes=None, reason="", created_by=mod)
    return {"message": message.pk, "task": task.pk, "ban": ban.pk}


def state() -> tuple:
    """Everything the calls above could change."""
    return (
        Room.objects.count(),
        list(Message.objects.values_list("pk", "removed_at", "content")),
        Reaction.objects.count(),
        Report.objects.count(),
        list(RoomMember.objects.order_by("pk").values_list("user__username", "role")),
        list(ReadMarker.objects.order_by("pk").values_list("user__username", "message_id")),
        list(Task.objects.values_list("pk", "status", "cancel_requested")),
        Notification.objects.filter(read_at__isnull=True).count(),
        list(Ban.objects.values_list("pk", "lifted_at")),
        Mute.objects.count(),
        list(Room.objects.values_list("slug", "locked")),
        Conversation.objects.count(),
    )


def session_browser(username: str) -> Client:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(User.objects.get(username=username))
    browser.get("/")  # a page, as a browser would have loaded first: it sets the csrftoken cookie
    return browser


def send(client: Client, method: str, path: str, body: object, **extra):
    data = "" if body is None else json.dumps(body)
    return client.generic(method, path, data, content_type="application/json", **extra)


@pytest.mark.parametrize("call", CALLS, ids=lambda call: f"{call.method} {call.path}")
def test_session_requests_without_the_csrf_token_change_nothing(world, call: Call):
    browser = session_browser("mod" if call.staff else "alice")
    before = state()
    refused = send(browser, call.method, call.path.format(**world), call.body)
    assert refused.status_code == 403, refused.content
    assert refused.json()["error"]["code"] == "csrf_failed" and "X-CSRFToken" in refused.json()["error"]["detail"]
    assert state() == before
    # The same session with the token gets past CSRF, to the view's own answer.
    token = browser.cookies[settings.CSRF_COOKIE_NAME].value
    control = send(browser, call.method, call.control_path, call.control_body, headers={"X-CSRFToken": token})
    assert control.status_code == call.control_status, control.content


@pytest.mark.parametrize("call", CALLS, ids=lambda call: f"{call.method} {call.path}")
def test_calls_without_any_credential_get_401_saying_what_to_send(world, call: Call):
    before = state()
    anonymous = Client(enforce_csrf_checks=True)
    refused = send(anonymous, call.method, call.path.format(**world), call.body)
    assert refused.status_code == 401, refused.content
    error = refused.json()["error"]
    if call.path.startswith("/v1/"):
        assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    else:
        assert error["code"] == "not_authenticated" and "Bearer" in error["detail"]
    assert state() == before


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("application/x-www-form-urlencoded", "slug=pwned&title=pwned"),
        ("multipart/form-data; boundary=x", '--x\r\nContent-Disposition: form-data; name="slug"\r\n\r\npwned\r\n--x--\r\n'),
        ("text/plain", '{"slug": "pwned", "title": "pwned"}'),  # the classic JSON-over-a-form trick
    ],
)
def test_a_cross_site_form_post_with_the_session_cookie_is_refused(world, content_type, data):
    """What a hostile page can make a signed-in browser send: a form POST with the
    cookies and its own Origin. No token, and even with one the Origin is wrong."""
    browser = session_browser("alice")
    for headers in ({"Origin": HOSTILE_ORIGIN}, {"Origin": HOSTILE_ORIGIN, "X-CSRFToken": browser.cookies["csrftoken"].value}):
        response = browser.generic("POST", "/api/rooms/", data, content_type=content_type, headers=headers)
        assert response.status_code == 403, response.content
    assert not Room.objects.filter(slug="pwned").exists()


def test_session_cookies_are_http_only_and_same_site_lax(world):
    """Lax: browsers do not even send the session on a cross-site POST; HttpOnly: page
    script (an XSS) cannot read it. The CSRF cookie is readable on purpose (pages send it back)."""
    response = Client().post("/accounts/login/", {"username": "alice", "password": "pw-for-tests-only"})
    assert response.status_code == 302
    session = response.cookies[settings.SESSION_COOKIE_NAME]
    assert session["httponly"] is True and session["samesite"] == "Lax"
    assert settings.CSRF_COOKIE_SAMESITE == "Lax"


def test_login_and_logout_need_the_token_too(world):
    """No login CSRF (signing a victim into the attacker's account) and no forced logout."""
    anonymous = Client(enforce_csrf_checks=True)
    assert anonymous.post("/accounts/login/", {"username": "alice", "password": "pw-for-tests-only"}).status_code == 403
    signup = {"username": "newbie", "password1": "a-long-Passphrase-9", "password2": "a-long-Passphrase-9"}
    assert anonymous.post("/accounts/signup/", signup).status_code == 403
    browser = session_browser("alice")
    assert browser.post("/accounts/logout/").status_code == 403
    assert browser.get("/accounts/logout/").status_code == 405
    assert browser.get("/api/rooms/").status_code == 200, "still signed in"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/rooms/", {"slug": "scripted", "title": "Scripted"}, 201),
        ("/api/tasks/", {"kind": "nope"}, 400),
        ("/api/assistant/stream", {}, 400),
        ("/v1/chat/completions", {}, 400),
    ],
)
def test_bearer_requests_need_no_csrf_token(world, path, body, status):
    script = Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {make_token(User.objects.get(username='bob'))}"})
    response = send(script, "POST", path, body, headers={"Origin": HOSTILE_ORIGIN})
    assert response.status_code == status, response.content
