"""The assistant page's sidebar API (streaming.conversations_api): each user's conversations are theirs only."""

from __future__ import annotations

import pytest
from django.test import Client

from streaming.models import Conversation, ConversationMessage
from tests.support.factories import make_user

pytestmark = pytest.mark.django_db


def signed_in(username: str) -> Client:
    client = Client()
    client.force_login(make_user(username))
    return client


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
