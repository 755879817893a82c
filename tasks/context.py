"""What task code uses besides Django's ``@task``: whose task an ``.enqueue()`` creates,
and progress reports from a running task.

    with task_owner(owner_id=request.user.pk):
        result = resize_images.enqueue(album_id=7)

    @task(takes_context=True)
    async def resize_images(context: TaskContext, *, album_id: int) -> dict:
        await report_progress(context, percent=50, message="half of them")

Every task row has an owner (its events stream and its notification are theirs), and
Django's ``enqueue(*args, **kwargs)`` passes everything to the task function, so the
owner travels beside the call, in a context variable, as a language or time zone does
in Django (``translation.override``). A task enqueued while a task runs belongs to that
task's owner (the runner sets it).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from django_tasks import TaskContext

_owner_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("task_owner_id", default=None)


@contextmanager
def task_owner(*, owner_id: int) -> Iterator[None]:
    """Tasks enqueued inside this block belong to ``owner_id`` (asyncio tasks and
    ``sync_to_async`` calls started inside it too: they copy the context)."""
    token = _owner_id.set(owner_id)
    try:
        yield
    finally:
        _owner_id.reset(token)


def current_task_owner() -> int | None:
    """The owner ``task_owner`` set here, if any (the backend asks it on each enqueue)."""
    return _owner_id.get()


class ProgressSink(Protocol):
    """The runner's side of a running task's progress (tasks.runner)."""

    async def progress(self, percent: int, message: str) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RunnerContext(TaskContext):
    """The context our runner hands a ``@task(takes_context=True)`` function: Django's
    (``task_result``, ``attempt``), plus the owner and where progress goes."""

    owner_id: int
    sink: ProgressSink
    loop: asyncio.AbstractEventLoop  # the runner's: a synchronous task reports through it


async def report_progress(context: TaskContext, *, percent: int, message: str = "") -> None:
    """Report a running task's progress (0..100) and what it is doing. Readers of
    ``GET /api/tasks/<id>/events`` get an ``event: progress`` when the percentage
    changed, a repeat at most every few seconds (tasks.runner says why); the row keeps
    the latest. Under another backend (or ``task.call()``) it does nothing."""
    if isinstance(context, RunnerContext):
        await context.sink.progress(percent, message)


def report_progress_sync(context: TaskContext, *, percent: int, message: str = "") -> None:
    """``report_progress`` for a synchronous task function (which the runner runs in a
    thread of its own); waits until the event is written."""
    if not isinstance(context, RunnerContext):
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is context.loop:
        raise RuntimeError("report_progress_sync in the runner's event loop would wait for itself: await report_progress")
    asyncio.run_coroutine_threadsafe(context.sink.progress(percent, message), context.loop).result()


def context_owner_id(context: TaskContext) -> int:
    """The id of the user the running task belongs to."""
    if not isinstance(context, RunnerContext):
        raise TypeError("the task's owner is known only to tasks run by tasks.backend.RunnerBackend")
    return context.owner_id
