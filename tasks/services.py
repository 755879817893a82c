"""Writes for tasks: create, cancel, claim with a lease, renew, finish. Synchronous
(database) functions, called from async code through database_sync_to_async.

Rows are inserted by Django's task API (``.enqueue()`` reaches tasks.backend, which
calls ``task_insert``); ``task_create`` is a client's request, which enqueues a
registered kind that way. This module imports neither the backend nor the runner: both
import it.
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from notifications.services import notification_create
from tasks.context import task_owner
from tasks.models import Task
from tasks.registry import KINDS, TaskRequestError
from tasks.results import TaskWorkerLost

logger = logging.getLogger(__name__)

# A runner renews its leases every LEASE_RENEW_SECONDS; a lease not renewed for
# LEASE_SECONDS belongs to a runner that died, and the task is retried (or failed).
LEASE_SECONDS = 10.0
LEASE_RENEW_SECONDS = 2.0
# One retry: a task whose runner died twice is more likely the cause than the victim.
MAX_ATTEMPTS = 2
# TASKS_PER_MINUTE_PER_USER counts the tasks created in this sliding window.
CREATION_WINDOW_SECONDS = 60


def task_create(*, owner_id: int, body: dict[str, Any]) -> Task:
    """A client's request (POST /api/tasks/): validate it, then enqueue its registered
    kind through Django's task API, within the per-user limits. Code that enqueues a
    task itself is not held to these limits: they bound what a client can make us store."""
    kind = KINDS.get(str(body.get("kind")))
    if kind is None:
        raise TaskRequestError("invalid", f"kind must be one of {', '.join(sorted(KINDS))}")
    kwargs = kind.validate(body, owner_id=owner_id)
    with transaction.atomic():
        # Counted in the same transaction as the insert: on SQLite (BEGIN IMMEDIATE) and
        # PostgreSQL a burst of requests may overshoot by at most the concurrent few.
        active = Task.objects.filter(owner_id=owner_id, status__in=(Task.Status.QUEUED, Task.Status.RUNNING)).count()
        if active >= settings.TASKS_MAX_ACTIVE_PER_USER:
            raise TaskRequestError(
                "busy",
                f"at most {settings.TASKS_MAX_ACTIVE_PER_USER} queued or running tasks per user; wait for one to finish",
                kind="rate_limited",
                retry_after=1,
            )
        _refuse_past_creation_rate(owner_id)
        with task_owner(owner_id=owner_id):
            enqueued = kind.task.enqueue(**kwargs)
    if not enqueued.id.isdigit():
        backend = kind.task.backend
        raise ImproperlyConfigured(f"{kind.name} was enqueued elsewhere: TASKS[{backend!r}] must be tasks.backend.RunnerBackend")
    return Task.objects.get(pk=int(enqueued.id))


def task_insert(*, owner_id: int, kind: str, args: list[Any], kwargs: dict[str, Any]) -> Task:
    """The row of an enqueued task (tasks.backend, inside the caller's transaction)."""
    return Task.objects.create(owner_id=owner_id, kind=kind, args=args, params=kwargs)


def _refuse_past_creation_rate(owner_id: int) -> None:
    """``rate_limited`` past TASKS_PER_MINUTE_PER_USER creations in the last minute,
    retry after the oldest of them leaves the window."""
    limit = int(settings.TASKS_PER_MINUTE_PER_USER)
    window_start = timezone.now() - timedelta(seconds=CREATION_WINDOW_SECONDS)
    recent = list(
        Task.objects.filter(owner_id=owner_id, created_at__gt=window_start)
        .order_by("-created_at")
        .values_list("created_at", flat=True)[:limit]
    )
    if len(recent) >= limit:
        wait = max(1, math.ceil((recent[-1] - window_start).total_seconds()))
        raise TaskRequestError("rate_limited", f"at most {limit} tasks a minute per user", kind="rate_limited", retry_after=wait)


def task_cancel(*, task: Task) -> bool:
    """Cancel: a queued task at once (True), a running one within a second (its runner
    polls for the flag and stops it). A finished task stays as it is."""
    with transaction.atomic():
        Task.objects.filter(pk=task.pk, status__in=[Task.Status.QUEUED, Task.Status.RUNNING]).update(cancel_requested=True)
        cancelled_now = Task.objects.filter(pk=task.pk, status=Task.Status.QUEUED).update(
            status=Task.Status.CANCELLED, error="cancelled", finished_at=timezone.now()
        )
    task.refresh_from_db()
    return bool(cancelled_now)


def task_claim(*, runner: str, limit: int = 1) -> list[Task]:
    """Claim up to ``limit`` runnable tasks (queued, or running on an expired lease) for ``runner``.

    Each claim is an atomic conditional update, so two runners never get the same task;
    on PostgreSQL, SKIP LOCKED keeps them from waiting on each other's candidates.
    """
    now = timezone.now()
    # A task whose lease ran out is retried, unless it has had its attempts (task_sweep fails it).
    runnable = Q(status=Task.Status.QUEUED) | Q(status=Task.Status.RUNNING, lease_expires_at__lt=now, attempts__lt=MAX_ATTEMPTS)
    claimed: list[Task] = []
    with transaction.atomic():
        candidates = Task.objects.filter(runnable, cancel_requested=False).order_by("pk")
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        for task_id in list(candidates.values_list("pk", flat=True)[:limit]):
            updated = Task.objects.filter(runnable, pk=task_id).update(
                status=Task.Status.RUNNING,
                lease_owner=runner,
                lease_expires_at=now + timedelta(seconds=LEASE_SECONDS),
                started_at=now,
            )
            if updated:
                claimed.append(Task.objects.get(pk=task_id))
    for task in claimed:
        task.attempts, task.worker_ids = task.attempts + 1, [*task.worker_ids, runner]
        Task.objects.filter(pk=task.pk).update(attempts=task.attempts, worker_ids=task.worker_ids)
    return claimed


def task_sweep() -> list[Task]:
    """Fail tasks whose runner died too often, and cancelled ones that lost their runner."""
    now = timezone.now()
    expired = Task.objects.filter(status=Task.Status.RUNNING, lease_expires_at__lt=now)
    failed = []
    for task in expired.filter(Q(attempts__gte=MAX_ATTEMPTS) | Q(cancel_requested=True)):
        status = Task.Status.CANCELLED if task.cancel_requested else Task.Status.FAILED
        error = "cancelled" if task.cancel_requested else f"the task worker stopped while running it ({task.attempts} attempts)"
        errors = task.errors if task.cancel_requested else [*task.errors, _worker_lost(error)]
        if Task.objects.filter(pk=task.pk, status=Task.Status.RUNNING, lease_expires_at__lt=now).update(
            status=status, error=error, errors=errors, finished_at=now, lease_owner=""
        ):
            task.status, task.error, task.errors = status, error, errors
            failed.append(task)
            notification_create(
                user_id=task.owner_id, kind="task", data={"task_id": task.pk, "kind": task.kind, "status": status}
            )
    return failed


def _worker_lost(error: str) -> dict[str, str]:
    return {"exception_class_path": f"{TaskWorkerLost.__module__}.{TaskWorkerLost.__qualname__}", "traceback": error}


def leases_renew(*, runner: str, progress: dict[int, int]) -> set[int]:
    """Renew this runner's leases (recording progress); return the ids whose cancel was asked."""
    until = timezone.now() + timedelta(seconds=LEASE_SECONDS)
    with transaction.atomic():
        for task_id, percent in progress.items():
            Task.objects.filter(pk=task_id, lease_owner=runner, status=Task.Status.RUNNING).update(
                lease_expires_at=until, progress=percent
            )
    return cancel_requested(task_ids=list(progress))


def cancel_requested(*, task_ids: list[int]) -> set[int]:
    return set(Task.objects.filter(pk__in=task_ids, cancel_requested=True).values_list("pk", flat=True))


def task_finish(
    *, task_id: int, runner: str, status: str, result: Any = None, error: str = "", failure: dict[str, str] | None = None
) -> bool:
    """Record the outcome, if this runner still holds the task; notify its owner.
    ``failure`` is a failure's ``{"exception_class_path", "traceback"}`` (TaskResult.errors)."""
    with transaction.atomic():
        row = Task.objects.get(pk=task_id)
        updated = Task.objects.filter(pk=task_id, lease_owner=runner, status=Task.Status.RUNNING).update(
            status=status,
            result=result,
            error=error,
            errors=[*row.errors, failure] if failure else row.errors,
            progress=100 if status == Task.Status.SUCCEEDED else row.progress,
            finished_at=timezone.now(),
            lease_owner="",
            lease_expires_at=None,
        )
        if updated:
            task = Task.objects.get(pk=task_id)
            notification_create(
                user_id=task.owner_id, kind="task", data={"task_id": task_id, "kind": task.kind, "status": status}
            )
    return bool(updated)
