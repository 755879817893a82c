"""Django's task API in front of our runner: ``TASKS = {"default": {"BACKEND":
"tasks.backend.RunnerBackend"}}``.

``some_task.enqueue(...)`` (or ``aenqueue``) inserts a task row owned by the user that
``tasks.context.task_owner`` names, writes the task's first event and, once the row is
committed, wakes a runner (tasks.runner), which claims it with a lease, runs it, reports
its progress to the task's log and records the outcome. ``get_result`` reads the row.

Why our runner rather than a queue's: no maintained queue has leases with one retry,
cancellation within a second and progress events readers follow over SSE, and works on
SQLite as on PostgreSQL (docs/architecture.md, "Tasks").
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import SyncToAsync, async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django_tasks import TaskResult
from django_tasks.backends.base import BaseTaskBackend
from django_tasks.base import Task as DjangoTask
from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
from django_tasks.signals import task_enqueued
from django_tasks.utils import normalize_json

from core.redis_clients import async_redis
from tasks import services
from tasks.context import current_task_owner
from tasks.events import task_log_name, task_queued_event
from tasks.models import Task
from tasks.registry import KIND_MAX_LENGTH, task_for_kind, task_kind_name
from tasks.results import task_result_from_row
from tasks.runner import ensure_local_runner
from tasks.wake import task_wake

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class RunnerBackend(BaseTaskBackend):
    supports_async_task = True  # coroutines run in the runner's event loop; functions in its threads
    supports_get_result = True  # the row, from any process
    supports_defer = False  # a row has no earliest start (yet)
    supports_priority = False  # rows run in the order they were enqueued

    def validate_task(self, task: DjangoTask[Any, Any]) -> None:
        """When ``@task`` (or ``task.using``) makes a task: the checks of every backend,
        and a module path that fits a row's kind."""
        super().validate_task(task)
        if len(task.module_path) > KIND_MAX_LENGTH:
            raise InvalidTaskError(f"a task's module path must be at most {KIND_MAX_LENGTH} characters: {task.module_path}")

    def enqueue(self, task: DjangoTask[P, T], args: P.args, kwargs: P.kwargs) -> TaskResult[T]:  # type: ignore[valid-type]
        """``task.enqueue(*args, **kwargs)``: the row, the first event, a runner woken once
        the row is committed (inside a transaction, when it commits)."""
        self.validate_task(task)
        owner_id = current_task_owner()
        if owner_id is None:
            raise InvalidTaskError(
                f"{task.name} has no owner: enqueue it inside `with tasks.context.task_owner(owner_id=...)`"
                " (every task belongs to a user: its events stream and notification are theirs)"
            )
        row = services.task_insert(
            owner_id=owner_id,
            kind=task_kind_name(task),
            args=normalize_json(list(args)),  # TypeError for what JSON cannot carry, before anything is stored
            kwargs=normalize_json(dict(kwargs)),
        )
        self._announce(row.pk)
        transaction.on_commit(task_wake)
        result: TaskResult[T] = task_result_from_row(task=task, row=row)
        task_enqueued.send(type(self), task_result=result)
        return result

    async def aenqueue(self, task: DjangoTask[P, T], args: P.args, kwargs: P.kwargs) -> TaskResult[T]:  # type: ignore[valid-type]
        result: TaskResult[T] = await database_sync_to_async(self.enqueue)(task, args, kwargs)
        return result

    def get_result(self, result_id: str) -> TaskResult[Any]:
        row = Task.objects.filter(pk=int(result_id)).first() if result_id.isdigit() else None
        if row is None:
            raise TaskResultDoesNotExist(result_id)
        try:
            task = task_for_kind(row.kind)
        except LookupError as error:  # its code was removed or renamed since
            raise TaskResultDoesNotExist(f"{result_id}: {error}") from None
        return task_result_from_row(task=task, row=row)

    async def aget_result(self, result_id: str) -> TaskResult[Any]:
        result: TaskResult[Any] = await database_sync_to_async(self.get_result)(result_id)
        return result

    def _announce(self, task_id: int) -> None:
        """Write the queued event, and in a process that runs its own tasks, start its
        runner. Called in a thread: under ASGI (a view, a consumer, database_sync_to_async)
        the event loop that awaits this thread runs it, as ``async_to_sync`` does; plain
        synchronous code (a management command) gets a loop of its own for the write."""
        loop = _awaiting_loop()
        try:
            if loop is not None:
                asyncio.run_coroutine_threadsafe(_announce_in(loop, task_id), loop).result()
            else:
                async_to_sync(_announce_alone)(task_id)
        except Exception:  # the row is the truth: readers fall back on it (tasks.views)
            logger.warning("could not write the queued event of task %s", task_id, exc_info=True)


def _awaiting_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop that awaits this thread's sync_to_async call, if any
    (asgiref records it in the thread for async_to_sync)."""
    loop: asyncio.AbstractEventLoop | None = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    return loop if loop is not None and loop.is_running() else None


async def _announce_in(loop: asyncio.AbstractEventLoop, task_id: int) -> None:
    if settings.TASKS_IN_PROCESS:
        ensure_local_runner()  # this loop serves requests: it lives as long as the process
    await task_queued_event(task_id)


async def _announce_alone(task_id: int) -> None:
    """The queued event from a loop that ends with this call: its Redis client goes with it."""
    try:
        await task_queued_event(task_id)
    finally:
        await async_redis(task_log_name(task_id)).aclose()
