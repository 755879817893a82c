"""A task row as Django's task API sees it: a ``TaskResult`` (the backend's ``get_result``
and the context a running task gets)."""

from __future__ import annotations

from typing import Any

from django_tasks import TaskResult, TaskResultStatus
from django_tasks.base import Task as DjangoTask
from django_tasks.base import TaskError

from tasks.models import Task

# Django's statuses have no "cancelled": a cancelled task is a failed one whose error is
# a CancelledError (what a cancelled coroutine raises), as CANCELLED_ERROR shows.
STATUS: dict[str, TaskResultStatus] = {
    Task.Status.QUEUED: TaskResultStatus.READY,
    Task.Status.RUNNING: TaskResultStatus.RUNNING,
    Task.Status.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    Task.Status.FAILED: TaskResultStatus.FAILED,
    Task.Status.CANCELLED: TaskResultStatus.FAILED,
}
CANCELLED_ERROR = TaskError(exception_class_path="asyncio.exceptions.CancelledError", traceback="cancelled")


class TaskWorkerLost(Exception):
    """A task's runner stopped renewing its lease too often (the class a TaskError names)."""


def task_result_from_row(*, task: DjangoTask[Any, Any], row: Task) -> TaskResult[Any]:
    errors = [TaskError(exception_class_path=e["exception_class_path"], traceback=e["traceback"]) for e in row.errors]
    if row.status == Task.Status.CANCELLED:
        errors.append(CANCELLED_ERROR)
    result: TaskResult[Any] = TaskResult(
        task=task,
        id=str(row.pk),
        status=STATUS[row.status],
        enqueued_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        last_attempted_at=row.started_at,  # a retry starts it again
        args=list(row.args),
        kwargs=dict(row.params),
        backend=task.backend,
        errors=errors,
        worker_ids=list(row.worker_ids),
    )
    if row.status == Task.Status.SUCCEEDED:
        object.__setattr__(result, "_return_value", row.result)  # frozen, as Django's own backends set it
    return result
