import json

import pytest
from django.test import Client, override_settings

from chat.models import Message, Room
from tests.support.factories import make_messages, make_room, make_token, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    token = make_token(make_user())
    return Client(headers={"Authorization": f"Bearer {token}"})


def post(client, url, body, **extra):
    return client.post(
        url, data=body if isinstance(body, (str, bytes)) else json.dumps(body), content_type="application/json", **extra
    )


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == code, response.json()
    assert response.json()["error"]["detail"]


def test_rooms_need_authentication_with_a_json_401():
    assert_error(Client().get("/api/rooms/"), 401, "not_authenticated")
    assert_error(Client(headers={"Authorization": "Bearer rt_forged"}).get("/api/rooms/"), 401, "not_authenticated")
    assert_error(Client(headers={"Authorization": "Bearer "}).get("/api/rooms/"), 401, "not_authenticated")


def test_create_and_list_rooms(api):
    response = post(api, "/api/rooms/", {"slug": "general", "title": "General"})
    assert response.status_code == 201
    assert response.json() == {
        "slug": "general",
        "title": "General",
        "online": 0,
        "locked": False,
        "private": False,
        "direct": False,
        "assistant": False,
        "assistant_model": None,
    }
    assert api.get("/api/rooms/").json() == {
        "rooms": [
            {
                "slug": "general",
                "title": "General",
                "online": 0,
                "locked": False,
                "private": False,
                "direct": False,
                "assistant": False,
                "assistant_model": None,
                "unread": 0,
            }
        ]
    }
    assert_error(post(api, "/api/rooms/", {"slug": "general", "title": "Again"}), 409, "exists")


@pytest.mark.parametrize(
    "body",
    [
        {"slug": "Bad Slug", "title": "x"},
        {"slug": "", "title": "x"},
        {"slug": 5, "title": "x"},
        {"title": "x"},
        {"slug": "ok", "title": ""},
    ],
)
def test_invalid_rooms_are_400(api, body):
    assert_error(post(api, "/api/rooms/", body), 400, "invalid")
    assert Room.objects.count() == 0


@pytest.mark.parametrize(("body", "code"), [("{", "bad_json"), ("[1]", "bad_request"), (b"\xff\xfe", "bad_json")])
def test_malformed_bodies_are_400_not_500(api, body, code):
    assert_error(post(api, "/api/rooms/", body), 400, code)


def test_post_and_list_messages(api):
    room = make_room()
    response = post(api, "/api/rooms/lobby/messages", {"content": " hi ", "nonce": "abc"})
    assert response.status_code == 201
    body = response.json()
    assert body["type"] == "message" and body["content"] == "hi" and body["nonce"] == "abc" and body["room"] == "lobby"
    assert Message.objects.get(pk=body["id"]).room == room
    listed = api.get("/api/rooms/lobby/messages").json()["messages"]
    assert listed == [body]


def test_list_messages_after_and_limit(api):
    room, user = make_room(), make_user("bob")
    messages = make_messages(room, user, 10)
    listed = api.get(f"/api/rooms/lobby/messages?after={messages[3].pk}&limit=2").json()["messages"]
    assert [m["id"] for m in listed] == [messages[4].pk, messages[5].pk]
    for query in ["limit=0", "limit=201", "limit=x", "after=-1", "after=abc"]:
        assert_error(api.get(f"/api/rooms/lobby/messages?{query}"), 400, "invalid")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"content": ""}, "empty"),
        ({"content": "x" * 4001}, "too_long"),
        ({}, "bad_frame"),
        ({"content": ["a"]}, "bad_frame"),
        ({"content": "a", "nonce": 1}, "bad_frame"),
    ],
)
def test_bad_messages_are_400(api, body, code):
    make_room()
    assert_error(post(api, "/api/rooms/lobby/messages", body), 400, code)


def test_unknown_room_and_unknown_path_are_json_404(api):
    assert_error(api.get("/api/rooms/nope/messages"), 404, "no_such_room")
    assert_error(api.get("/api/no-such-endpoint"), 404, "not_found")
    assert_error(api.put("/api/rooms/"), 405, "method_not_allowed")


@override_settings(CHAT_RATE_LIMIT=2, CHAT_RATE_WINDOW=30)
def test_rate_limit_is_429_with_retry_after(api):
    make_room()
    for _ in range(2):
        assert post(api, "/api/rooms/lobby/messages", {"content": "hi"}).status_code == 201
    response = post(api, "/api/rooms/lobby/messages", {"content": "hi"})
    assert_error(response, 429, "rate_limited")
    assert 1 <= int(response["Retry-After"]) <= 30


def test_locked_room_is_423(api):
    Room.objects.create(slug="lobby", title="Lobby", locked=True)
    assert_error(post(api, "/api/rooms/lobby/messages", {"content": "hi"}), 423, "room_locked")


def test_delete_message_by_author_or_staff_only(api):
    room, bob = make_room(), make_user("bob")
    [message] = make_messages(room, bob, 1)
    assert_error(api.delete(f"/api/rooms/lobby/messages/{message.pk}"), 403, "forbidden")
    bob_client = Client(headers={"Authorization": f"Bearer {make_token(bob)}"})
    assert bob_client.delete(f"/api/rooms/lobby/messages/{message.pk}").status_code == 204
    assert_error(bob_client.delete(f"/api/rooms/lobby/messages/{message.pk}"), 404, "no_such_message")
    assert api.get("/api/rooms/lobby/messages").json() == {"messages": []}


def test_session_posts_need_a_csrf_token_bearer_posts_do_not():
    user = make_user()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    assert_error(post(browser, "/api/rooms/", {"slug": "x", "title": "x"}), 403, "csrf_failed")
    browser.get("/accounts/login/")
    response = post(
        browser, "/api/rooms/", {"slug": "x", "title": "x"}, headers={"X-CSRFToken": browser.cookies["csrftoken"].value}
    )
    assert response.status_code == 201
    scripted = Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {make_token(user)}"})
    assert post(scripted, "/api/rooms/", {"slug": "y", "title": "y"}).status_code == 201


@override_settings(CORS_ALLOWED_ORIGINS=["https://app.example"])
def test_cors_only_for_listed_origins(api):
    allowed = api.get("/api/rooms/", headers={"Origin": "https://app.example"})
    assert allowed["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Access-Control-Allow-Origin" not in api.get("/api/rooms/", headers={"Origin": "https://evil.example"})
    preflight = Client().options(
        "/api/rooms/", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 200
    assert preflight["Access-Control-Allow-Origin"] == "https://app.example"
    allowed_headers = preflight["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed_headers and "last-event-id" in allowed_headers
    assert "Access-Control-Allow-Origin" not in Client().options(
        "/api/rooms/", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in Client().get("/", headers={"Origin": "https://app.example"}), "pages: never"
