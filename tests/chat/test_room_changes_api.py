"""The REST side of room changes (docs/protocol.md, "Room changes"): editing, restoring,
reactions, read markers and unread counts, replies and older pages; every refusal."""

import json
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.test import Client
from django.utils import timezone

from chat.models import Message, ReadMarker, Room, RoomChange
from chat.services.moderation import message_remove, mute_create
from chat.services.rooms import dm_open
from tests.support.factories import make_messages, make_room, make_token, make_user

pytestmark = pytest.mark.django_db
THUMBS = quote("\U0001f44d")


def client(user) -> Client:
    return Client(headers={"Authorization": f"Bearer {make_token(user)}"})


def send(api, method, url, body=None):
    return api.generic(method, url, "" if body is None else json.dumps(body), content_type="application/json")


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code, response.json()


@pytest.fixture
def world():
    room, author, other, staff = make_room(), make_user("author"), make_user("other"), make_user("mod", staff=True)
    [message] = make_messages(room, author, 1)
    return room, message, client(author), client(other), client(staff)


def test_patch_edits_and_answers_the_message(world):
    room, message, author, other, staff = world
    url = f"/api/rooms/lobby/messages/{message.pk}"
    response = send(author, "PATCH", url, {"content": " fixed "})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["type"], body["id"], body["content"], body["seq"]) == ("message", message.pk, "fixed", 1) and body["edited_at"]
    assert_error(send(other, "PATCH", url, {"content": "mine"}), 403, "forbidden")
    assert_error(send(author, "PATCH", url, {"content": "x" * 4001}), 400, "too_long")
    assert_error(send(author, "PATCH", url, {}), 400, "bad_frame")
    assert_error(send(author, "PATCH", "/api/rooms/lobby/messages/999999", {"content": "x"}), 404, "no_such_message")
    assert_error(send(author, "PATCH", f"/api/rooms/nowhere/messages/{message.pk}", {"content": "x"}), 404, "no_such_room")
    Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - timedelta(hours=2))
    assert_error(send(author, "PATCH", url, {"content": "late"}), 403, "edit_window_passed")
    assert send(staff, "PATCH", url, {"content": "by staff"}).json()["content"] == "by staff"
    fresh = make_messages(room, message.user, 1)[-1]
    mute_create(user=message.user, minutes=5)
    assert_error(send(author, "PATCH", f"/api/rooms/lobby/messages/{fresh.pk}", {"content": "muted"}), 403, "muted")
    assert [kind for kind in RoomChange.objects.filter(room=room).values_list("kind", flat=True)] == [
        "created",
        "edited",
        "edited",
        "created",
    ]


def test_delete_by_author_and_a_locked_room(world):
    _room, message, author, _other, staff = world
    url = f"/api/rooms/lobby/messages/{message.pk}"
    assert send(staff, "POST", "/api/rooms/lobby/lock", {"locked": True}).status_code == 200
    assert_error(send(author, "DELETE", url), 423, "room_locked")
    assert_error(send(author, "PATCH", url, {"content": "x"}), 423, "room_locked")
    assert_error(send(author, "PUT", f"{url}/reactions/{THUMBS}"), 423, "room_locked")
    assert send(staff, "POST", "/api/rooms/lobby/lock", {"locked": False}).status_code == 200
    assert send(author, "DELETE", url).status_code == 204
    assert Message.objects.get(pk=message.pk).removed_at is not None


def test_restore_is_staff_only_and_answers_the_message(world, django_capture_on_commit_callbacks, published):
    room, message, author, _other, staff = world
    message_remove(message=message, removed_by=None)
    url = f"/api/rooms/lobby/messages/{message.pk}/restore"
    assert_error(send(author, "POST", url), 403, "forbidden")
    assert_error(send(staff, "POST", "/api/rooms/lobby/messages/999999/restore"), 404, "no_such_message")
    with django_capture_on_commit_callbacks(execute=True):
        response = send(staff, "POST", url)
    assert response.status_code == 200 and response.json()["id"] == message.pk and response.json()["content"] == "m0"
    assert [data.split("\n")[0] for _, data in published] == ["c 3 0"]
    assert '"type":"message_restored"' in published[0][1]
    assert send(staff, "POST", url).status_code == 200, "restoring a visible message: the message, no change"
    assert Room.objects.get(pk=room.pk).seq == 3


