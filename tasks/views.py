"""The task API of docs/protocol.md, "Other endpoints": thin async views over tasks.services and the task log."""

from __future__ import annotations

import time
from typing import Any

from channels.db import database_sync_to_async
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from accounts.connections import credential_watch
from core import sse
from core.eventlog import LogEvent, follow, get_log
from core.http import api_view, json_body, signed_in_user
from tasks import services
from tasks.events import task_final_event, task_log_name
from tasks.models import Task
from tasks.registry import TaskRequestError

FINAL_EVENTS = ("complete", "failed")
# A finished task whose final event is not in its log after this long (the log expired,
# or its runner died between recording and announcing) gets one made from its row.
FINAL_EVENT_GRACE_SECONDS = 2.0


def _owner_id(request: HttpRequest) -> int:
    return int(signed_in_user(request).pk)


def task_state(task: Task) -> dict[str, Any]:
    return {
        "id": task.pk,
        "kind": task.kind,
        "status": task.status,
        "progress": task.progress,
        "result": task.result,
        "error": task.error or None,
        "created_at": task.created_at.isoformat(),
        "finished_at": task.finished_at.isoformat() if task.finished_at else None,
    }


async def _owned_task(request: HttpRequest, task_id: int) -> Task:
    task = await Task.objects.filter(pk=task_id, owner_id=_owner_id(request)).afirst()
    if task is None:
        raise TaskRequestError("not_found", "no such task", kind="not_found")
    return task


@api_view("POST", "GET")
async def tasks(request: HttpRequest) -> HttpResponseBase:
    """POST /api/tasks/ -> 202 {"id","status","events_url"}; GET lists the user's tasks.
    A registered kind is enqueued through Django's task API (tasks.services.task_create),
    which writes the task's first event and wakes a runner."""
    owner_id = _owner_id(request)
    if request.method == "GET":
        mine = [task async for task in Task.objects.filter(owner_id=owner_id).order_by("-pk")[:50]]
        return JsonResponse({"tasks": [task_state(task) for task in mine]})
    body = json_body(request)
    task = await database_sync_to_async(services.task_create)(owner_id=owner_id, body=body)
    return JsonResponse({"id": task.pk, "status": task.status, "events_url": f"/api/tasks/{task.pk}/events"}, status=202)


@api_view("GET", "DELETE")
async def task_detail(request: HttpRequest, task_id: int) -> HttpResponseBase:
    task = await _owned_task(request, task_id)
    if request.method == "GET":
        return JsonResponse(task_state(task))
    if await database_sync_to_async(services.task_cancel)(task=task):
        await task_final_event(task)
    return JsonResponse({"id": task.pk, "status": "cancelled" if task.cancel_requested else task.status}, status=202)


@api_view("GET")
async def task_events(request: HttpRequest, task_id: int) -> HttpResponseBase:
    """SSE: progress events numbered from 1; Last-Event-ID resumes; any worker serves it."""
    task = await _owned_task(request, task_id)
    after = sse.parse_last_event_id(sse.last_event_id(request), example="3")
    # A reader that has the final event gets 204, so an EventSource stops reconnecting
    # (docs/protocol.md, "After the end"); one that missed it gets the rest and the end.
    if (ended := sse.after_the_end(end=await _log_end(task.pk), after=after)) is not None:
        return ended
    after = after or 0
    return sse.sse_response(
        body=sse.follow(
            batches=follow(task_log_name(task.pk), after=after, final=FINAL_EVENTS, when_idle=_FinalFromRow(task.pk)),
            render=_render,
        ),
        watch=credential_watch(request, user_id=_owner_id(request)),
    )


def _render(event: LogEvent) -> str:
    return sse.encode_event(event=event.kind, data=event.data, id=str(event.seq))


async def _log_end(task_id: int) -> int | None:
    """The seq of the final event that ends the task's log (its last), None while the log
    holds none: the task runs, or its final event is still to be written (_FinalFromRow)."""
    log, name = get_log(), task_log_name(task_id)
    last = await log.last_seq(name)
    if last is None:
        return None
    events = await log.read(name, after=last - 1, wait=0)
    return last if events and events[-1].kind in FINAL_EVENTS else None


class _FinalFromRow:
    """Asked whenever a read of the task's log finds nothing: once the row has said for
    FINAL_EVENT_GRACE_SECONDS that the task finished, writes its final event, made from
    the row, to the log, where the next read finds it. Written, not just sent: its id is
    then the log's end for every later reader, whose reconnect gets 204, where a made-up
    event would be made up again, with a new id, on every reconnect."""

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id
        self.finished_seen: float | None = None
        self.written = False

    async def __call__(self, after: int) -> list[LogEvent]:
        task = await Task.objects.aget(pk=self.task_id)
        if task.status not in Task.FINISHED or self.written:
            return []
        self.finished_seen = self.finished_seen or time.monotonic()
        if time.monotonic() - self.finished_seen < FINAL_EVENT_GRACE_SECONDS:
            return []
        await task_final_event(task, after=after)
        self.written = True
        return []
