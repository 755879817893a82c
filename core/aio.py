"""Background tasks that outlive the request or socket that started them."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def spawn(coroutine: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
    """Start a task in a fresh context.

    A task inherits its creator's context variables, among them asgiref's executor of
    the HTTP request that created it; once that request has finished, the task's
    ``database_sync_to_async`` calls fail ("CurrentThreadExecutor already quit"). A
    fresh context makes them use the process-wide database thread instead.
    """
    return asyncio.get_running_loop().create_task(coroutine, name=name, context=contextvars.Context())
