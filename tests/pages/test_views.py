"""The pages' server side, in process: who may see what, the sidebar's JSON, static files."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from streaming.models import Conversation, ConversationMessage
from tasks.models import Task
from tests.support.factories import make_room, make_user

pytestmark = pytest.mark.django_db


def signed_in(username: str) -> Client:
    client = Client()
    client.force_login(make_user(username))
    return client


def test_pages_need_a_login_and_render_for_people():
    make_room("lobby", "Lobby <script>")
    anonymous = Client()
    for path in ("/rooms/lobby/", "/assistant/", "/tasks/1/"):
        response = anonymous.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    client = signed_in("alice")
    index = client.get("/")
    assert b"Lobby &lt;script&gt;" in index.content and b"Lobby <script>" not in index.content
    room = client.get("/rooms/lobby/")
    assert room.status_code == 200 and b'data-slug="lobby"' in room.content and b'<label for="message"' in room.content
    assert client.get("/rooms/nope/").status_code == 404
    assistant = client.get("/assistant/")
    assert b">Stop</button>" in assistant.content and b">Send</button>" in assistant.content


def test_a_task_page_is_its_owners_only():
    room = make_room("plans", "Plans")
    owner, other = signed_in("owner"), signed_in("other")
    task = Task.objects.create(owner_id=owner.session["_auth_user_id"], kind="summarize_room", params={"room": room.slug})
    page = owner.get(f"/tasks/{task.pk}/")
    assert page.status_code == 200
    assert b"Summary of Plans" in page.content and b'role="progressbar"' in page.content and b'aria-valuenow="0"' in page.content
    assert other.get(f"/tasks/{task.pk}/").status_code == 404


def test_conversations_list_and_detail_are_the_owners_only():
    alice, bob = signed_in("alice"), signed_in("bob")
    alice_id = int(alice.session["_auth_user_id"])
    older = Conversation.objects.create(owner_id=alice_id, title="older")
    newer = Conversation.objects.create(owner_id=alice_id, title="newer")
    Conversation.objects.filter(pk=older.pk).update(updated_at=newer.updated_at.replace(year=2000))
    ConversationMessage.objects.create(conversation=newer, role="user", content="hi <b>")
    ConversationMessage.objects.create(
        conversation=newer, role="assistant", content="hi <b> ", finish_reason="stop", stream_id="ab" * 16
    )

    listed = alice.get("/api/conversations/").json()["conversations"]
    assert [c["title"] for c in listed] == ["newer", "older"]
    assert set(listed[0]) == {"id", "title", "created_at", "updated_at"}
    detail = alice.get(f"/api/conversations/{newer.pk}").json()
    assert detail["id"] == str(newer.pk) and detail["title"] == "newer"
    assert [(m["role"], m["content"], m["finish_reason"]) for m in detail["messages"]] == [
        ("user", "hi <b>", None),
        ("assistant", "hi <b> ", "stop"),
    ]
    assert detail["messages"][1]["stream_id"] == "ab" * 16

    assert bob.get("/api/conversations/").json() == {"conversations": []}
    missing = bob.get(f"/api/conversations/{newer.pk}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert Client().get("/api/conversations/").status_code == 401
    assert alice.post("/api/conversations/").status_code in (403, 405)  # CSRF first, else the method


@override_settings(DEBUG=False)
def test_static_files_are_served_without_a_proxy_in_front():
    response = Client().get("/static/chat/room.js")
    assert response.status_code == 200 and response["Content-Type"].startswith(("text/javascript", "application/javascript"))
    assert b"last_id" in b"".join(response.streaming_content)  # type: ignore[attr-defined]
    assert Client().get("/static/chat/../../manage.py").status_code == 404
    assert Client().get("/static/chat/nothing-here.js").status_code == 404
