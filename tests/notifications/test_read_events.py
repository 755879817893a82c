"""The notification stream's `read` events: what is marked read on one device is reported
to the user's every open stream, once, without moving Last-Event-ID."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from notifications.services import notifications_mark_read
from tests.support.asgi_client import BearerClient
from tests.support.factories import make_token, make_user
from tests.support.notifications import next_events, notify

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def rhea(transactional_db):
    user = make_user("rhea")
    return user, BearerClient(make_token(user)), BearerClient(make_token(user))


async def test_marking_read_is_reported_on_every_open_stream_once(rhea):
    user, phone, laptop = rhea
    older = await notify(user, "dm", room="dm-a-b", message_id=3, content="psst")  # listed, never streamed
    streams = [await client.get("/api/notifications/stream") for client in (phone, laptop)]
    await asyncio.sleep(0.1)
    mention = await notify(user, "mention", room="lobby", message_id=7, content="hi @rhea")
    for stream in streams:
        [event] = await next_events(stream, 1)
        assert event["event"] == "mention" and event["id"] == str(mention.pk)

    body = json.dumps({"ids": [older.pk, mention.pk]})
    marked = await phone.post("/api/notifications/read", body, content_type="application/json")
    assert marked.status_code == 200 and marked.json() == {"marked": 2}
    for stream in streams:
        [event] = await next_events(stream, 1)
        assert event == {"comments": [], "event": "read", "data": {"ids": [older.pk, mention.pk]}}  # no id

    # Marking again changes nothing and says nothing; the next read is reported alone.
    await database_sync_to_async(notifications_mark_read)(user_id=user.pk, ids=[mention.pk])
    last = await notify(user, "task", task_id=1, status="succeeded")
    await database_sync_to_async(notifications_mark_read)(user_id=user.pk, up_to=last.pk)
    for stream in streams:
        events = await next_events(stream, 2)
        assert [(e["event"], e.get("id"), e["data"]) for e in events] == [
            ("task", str(last.pk), {"task_id": 1, "status": "succeeded"}),
            ("read", None, {"ids": [last.pk]}),
        ]
