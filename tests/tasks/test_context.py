"""The developer's side of a task besides @task: whose task an enqueue makes, and
progress reports (which go nowhere outside our runner)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.utils import timezone
from django_tasks import TaskContext, TaskResult, TaskResultStatus

from tasks.context import context_owner_id, current_task_owner, report_progress_sync, task_owner
from tasks.kinds import countdown


def test_task_owner_holds_inside_its_block_and_nests():
    assert current_task_owner() is None
    with task_owner(owner_id=1):
        with task_owner(owner_id=2):
            assert current_task_owner() == 2
        assert current_task_owner() == 1
    assert current_task_owner() is None


def plain_context() -> TaskContext:
    """A context as another backend (or a test calling the function) makes it."""
    now = timezone.now()
    result: TaskResult[object] = TaskResult(
        task=countdown,
        id="x",
        status=TaskResultStatus.RUNNING,
        enqueued_at=now,
        started_at=now,
        finished_at=None,
        last_attempted_at=now,
        args=[],
        kwargs={},
        backend="default",
        errors=[],
        worker_ids=[],
    )
    return TaskContext(task_result=result)


def test_a_task_runs_outside_our_runner_with_progress_going_nowhere():
    context = plain_context()
    report_progress_sync(context, percent=50, message="half")
    function: Any = countdown.func  # typed without its context (Django's Task[P, T])
    assert asyncio.run(function(context, steps=2, interval_ms=0)) == {"steps": 2}
    with pytest.raises(TypeError, match="RunnerBackend"):
        context_owner_id(context)
