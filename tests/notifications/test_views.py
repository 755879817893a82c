"""Notifications in process: the stream, resume, the unread list, marking read."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from tests.support.asgi_client import BearerClient
from tests.support.factories import make_token, make_user
from tests.support.notifications import next_events, notify

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def nina(transactional_db):
    user = make_user("nina")
    return user, BearerClient(make_token(user))


async def test_live_notifications_arrive_on_the_stream(nina):
    user, client = nina
    await notify(user, "moderation", action="old")  # before the stream: not replayed without Last-Event-ID
    stream = await client.get("/api/notifications/stream")
    assert stream["Content-Type"].startswith("text/event-stream")
    await asyncio.sleep(0.1)
    created = await notify(user, "mention", room="lobby", **{"from": "sam"}, message_id=7, content="hi @nina")
    [event] = await next_events(stream, 1)
    assert event == {
        "comments": [],
        "event": "mention",
        "data": {"room": "lobby", "from": "sam", "message_id": 7, "content": "hi @nina"},
        "id": str(created.pk),
    }


async def test_last_event_id_replays_what_was_missed(nina):
    user, client = nina
    first = await notify(user, "task", task_id=1, status="succeeded")
    await notify(user, "task", task_id=2, status="failed")
    await notify(user, "dm", room="dm-a-b", **{"from": "x"}, message_id=3, content="psst")
    stream = await client.get("/api/notifications/stream", headers={"Last-Event-ID": str(first.pk)})
    events = await next_events(stream, 2)
    assert [e["event"] for e in events] == ["task", "dm"]


@pytest.mark.parametrize("how", ["header", "query"])
@pytest.mark.parametrize("last", ["x", "-1", "1.5", "\u00b2", "9" * 30, "abc:3"])
async def test_a_malformed_last_event_id_is_a_400_that_shows_a_valid_one(nina, last, how):
    """The stream never ends (so never a 204), but a position it cannot read is not
    silently taken as "live only"."""
    _, client = nina
    if how == "header":
        refused = await client.get("/api/notifications/stream", headers={"Last-Event-ID": last})
    else:
        refused = await client.get("/api/notifications/stream", {"last_event_id": last})
    assert refused.status_code == 400, f"{last!r} was taken as a position"
    error = refused.json()["error"]
    assert error["code"] == "invalid_last_event_id" and "'42'" in error["detail"], error


async def test_unread_list_and_mark_read(nina):
    user, client = nina
    one = await notify(user, "task", task_id=1)
    two = await notify(user, "task", task_id=2)
    other = await database_sync_to_async(make_user)("someone")
    await notify(other, "task", task_id=3)
    listed = (await client.get("/api/notifications/")).json()["notifications"]
    assert [n["id"] for n in listed] == [one.pk, two.pk] and listed[0]["read"] is False
    assert [n["id"] for n in (await client.get(f"/api/notifications/?after={one.pk}")).json()["notifications"]] == [two.pk]
    marked = await client.post("/api/notifications/read", json.dumps({"ids": [one.pk]}), content_type="application/json")
    assert marked.json() == {"marked": 1}
    assert [n["id"] for n in (await client.get("/api/notifications/")).json()["notifications"]] == [two.pk]
    await client.post("/api/notifications/read", json.dumps({"up_to": two.pk}), content_type="application/json")
    assert (await client.get("/api/notifications/")).json() == {"notifications": []}


@pytest.mark.parametrize("body", ["{", "[]", "{}", '{"ids": "1"}', '{"up_to": true}'])
async def test_bad_mark_read_bodies(nina, body):
    _, client = nina
    response = await client.post("/api/notifications/read", body, content_type="application/json")
    assert response.status_code == 400


async def test_bad_after_and_no_login():
    from django.test import AsyncClient

    assert (await AsyncClient().get("/api/notifications/")).status_code == 401
