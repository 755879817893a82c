"""Runs tasks: claims them from the table with a lease, reports progress to the task's
log, renews leases, stops cancelled ones within a second and records the outcome.

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
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async

from core.aio import spawn
from core.eventlog import get_log
from core.redis_clients import async_redis, redis_configured
from tasks import services
from tasks.models import Task
from tasks.registry import KINDS

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


async def task_event(task_id: int, kind: str, data: dict[str, Any], *, after: int = 0) -> int:
    """Append one event to the task's log (numbered from 1, and above ``after``, the last
    number this writer gave); return its number."""
    return await get_log().append_next(f"task:{task_id}", kind=kind, data=data, floor=after + 1)


async def task_final_event(task: Task, *, after: int = 0) -> None:
    if task.status == Task.Status.SUCCEEDED:
        await task_event(task.pk, "complete", {"status": "succeeded", "result": task.result}, after=after)
    else:
        await task_event(task.pk, "failed", {"status": task.status, "error": task.error}, after=after)


@dataclass
class _Running:
    task: Task
    work: asyncio.Task[None] | None = None
    progress: int = 0
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


@dataclass
class _Context:
    runner: TaskRunner
    running: _Running
    task_id: int = field(init=False)
    owner_id: int = field(init=False)

    def __post_init__(self) -> None:
        self.task_id, self.owner_id = self.running.task.pk, self.running.task.owner_id

    async def progress(self, percent: int, message: str) -> None:
        self.running.progress = max(0, min(100, int(percent)))
        if self.running.progress_due(self.running.progress):
            await self.running.event("progress", {"progress": self.running.progress, "status": "running", "message": message})


class TaskRunner:
    def __init__(self, *, concurrency: int) -> None:
        self.runner_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.concurrency = concurrency
        self.running: dict[int, _Running] = {}
        self.wakeup = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self._background: list[asyncio.Task[None]] = []

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
                await async_redis(services.WAKE_KEY).blpop([services.WAKE_KEY], timeout=IDLE_POLL_SECONDS)
                return
            await asyncio.sleep(IDLE_POLL_SECONDS)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wakeup.wait(), IDLE_POLL_SECONDS)
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
                    progress = {task_id: r.progress for task_id, r in self.running.items()}
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
        task = running.task
        status, result, error = Task.Status.SUCCEEDED, None, ""
        try:
            message = "started" if task.attempts <= 1 else f"retrying (attempt {task.attempts}) after the task worker stopped"
            await running.event("progress", {"progress": task.progress, "status": "running", "message": message})
            result = await KINDS[task.kind].run(_Context(self, running), task.params)
        except asyncio.CancelledError:
            if not running.cancelled:
                raise  # the runner is shutting down: the lease will expire and the task be retried
            status, error = Task.Status.CANCELLED, "cancelled"
        except Exception as exception:
            logger.exception("task %s failed", task.pk)
            status, error = Task.Status.FAILED, f"{type(exception).__name__}: {exception}"
        finally:
            self.running.pop(task.pk, None)
        finished = await database_sync_to_async(services.task_finish)(
            task_id=task.pk, runner=self.runner_id, status=status, result=result, error=error
        )
        if finished:
            task.status, task.result, task.error = status, result, error
            try:
                await task_final_event(task, after=running.last_seq)
            except Exception:  # the row has the outcome; event-stream readers fall back on it
                logger.warning("could not write the final event of task %s", task.pk, exc_info=True)
        self.wakeup.set()

    async def close(self) -> None:
        for background in self._background:
            background.cancel()
        for running in list(self.running.values()):
            if running.work is not None:
                running.work.cancel()


_local_runners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TaskRunner] = weakref.WeakKeyDictionary()


def ensure_local_runner() -> TaskRunner:
    """This process's in-process runner (started on first use)."""
    loop = asyncio.get_running_loop()
    runner = _local_runners.get(loop)
    if runner is None:
        runner = TaskRunner(concurrency=8)
        runner.start()
        _local_runners[loop] = runner
    return runner


def wake_local_runner() -> None:
    """Wake the in-process runner(s), from any thread."""
    for loop, runner in list(_local_runners.items()):
        if not loop.is_closed():
            loop.call_soon_threadsafe(runner.wakeup.set)
