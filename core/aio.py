"""Background tasks that outlive the request or socket that started them, and the objects
a worker keeps one of per event loop."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import uuid
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# This worker process's id: in a token stream's meta data (which worker produces it) and
# in the key of each of its connections (presence members, per-user connection counts).
WORKER_ID = uuid.uuid4().hex[:12]
_keys = itertools.count(1)


def new_worker_key() -> str:
    """A key no other connection of any worker has: this worker's id and a number."""
    return f"{WORKER_ID}:{next(_keys)}"


def spawn(coroutine: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
    """Start a task in a fresh context.

    A task inherits its creator's context variables, among them asgiref's executor of
    the HTTP request that created it; once that request has finished, the task's
    ``database_sync_to_async`` calls fail ("CurrentThreadExecutor already quit"). A
    fresh context makes them use the process-wide database thread instead.
    """
    return asyncio.get_running_loop().create_task(coroutine, name=name, context=contextvars.Context())


class PerLoop(Generic[T]):
    """One object per running event loop, made by ``factory`` on first use: a worker
    process has one loop, so one object; tests get a fresh one with each loop."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self.factory = factory
        self.objects: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def __call__(self) -> T:
        loop = asyncio.get_running_loop()
        made = self.objects.get(loop)
        if made is None:
            made = self.objects[loop] = self.factory()
        return made
