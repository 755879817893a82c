"""The task API with the in-process runner (no Redis, no task worker)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import pytest_asyncio
from channels.db import database_sync_to_async
from django.test import override_settings

from notifications.models import Notification
from tasks.models import Task
from tasks.runner import _local_runners
from tests.asgi_client import BearerClient, read_all
from tests.factories import make_messages, make_room, make_token, make_user
from tests.streaming.sse_parsing import parse_events

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest_asyncio.fixture(autouse=True)
async def _stop_runner():
    yield
    runner = _local_runners.get(asyncio.get_running_loop())
    if runner is not None:
        await runner.close()


@pytest.fixture
def client(transactional_db):
    return BearerClient(make_token(make_user("tess")))


async def create(client, **body):
    return await client.post("/api/tasks/", json.dumps(body), content_type="application/json")


async def test_countdown_streams_progress_then_complete(client):
    response = await create(client, kind="countdown", steps=4, interval_ms=10)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["events_url"] == f"/api/tasks/{body['id']}/events"
    events = parse_events(await read_all(await client.get(body["events_url"])))
    assert [e["id"] for e in events] == [str(i) for i in range(1, len(events) + 1)], "ids count from 1"
    assert events[0]["data"] == {"progress": 0, "status": "queued", "message": "queued"}
    assert [e["data"]["progress"] for e in events if e["event"] == "progress"][-4:] == [25, 50, 75, 100]
    assert events[-1] == {
        "comments": [],
        "event": "complete",
        "data": {"status": "succeeded", "result": {"steps": 4}},
        "id": events[-1]["id"],
    }
    state = (await client.get(f"/api/tasks/{body['id']}")).json()
    assert (state["status"], state["progress"], state["result"]) == ("succeeded", 100, {"steps": 4})
    notification = await database_sync_to_async(Notification.objects.get)(kind="task")
    assert notification.data["status"] == "succeeded"


async def test_last_event_id_resumes_after_that_event(client):
    task_id = (await create(client, kind="countdown", steps=3, interval_ms=1)).json()["id"]
    everything = parse_events(await read_all(await client.get(f"/api/tasks/{task_id}/events")))
    resumed = parse_events(await read_all(await client.get(f"/api/tasks/{task_id}/events", headers={"Last-Event-ID": "2"})))
    assert resumed == everything[2:]


async def test_delete_cancels_a_running_task_within_a_second(client):
    task_id = (await create(client, kind="countdown", steps=1000, interval_ms=20)).json()["id"]
    stream = await client.get(f"/api/tasks/{task_id}/events")
    await asyncio.sleep(0.3)
    asked = time.monotonic()
    assert (await client.delete(f"/api/tasks/{task_id}")).status_code == 202
    events = parse_events(await read_all(stream))
    assert time.monotonic() - asked < 1.5
    assert events[-1]["event"] == "failed" and events[-1]["data"]["status"] == "cancelled"
    assert (await client.get(f"/api/tasks/{task_id}")).json()["status"] == "cancelled"


async def test_tasks_belong_to_their_creator(client):
    task_id = (await create(client, kind="countdown", steps=1, interval_ms=1)).json()["id"]
    other = BearerClient(await database_sync_to_async(lambda: make_token(make_user("other")))())
    for response in (
        await other.get(f"/api/tasks/{task_id}"),
        await other.get(f"/api/tasks/{task_id}/events"),
        await other.delete(f"/api/tasks/{task_id}"),
    ):
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert (await client.get("/api/tasks/999999")).status_code == 404


@pytest.mark.parametrize(
    ("body", "status"), [("{", 400), ("[]", 400), ('{"kind":"nope"}', 400), ('{"kind":"summarize_room","room":"x"}', 404)]
)
async def test_bad_requests(client, body, status):
    response = await client.post("/api/tasks/", body, content_type="application/json")
    assert response.status_code == status and "error" in response.json()
    assert await Task.objects.acount() == 0


@override_settings(LLM_TOKEN_DELAY_MS=0)
async def test_summarize_room_reads_the_room_and_stores_the_summary(client):
    await database_sync_to_async(lambda: make_messages(make_room("general"), make_user("sam"), 450))()
    task_id = (await create(client, kind="summarize_room", room="general")).json()["id"]
    events = parse_events(await read_all(await client.get(f"/api/tasks/{task_id}/events")))
    messages = [e["data"]["message"] for e in events if e["event"] == "progress"]
    assert "read 200 of 450 messages" in messages and "read 450 of 450 messages" in messages
    result = events[-1]["data"]["result"]
    assert events[-1]["event"] == "complete" and result["messages"] == 450 and result["summary"].startswith("sam: m")


async def test_unauthenticated_is_401():
    from django.test import AsyncClient

    assert (await AsyncClient().post("/api/tasks/", "{}", content_type="application/json")).status_code == 401
