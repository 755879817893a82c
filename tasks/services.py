"""Writes for tasks: create, cancel, claim with a lease, renew, finish. Synchronous
(database) functions, called from async code through database_sync_to_async."""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from notifications.services import notification_create
from tasks.models import Task
from tasks.registry import KINDS, TaskRequestError

logger = logging.getLogger(__name__)

# A runner renews its leases every LEASE_RENEW_SECONDS; a lease not renewed for
# LEASE_SECONDS belongs to a runner that died, and the task is retried (or failed).
LEASE_SECONDS = 10.0
LEASE_RENEW_SECONDS = 2.0
# One retry: a task whose runner died twice is more likely the cause than the victim.
MAX_ATTEMPTS = 2
# A wake-up nobody picks up is dropped after this long; the row stays queued.
WAKE_TTL_SECONDS = 60
WAKE_KEY = "tasks:wake"
# TASKS_PER_MINUTE_PER_USER counts the tasks created in this sliding window.
CREATION_WINDOW_SECONDS = 60


def task_create(*, owner_id: int, body: dict[str, Any]) -> Task:
    """Validate and queue a task. The caller writes its first event, then wakes a
    runner (task_wake); a runner that is not woken finds the row within a second anyway."""
    kind = KINDS.get(str(body.get("kind")))
    if kind is None:
        raise TaskRequestError(400, "invalid", f"kind must be one of {', '.join(sorted(KINDS))}")
    params = kind.validate(body, owner_id=owner_id)
    with transaction.atomic():
        # Counted in the same transaction as the insert: on SQLite (BEGIN IMMEDIATE) and
        # PostgreSQL a burst of requests may overshoot by at most the concurrent few.
        active = Task.objects.filter(owner_id=owner_id, status__in=(Task.Status.QUEUED, Task.Status.RUNNING)).count()
        if active >= settings.TASKS_MAX_ACTIVE_PER_USER:
            raise TaskRequestError(
                429,
                "busy",
                f"at most {settings.TASKS_MAX_ACTIVE_PER_USER} queued or running tasks per user; wait for one to finish",
                headers={"Retry-After": "1"},
            )
        _refuse_past_creation_rate(owner_id)
        return Task.objects.create(owner_id=owner_id, kind=kind.name, params=params)


def _refuse_past_creation_rate(owner_id: int) -> None:
    """429 ``rate_limited`` past TASKS_PER_MINUTE_PER_USER creations in the last minute,
    with Retry-After: when the oldest of them leaves the window."""
    limit = int(settings.TASKS_PER_MINUTE_PER_USER)
    window_start = timezone.now() - timedelta(seconds=CREATION_WINDOW_SECONDS)
    recent = list(
        Task.objects.filter(owner_id=owner_id, created_at__gt=window_start)
        .order_by("-created_at")
        .values_list("created_at", flat=True)[:limit]
    )
    if len(recent) >= limit:
        wait = max(1, math.ceil((recent[-1] - window_start).total_seconds()))
        raise TaskRequestError(
            429,
            "rate_limited",
            f"at most {limit} tasks a minute per user",
            headers={"Retry-After": str(wait)},
        )


def task_wake() -> None:
    """Tell a runner there is work: a Redis list a task worker blocks on, or this process's runner."""
    from core.redis_clients import redis_configured, sync_redis

    if settings.TASKS_IN_PROCESS or not redis_configured():
        from tasks.runner import wake_local_runner

        wake_local_runner()
        return
    try:
        pipe = sync_redis(WAKE_KEY).pipeline(transaction=False)
        pipe.lpush(WAKE_KEY, "1")
        pipe.ltrim(WAKE_KEY, 0, 99)
        pipe.expire(WAKE_KEY, WAKE_TTL_SECONDS)
        pipe.execute()
    except Exception:  # the worker polls the table anyway
        logger.warning("could not wake the task worker", exc_info=True)


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
        Task.objects.filter(pk=task.pk).update(attempts=task.attempts + 1)
        task.attempts += 1
    return claimed


def task_sweep() -> list[Task]:
    """Fail tasks whose runner died too often, and cancelled ones that lost their runner."""
    now = timezone.now()
    expired = Task.objects.filter(status=Task.Status.RUNNING, lease_expires_at__lt=now)
    failed = []
    for task in expired.filter(Q(attempts__gte=MAX_ATTEMPTS) | Q(cancel_requested=True)):
        status = Task.Status.CANCELLED if task.cancel_requested else Task.Status.FAILED
        error = "cancelled" if task.cancel_requested else f"the task worker stopped while running it ({task.attempts} attempts)"
        if Task.objects.filter(pk=task.pk, status=Task.Status.RUNNING, lease_expires_at__lt=now).update(
            status=status, error=error, finished_at=now, lease_owner=""
        ):
            task.status, task.error = status, error
            failed.append(task)
            notification_create(
                user_id=task.owner_id, kind="task", data={"task_id": task.pk, "kind": task.kind, "status": status}
            )
    return failed


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


def task_finish(*, task_id: int, runner: str, status: str, result: Any = None, error: str = "") -> bool:
    """Record the outcome, if this runner still holds the task; notify its owner."""
    with transaction.atomic():
        updated = Task.objects.filter(pk=task_id, lease_owner=runner, status=Task.Status.RUNNING).update(
            status=status,
            result=result,
            error=error,
            progress=100 if status == Task.Status.SUCCEEDED else Task.objects.get(pk=task_id).progress,
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
