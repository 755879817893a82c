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

    def existing(self) -> T | None:
        """The running loop's object if it was made, without making it."""
        return self.objects.get(asyncio.get_running_loop())


class Inbox(Generic[T]):
    """A queue whose ``get`` returns a future rather than a coroutine, for one socket's events.

    Every open socket has one or two (daphne's queue of its client's events, core.servers.daphne;
    its channel's, core.layer), and an idle socket waits on them all its life. asyncio.Queue
    costs about 3 KiB empty (three deques), and its ``get`` is a coroutine, which Channels'
    consumers wrap in a task per receive; this costs two empty slots, and a waiting ``get`` is
    one future. Unbounded; getters are served in order; a getter cancelled before its item
    came gets none (the item goes to the next getter, or waits). An item handed to a getter
    whose awaiting task is then cancelled is the canceller's to ``put_back``, as with any
    awaited receive that was cancelled."""

    __slots__ = ("items", "more_waiters", "waiter")

    def __init__(self) -> None:
        self.items: list[T] | None = None  # made on the first put that nobody waits for
        self.waiter: asyncio.Future[T] | None = None
        self.more_waiters: list[asyncio.Future[T]] | None = None  # getters after the first (rare)

    def size(self) -> int:
        """Items waiting. (No ``__len__``: daphne tests its queue for truth, "is there one".)"""
        return len(self.items) if self.items else 0

    def put_nowait(self, item: T) -> None:
        waiter = self._next_waiter()
        if waiter is not None:
            waiter.set_result(item)
        elif self.items is None:
            self.items = [item]
        else:
            self.items.append(item)

    def put_back(self, item: T) -> None:
        """Return an item taken by a getter that was cancelled: it is the next one out."""
        if self.items is None:
            self.items = [item]
        else:
            self.items.insert(0, item)

    def get(self) -> asyncio.Future[T]:
        """A future of the next item."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if self.items:
            future.set_result(self.items.pop(0))
            if not self.items:
                self.items = None
            return future
        current = self.waiter
        if current is None or current.done():
            current = self.waiter = self._next_waiter()
        if current is None:
            self.waiter = future
        elif self.more_waiters is None:
            self.more_waiters = [future]
        else:
            self.more_waiters.append(future)
        return future

    def _next_waiter(self) -> asyncio.Future[T] | None:
        """The oldest getter still waiting (cancelled ones are dropped), taken off the list."""
        waiter, self.waiter = self.waiter, None
        while waiter is None or waiter.done():
            if not self.more_waiters:
                return None
            waiter = self.more_waiters.pop(0)
        if self.more_waiters is not None and not self.more_waiters:
            self.more_waiters = None
        return waiter
