"""The task API with the in-process runner (no Redis, no task worker)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.test import override_settings

from chat.services.moderation import ban_create
from notifications.models import Notification
from tasks import runner as runner_module
from tasks.models import Task
from tests.support.asgi_client import BearerClient, read_all
from tests.support.eventlog import logged_events
from tests.support.factories import make_messages, make_room, make_token, make_user
from tests.support.sse_parsing import parse_events

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


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


@pytest.mark.parametrize("how", ["header", "query"])
@pytest.mark.parametrize("last", ["x", "-1", "1.5", "0x3", "\u00b2", "3 4", "9" * 30, "abc:3"])
async def test_a_malformed_last_event_id_is_a_400_that_shows_a_valid_one(client, last, how):
    task_id = (await create(client, kind="countdown", steps=1, interval_ms=1)).json()["id"]
    url = f"/api/tasks/{task_id}/events"
    if how == "header":
        refused = await client.get(url, headers={"Last-Event-ID": last})
    else:
        refused = await client.get(url, {"last_event_id": last})
    assert refused.status_code == 400, f"{last!r} was taken as a position"
    error = refused.json()["error"]
    assert error["code"] == "invalid_last_event_id" and "'3'" in error["detail"], error


async def test_a_reader_at_or_past_the_end_of_a_finished_task_gets_204(client):
    """A reader that has the final event is told to stop (an EventSource would otherwise
    reconnect forever); one that missed it gets the rest, the end, and the response closes."""
    task_id = (await create(client, kind="countdown", steps=3, interval_ms=1)).json()["id"]
    events = parse_events(await read_all(await client.get(f"/api/tasks/{task_id}/events")))
    end = int(events[-1]["id"])
    assert events[-1]["event"] == "complete"
    for seen in (end, end + 1, 10**9):
        ended = await client.get(f"/api/tasks/{task_id}/events", headers={"Last-Event-ID": str(seen)})
        assert ended.status_code == 204 and not ended.streaming
    missed = parse_events(
        await read_all(await client.get(f"/api/tasks/{task_id}/events", headers={"Last-Event-ID": str(end - 2)}))
    )
    assert [int(e["id"]) for e in missed] == [end - 1, end] and missed[-1] == events[-1]


async def test_the_final_event_made_from_the_row_is_written_once(client):
    """A finished task whose log lost its events (it expired): the final event made from
    the row goes into the log, so a reconnect with its id gets 204, not another one with
    a new id."""
    owner = await User.objects.aget(username="tess")
    task = await Task.objects.acreate(
        owner=owner, kind="countdown", status=Task.Status.SUCCEEDED, progress=100, result={"steps": 2}
    )
    events = parse_events(await read_all(await client.get(f"/api/tasks/{task.pk}/events", headers={"Last-Event-ID": "7"})))
    assert [(e["event"], e["id"], e["data"]) for e in events] == [
        ("complete", "8", {"status": "succeeded", "result": {"steps": 2}})
    ]
    again = await client.get(f"/api/tasks/{task.pk}/events", headers={"Last-Event-ID": "8"})
    assert again.status_code == 204
    from_start = parse_events(await read_all(await client.get(f"/api/tasks/{task.pk}/events")))
    assert [e["id"] for e in from_start] == ["8"], "the same final event, not a new one"


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


async def test_a_countdown_of_ten_thousand_steps_at_0_ms_leaves_a_small_log(client):
    response = await create(client, kind="countdown", steps=10_000, interval_ms=0)
    assert response.status_code == 202
    task_id = response.json()["id"]
    events = parse_events(await read_all(await client.get(f"/api/tasks/{task_id}/events")))
    assert events[-1]["event"] == "complete" and events[-1]["data"]["result"] == {"steps": 10_000}
    # One event per percentage, not per step: queued, started, 0..100 %, complete.
    progress = [e["data"]["progress"] for e in events if e["event"] == "progress"]
    assert progress[2:] == list(range(101)), progress[:10]
    assert len(await logged_events(f"task:{task_id}")) == 104


async def test_a_task_writes_at_most_task_max_events_whatever_it_reports(client, monkeypatch):
    monkeypatch.setattr(runner_module, "TASK_MAX_EVENTS", 20)
    monkeypatch.setattr(runner_module, "PROGRESS_REPEAT_SECONDS", 0.0)  # every report would be written
    task_id = (await create(client, kind="countdown", steps=50, interval_ms=0)).json()["id"]
    events = parse_events(await read_all(await client.get(f"/api/tasks/{task_id}/events")))
    assert events[-1]["event"] == "complete", "the final event is always written"
    assert len(events) == 1 + 20 + 1, "queued, 20 events of the runner's, complete"
    state = (await client.get(f"/api/tasks/{task_id}")).json()
    assert (state["status"], state["progress"]) == ("succeeded", 100), "the row has what the log left out"


@override_settings(TASKS_PER_MINUTE_PER_USER=3)
async def test_tasks_created_per_minute_are_limited_per_user(client):
    for _ in range(3):
        assert (await create(client, kind="countdown", steps=1, interval_ms=0)).status_code == 202
    refused = await create(client, kind="countdown", steps=1, interval_ms=0)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert await Task.objects.acount() == 3
    other = BearerClient(await database_sync_to_async(lambda: make_token(make_user("other")))())
    assert (await create(other, kind="countdown", steps=1, interval_ms=0)).status_code == 202, "per user"


async def test_a_user_banned_site_wide_cannot_have_rooms_summarised(client):
    def setup():
        make_messages(make_room("general"), make_user("sam"), 3)
        ban_create(user=User.objects.get(username="tess"), room=None, reason="spam")

    await database_sync_to_async(setup)()
    refused = await create(client, kind="summarize_room", room="general")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "banned"
    unknown = await create(client, kind="summarize_room", room="no-such-room")
    assert unknown.status_code == 403, "the same answer whether the room exists or not"
    assert await Task.objects.acount() == 0
    # A countdown reads no room: it acts on nobody else.
    assert (await create(client, kind="countdown", steps=1, interval_ms=0)).status_code == 202


async def test_a_summary_queued_before_a_site_wide_ban_fails_when_it_runs(client):
    await database_sync_to_async(lambda: make_messages(make_room("general"), make_user("sam"), 3))()
    with override_settings(TASKS_IN_PROCESS=False):  # queued, not run: no runner in this process
        task_id = (await create(client, kind="summarize_room", room="general")).json()["id"]
    await database_sync_to_async(lambda: ban_create(user=User.objects.get(username="tess"), room=None))()
    await create(client, kind="countdown", steps=1, interval_ms=0)  # starts the in-process runner
    events = parse_events(await read_all(await client.get(f"/api/tasks/{task_id}/events")))
    assert events[-1]["event"] == "failed" and "banned" in events[-1]["data"]["error"]
    assert "summary" not in json.dumps(events)


@override_settings(TASKS_MAX_ACTIVE_PER_USER=1, TASKS_IN_PROCESS=False)  # queued, not run: it stays active
async def test_a_user_with_too_many_active_tasks_is_told_to_wait(client):
    assert (await create(client, kind="countdown", steps=1, interval_ms=0)).status_code == 202
    refused = await create(client, kind="countdown", steps=1, interval_ms=0)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "busy" and refused["Retry-After"] == "1"
    assert await Task.objects.acount() == 1
