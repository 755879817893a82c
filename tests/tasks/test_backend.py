"""Django's task API over our runner: a task written with ``@task`` and ``.enqueue()``d
here runs in the in-process runner, its progress reaches a real reader of
``GET /api/tasks/<id>/events``, and ``get_result`` reads its outcome."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django_tasks import TaskContext, TaskResultStatus, default_task_backend, task, task_backends
from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist

from tasks.backend import RunnerBackend
from tasks.context import context_owner_id, report_progress, report_progress_sync, task_owner
from tasks.models import Task
from tests.support.asgi_client import BearerClient, read_all
from tests.support.sse_parsing import parse_events

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@task(takes_context=True)
async def count_words(context: TaskContext, text: str, *, pause_ms: int = 0) -> dict[str, Any]:
    words = text.split()
    for done, word in enumerate(words, 1):
        await asyncio.sleep(pause_ms / 1000)
        await report_progress(context, percent=done * 100 // len(words), message=f"counted {word!r}")
    return {"words": len(words), "attempt": context.attempt}


@task(takes_context=True)
def count_lines(context: TaskContext, *, text: str) -> dict[str, Any]:
    """A synchronous task: it runs in a thread of the runner's and reports from there."""
    lines = text.splitlines()
    for done in range(1, len(lines) + 1):
        report_progress_sync(context, percent=done * 100 // len(lines), message=f"line {done}")
    return {"lines": len(lines), "thread": threading.current_thread().name}


@task()
async def divide(numerator: int, denominator: int) -> float:
    return numerator / denominator


@task(takes_context=True)
async def enqueue_a_child(context: TaskContext) -> dict[str, Any]:
    child = await divide.aenqueue(1, 1)
    return {"child": child.id, "owner": context_owner_id(context)}


def user_named(username: str) -> User:
    return User.objects.get(username=username)


async def events_of(client: BearerClient, task_id: str) -> list[dict[str, Any]]:
    return parse_events(await read_all(await client.get(f"/api/tasks/{task_id}/events")))


async def test_an_enqueued_task_runs_and_a_reader_of_its_events_sees_its_progress(client):
    tess = await database_sync_to_async(user_named)("tess")
    with task_owner(owner_id=tess.pk):
        result = await count_words.aenqueue("to be or not", pause_ms=5)
    assert result.status == TaskResultStatus.READY and result.id.isdigit()

    events = await events_of(client, result.id)
    assert [e["id"] for e in events] == [str(i) for i in range(1, len(events) + 1)], "ids count from 1"
    assert events[0]["data"] == {"progress": 0, "status": "queued", "message": "queued"}
    assert events[1]["data"] == {"progress": 0, "status": "running", "message": "started"}
    progress = [(e["data"]["progress"], e["data"]["message"]) for e in events if e["event"] == "progress"][2:]
    assert progress == [(25, "counted 'to'"), (50, "counted 'be'"), (75, "counted 'or'"), (100, "counted 'not'")]
    assert events[-1]["event"] == "complete"
    assert events[-1]["data"] == {"status": "succeeded", "result": {"words": 4, "attempt": 1}}

    finished = await count_words.aget_result(result.id)
    assert finished.status == TaskResultStatus.SUCCESSFUL and finished.is_finished
    assert finished.return_value == {"words": 4, "attempt": 1}
    assert (finished.args, finished.kwargs) == (["to be or not"], {"pause_ms": 5})
    assert finished.errors == [] and finished.attempts == 1 and finished.finished_at is not None
    state = (await client.get(f"/api/tasks/{result.id}")).json()
    assert (state["kind"], state["status"], state["progress"]) == ("tests.tasks.test_backend.count_words", "succeeded", 100)


async def test_a_synchronous_task_runs_in_a_runner_thread_and_reports_progress(client):
    tess = await database_sync_to_async(user_named)("tess")

    def enqueue() -> str:
        with task_owner(owner_id=tess.pk):
            return count_lines.enqueue(text="one\ntwo").id

    task_id = await database_sync_to_async(enqueue)()
    events = await events_of(client, task_id)
    assert [e["data"]["message"] for e in events if e["event"] == "progress"] == ["queued", "started", "line 1", "line 2"]
    assert events[-1]["event"] == "complete" and events[-1]["data"]["result"]["lines"] == 2
    assert events[-1]["data"]["result"]["thread"].startswith("task"), "not the event loop's thread, nor the database thread"
    result = await database_sync_to_async(count_lines.get_result)(task_id)
    assert result.return_value == events[-1]["data"]["result"]


async def test_a_failing_task_fails_with_its_exception_in_get_result(client):
    tess = await database_sync_to_async(user_named)("tess")
    with task_owner(owner_id=tess.pk):
        result = await divide.aenqueue(1, 0)
    events = await events_of(client, result.id)
    assert events[-1]["event"] == "failed"
    assert events[-1]["data"] == {"status": "failed", "error": "ZeroDivisionError: division by zero"}
    failed = await divide.aget_result(result.id)
    assert failed.status == TaskResultStatus.FAILED
    [error] = failed.errors
    assert error.exception_class is ZeroDivisionError and "return numerator / denominator" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        failed.return_value  # noqa: B018 - the property raises


async def test_delete_cancels_an_enqueued_task_within_a_second(client):
    tess = await database_sync_to_async(user_named)("tess")
    with task_owner(owner_id=tess.pk):
        result = await count_words.aenqueue("word " * 1000, pause_ms=20)
    stream = await client.get(f"/api/tasks/{result.id}/events")
    await asyncio.sleep(0.3)
    asked = time.monotonic()
    assert (await client.delete(f"/api/tasks/{result.id}")).status_code == 202
    events = parse_events(await read_all(stream))
    assert time.monotonic() - asked < 1.5, "cancelled within a second (and a read)"
    assert events[-1]["event"] == "failed" and events[-1]["data"]["status"] == "cancelled"
    assert any(e["data"]["progress"] > 0 for e in events if e["event"] == "progress"), "it was running"
    cancelled = await count_words.aget_result(result.id)
    assert cancelled.status == TaskResultStatus.FAILED
    assert cancelled.errors[-1].exception_class is asyncio.CancelledError


async def test_a_task_enqueued_by_a_running_task_belongs_to_the_same_owner(client):
    tess = await database_sync_to_async(user_named)("tess")
    with task_owner(owner_id=tess.pk):
        result = await enqueue_a_child.aenqueue()
    events = await events_of(client, result.id)
    assert events[-1]["event"] == "complete"
    child_id = events[-1]["data"]["result"]["child"]
    assert events[-1]["data"]["result"]["owner"] == tess.pk
    assert (await Task.objects.aget(pk=int(child_id))).owner_id == tess.pk
    child_events = await events_of(client, child_id)  # tess may read it: it is hers
    assert child_events[-1]["data"] == {"status": "succeeded", "result": 1.0}


async def test_enqueue_without_an_owner_is_refused_and_stores_nothing():
    with pytest.raises(InvalidTaskError, match="task_owner"):
        await divide.aenqueue(1, 2)
    assert await Task.objects.acount() == 0


async def test_arguments_json_cannot_carry_are_refused_before_anything_is_stored(client):
    tess = await database_sync_to_async(user_named)("tess")
    with task_owner(owner_id=tess.pk), pytest.raises(TypeError):
        await divide.aenqueue(object(), 2)  # type: ignore[arg-type]
    assert await Task.objects.acount() == 0


async def test_only_registered_kinds_may_be_started_over_http(client):
    body = json.dumps({"kind": "tests.tasks.test_backend.divide"})
    response = await client.post("/api/tasks/", body, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"
    assert await Task.objects.acount() == 0


async def test_get_result_of_an_unknown_id():
    for unknown in ("999999", "abc", ""):
        with pytest.raises(TaskResultDoesNotExist):
            await default_task_backend.aget_result(unknown)


async def test_the_default_backend_is_ours():
    backend = task_backends["default"]
    assert isinstance(backend, RunnerBackend) and count_words.get_backend() is backend
    assert backend.supports_get_result and backend.supports_async_task
