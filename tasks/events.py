"""A task's log (core.eventlog, ``task:<id>``): the events ``GET /api/tasks/<id>/events``
follows. ``queued`` when it is enqueued, ``progress`` while it runs (tasks.runner), then
``complete`` or ``failed``; numbered from 1."""

from __future__ import annotations

from typing import Any

from core.eventlog import get_log
from tasks.models import Task


def task_log_name(task_id: int) -> str:
    return f"task:{task_id}"


async def task_event(task_id: int, kind: str, data: dict[str, Any], *, after: int = 0) -> int:
    """Append one event to the task's log (numbered from 1, and above ``after``, the last
    number this writer gave); return its number."""
    return await get_log().append_next(task_log_name(task_id), kind=kind, data=data, floor=after + 1)


async def task_queued_event(task_id: int) -> None:
    """The first event of every task, written before its row is committed (so before any
    runner can start it): a reader's stream always opens with it."""
    await task_event(task_id, "progress", {"progress": 0, "status": "queued", "message": "queued"})


async def task_final_event(task: Task, *, after: int = 0) -> None:
    if task.status == Task.Status.SUCCEEDED:
        await task_event(task.pk, "complete", {"status": "succeeded", "result": task.result}, after=after)
    else:
        await task_event(task.pk, "failed", {"status": task.status, "error": task.error}, after=after)
