"""Runs tasks: claims them from the table with a lease, reports progress to the task's
log, renews leases, stops cancelled ones within a second and records the outcome.

A row names a Django task (``@task``; tasks.registry turns its kind back into it): a
coroutine function runs in the runner's event loop, a plain function in a thread of
the runner's, each with a ``tasks.context.RunnerContext`` when it takes one.

One runner per task-worker process (``manage.py taskworker``), or, without Redis, one
inside the web process (so ``runserver`` alone runs tasks too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from asgiref.sync import iscoroutinefunction
from channels.db import DatabaseSyncToAsync, database_sync_to_async
from django.dispatch import Signal
from django_tasks import TaskResult
from django_tasks.base import Task as DjangoTask
from django_tasks.signals import task_finished, task_started
from django_tasks.utils import get_exception_traceback, get_module_path, normalize_json

from core.aio import spawn
from core.redis_clients import async_redis, redis_configured
from tasks import services
from tasks.context import RunnerContext, task_owner
from tasks.events import task_event, task_final_event
from tasks.models import Task
from tasks.registry import task_for_kind
from tasks.results import task_result_from_row
from tasks.wake import WAKE_KEY, local_wakeup_register

logger = logging.getLogger(__name__)

# Cancel flags are read this often, so a cancel takes effect well within a second.
CANCEL_POLL_SECONDS = 0.25
# With nothing to do, the table is polled this often even without a wake-up.
IDLE_POLL_SECONDS = 1.0
# A task's log lives in Redis for ten minutes after its last event, so what a task may
# write there is bounded (docs/protocol.md, "Limits"). A progress event is written when its
# percentage changed (at most 101 for a task that moves forward, whatever its steps),
# else at most once every PROGRESS_REPEAT_SECONDS: an hour-long countdown writes at most
# 720 such events. TASK_MAX_EVENTS, about 100 KB of log, caps any task; past it only the
# final event is written (the row keeps the progress, which GET /api/tasks/<id> shows).
PROGRESS_REPEAT_SECONDS = 5.0
TASK_MAX_EVENTS = 1_000


@dataclass
class _Running:
    task: Task
    work: asyncio.Task[None] | None = None
    percent: int = 0  # the latest reported (the row gets it with the next lease renewal)
    cancelled: bool = False
    last_seq: int = 0  # the number of the last event this runner wrote for the task
    written: int = 0  # events this runner wrote for the task (TASK_MAX_EVENTS)
    reported: int = -1  # the percentage of the last progress event written
    reported_at: float = 0.0  # and when (time.monotonic())

    def progress_due(self, percent: int) -> bool:
        """Whether a progress event at ``percent`` goes to the log (PROGRESS_REPEAT_SECONDS, TASK_MAX_EVENTS)."""
        now = time.monotonic()
        if self.written >= TASK_MAX_EVENTS:
            return False
        if percent == self.reported and now - self.reported_at < PROGRESS_REPEAT_SECONDS:
            return False
        self.reported, self.reported_at = percent, now
        return True

    async def event(self, kind: str, data: dict[str, Any]) -> None:
        """A progress event. A failed write (Redis away) loses that event, not the task:
        the row keeps the progress and the outcome, which readers fall back on."""
        self.written += 1
        try:
            self.last_seq = await task_event(self.task.pk, kind, data, after=self.last_seq)
        except Exception:
            logger.warning("could not write an event of task %s", self.task.pk, exc_info=True)

    async def progress(self, percent: int, message: str) -> None:
        """tasks.context.report_progress: the row gets the percentage with the next lease
        renewal, the log an event when progress_due says so."""
        self.percent = max(0, min(100, int(percent)))
        if self.progress_due(self.percent):
            await self.event("progress", {"progress": self.percent, "status": "running", "message": str(message)})


class TaskRunner:
    def __init__(self, *, concurrency: int) -> None:
        self.runner_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.concurrency = concurrency
        self.running: dict[int, _Running] = {}
        self.wakeup = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self._background: list[asyncio.Task[None]] = []
        # Synchronous task functions run here, one thread per task it runs at most.
        self.threads = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="task")

    def start(self) -> None:
        """Run in the background (the in-process runner of a web worker)."""
        self._background = [spawn(self.run_forever(), name="task-runner")]

    async def run_forever(self) -> None:
        watcher = spawn(self._watch_forever(), name="task-leases")
        try:
            while True:
                try:
                    await self.poll_once()
                except Exception:
                    logger.exception("polling for tasks failed")
                await self._wait_for_work()
        finally:
            watcher.cancel()

    async def poll_once(self) -> None:
        for task in await database_sync_to_async(services.task_sweep)():
            await task_final_event(task)
        free = self.concurrency - len(self.running)
        if free <= 0:
            return
        for task in await database_sync_to_async(services.task_claim)(runner=self.runner_id, limit=free):
            running = _Running(task)
            self.running[task.pk] = running
            running.work = spawn(self._execute(running), name=f"task-{task.pk}")

    async def _wait_for_work(self) -> None:
        if self.running and len(self.running) >= self.concurrency:
            await asyncio.sleep(IDLE_POLL_SECONDS)
            return
        if redis_configured() and not self._in_process:
            with contextlib.suppress(Exception):
                await async_redis(WAKE_KEY).blpop([WAKE_KEY], timeout=IDLE_POLL_SECONDS)
                return
            await asyncio.sleep(IDLE_POLL_SECONDS)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(IDLE_POLL_SECONDS):  # not wait_for: Python 3.11's can drop a cancel
                await self.wakeup.wait()
        self.wakeup.clear()

    @property
    def _in_process(self) -> bool:
        return bool(self._background)

    async def _watch_forever(self) -> None:
        """Cancel flags every CANCEL_POLL_SECONDS; lease renewal every LEASE_RENEW_SECONDS."""
        next_renewal = time.monotonic()
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            if not self.running:
                continue
            try:
                if time.monotonic() >= next_renewal:
                    next_renewal = time.monotonic() + services.LEASE_RENEW_SECONDS
                    progress = {task_id: r.percent for task_id, r in self.running.items()}
                    cancelled = await database_sync_to_async(services.leases_renew)(runner=self.runner_id, progress=progress)
                else:
                    cancelled = await database_sync_to_async(services.cancel_requested)(task_ids=list(self.running))
            except Exception:
                logger.exception("renewing task leases failed")
                continue
            for task_id in cancelled:
                running = self.running.get(task_id)
                if running is not None and running.work is not None and not running.cancelled:
                    running.cancelled = True
                    running.work.cancel()

    async def _execute(self, running: _Running) -> None:
        row = running.task
        status, result, error, failure = Task.Status.SUCCEEDED, None, "", None
        try:
            message = "started" if row.attempts <= 1 else f"retrying (attempt {row.attempts}) after the task worker stopped"
            await running.event("progress", {"progress": row.progress, "status": "running", "message": message})
            task = task_for_kind(row.kind)
            await _signal(task_started, task, task_result_from_row(task=task, row=row))
            # What it returns is stored as JSON: anything else fails the task, not the row's write.
            result = normalize_json(await self._call(task, running))
        except asyncio.CancelledError:
            if not running.cancelled:
                raise  # the runner is shutting down: the lease will expire and the task be retried
            status, error = Task.Status.CANCELLED, "cancelled"
        except Exception as exception:
            logger.exception("task %s failed", row.pk)
            status, error = Task.Status.FAILED, f"{type(exception).__name__}: {exception}"
            failure = {"exception_class_path": get_module_path(type(exception)), "traceback": get_exception_traceback(exception)}
        finally:
            self.running.pop(row.pk, None)
        finished = await database_sync_to_async(services.task_finish)(
            task_id=row.pk, runner=self.runner_id, status=status, result=result, error=error, failure=failure
        )
        if finished:
            row.status, row.result, row.error = status, result, error
            try:
                await task_final_event(row, after=running.last_seq)
            except Exception:  # the row has the outcome; event-stream readers fall back on it
                logger.warning("could not write the final event of task %s", row.pk, exc_info=True)
            with contextlib.suppress(LookupError, Task.DoesNotExist):
                finished_row = await Task.objects.aget(pk=row.pk)
                task = task_for_kind(row.kind)
                await _signal(task_finished, task, task_result_from_row(task=task, row=finished_row))
        self.wakeup.set()

    async def _call(self, task: DjangoTask[Any, Any], running: _Running) -> Any:
        """Call the task function as its row says, as its owner (tasks it enqueues are theirs)."""
        row = running.task
        args: list[Any] = list(row.args)
        if task.takes_context:
            result = task_result_from_row(task=task, row=row)
            args.insert(0, RunnerContext(task_result=result, owner_id=row.owner_id, sink=running, loop=self.loop))
        with task_owner(owner_id=row.owner_id):
            if iscoroutinefunction(task.func):
                return await task.func(*args, **row.params)
            # A thread of the runner's own, not the database thread: a long function must not
            # hold up lease renewals. Cancelling stops the wait; Python cannot stop the thread.
            return await DatabaseSyncToAsync(task.func, thread_sensitive=False, executor=self.threads)(*args, **row.params)

    async def close(self) -> None:
        for background in self._background:
            background.cancel()
        for running in list(self.running.values()):
            if running.work is not None:
                running.work.cancel()
        self.threads.shutdown(wait=False)


async def _signal(signal: Signal, task: DjangoTask[Any, Any], result: TaskResult[Any]) -> None:
    """django-tasks' task_started / task_finished, sent as its backends send them (by the
    backend's class); a failing receiver is logged, no more."""
    for receiver, response in await signal.asend_robust(sender=type(task.get_backend()), task_result=result):
        if isinstance(response, Exception):
            logger.warning("a receiver of %s failed: %r (%s)", signal, response, receiver)


_local_runners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TaskRunner] = weakref.WeakKeyDictionary()


def ensure_local_runner() -> TaskRunner:
    """This process's in-process runner (started on first use)."""
    loop = asyncio.get_running_loop()
    runner = _local_runners.get(loop)
    if runner is None:
        runner = TaskRunner(concurrency=8)
        runner.start()
        _local_runners[loop] = runner
        local_wakeup_register(loop=loop, event=runner.wakeup)
    return runner