def test_reactions_put_and_delete(world):
    _room, message, author, other, _staff = world
    url = f"/api/rooms/lobby/messages/{message.pk}/reactions"
    assert send(other, "PUT", f"{url}/{THUMBS}").json() == {"reactions": {"\U0001f44d": ["other"]}}
    assert send(author, "PUT", f"{url}/{THUMBS}").json() == {"reactions": {"\U0001f44d": ["other", "author"]}}
    assert send(other, "DELETE", f"{url}/{THUMBS}").json() == {"reactions": {"\U0001f44d": ["author"]}}
    assert_error(send(other, "PUT", f"{url}/{quote('x')}"), 400, "bad_emoji")
    assert_error(send(other, "PUT", f"/api/rooms/lobby/messages/999999/reactions/{THUMBS}"), 404, "no_such_message")
    assert_error(send(other, "PATCH", f"{url}/{THUMBS}"), 405, "method_not_allowed")


def test_reading_moves_the_marker_forward_answers_204_and_tells_every_socket(
    world, django_capture_on_commit_callbacks, published
):
    room, message, _author, other, _staff = world
    newer = make_messages(room, message.user, 2)[-1]
    with django_capture_on_commit_callbacks(execute=True):
        response = send(other, "POST", "/api/rooms/lobby/read", {"id": newer.pk})
    assert response.status_code == 204 and response.content == b""
    reader = ReadMarker.objects.get(room=room)
    assert reader.message_id == newer.pk
    assert published == [(f"user.{reader.user_id}", f'r {room.pk} -\n{{"type":"read","user":"other","id":{newer.pk}}}')]
    assert send(other, "POST", "/api/rooms/lobby/read", {"id": message.pk}).status_code == 204
    assert ReadMarker.objects.get(room=room).message_id == newer.pk, "forward only"
    assert send(other, "POST", "/api/rooms/lobby/read", {"last_id": newer.pk}).status_code == 204, "the older field name"
    for body in ({}, {"id": "7"}, {"id": True}, {"id": 0}, {"id": 2**63}):
        assert_error(send(other, "POST", "/api/rooms/lobby/read", body), 400, "invalid")
    elsewhere = make_messages(make_room("other"), message.user, 1)[0]
    assert_error(send(other, "POST", "/api/rooms/lobby/read", {"id": elsewhere.pk}), 404, "not_found")


def test_unread_counts_in_the_room_list_for_public_rooms_and_dms(world):
    room, message, author, other, _staff = world
    make_messages(room, message.user, 2)
    dm, _ = dm_open(user=message.user, other=other.get("/api/rooms/").wsgi_request.user)
    make_messages(dm, message.user, 1)

    def unread(api):
        return {r["slug"]: r["unread"] for r in api.get("/api/rooms/").json()["rooms"]}

    assert unread(other) == {"lobby": 3, dm.slug: 1}
    assert unread(author) == {"lobby": 0, dm.slug: 0}, "one's own messages are never unread"
    send(other, "POST", "/api/rooms/lobby/read", {"id": message.pk})
    assert unread(other)["lobby"] == 2


def test_replies_over_rest(world):
    _room, message, _author, other, _staff = world
    response = send(other, "POST", "/api/rooms/lobby/messages", {"content": "re", "reply_to": message.pk})
    assert response.status_code == 201 and response.json()["reply_to"] == message.pk
    assert_error(send(other, "POST", "/api/rooms/lobby/messages", {"content": "re", "reply_to": 999999}), 404, "not_found")
    assert_error(send(other, "POST", "/api/rooms/lobby/messages", {"content": "re", "reply_to": "1"}), 400, "invalid")


def test_older_pages_with_before(world):
    room, message, _author, other, _staff = world
    messages = make_messages(room, message.user, 5)
    page = other.get(f"/api/rooms/lobby/messages?before={messages[4].pk}&limit=2").json()["messages"]
    assert [m["id"] for m in page] == [messages[2].pk, messages[3].pk]
    for query in ("before=x", "before=0", "limit=0", "limit=201", "limit=ten", f"before={messages[4].pk}&limit=300"):
        assert_error(other.get(f"/api/rooms/lobby/messages?{query}"), 400, "invalid")
