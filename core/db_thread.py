"""A database thread that keeps its connection, for hot paths of async code.

``database_sync_to_async`` closes and reopens the database connection around every
call (CONN_MAX_AGE is 0 under ASGI, as Django advises), which costs more than a short
query. Work that runs often and briefly (starting a token stream, storing a reply)
goes to this one long-lived thread instead; its connection is dropped after an error
and reopened on the next call, and checked before use when it has been idle (a
database restart leaves it dead without anyone noticing).
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import connection

from core.errors import DomainError

T = TypeVar("T")

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-thread")


# A connection unused for this long is checked (one round trip) before its next use.
IDLE_CHECK_SECONDS = 1.0
_last_used = threading.local()


def drop_if_unusable() -> None:
    """Close this thread's connection if it sat idle and no longer works (the database
    restarted meanwhile), so that the next query opens a fresh one. Runs before each
    unit of work on a thread that keeps its connection; costs nothing when busy."""
    now = time.monotonic()
    idle = now - getattr(_last_used, "at", now)
    _last_used.at = now
    if connection.connection is not None and idle > IDLE_CHECK_SECONDS and not connection.is_usable():
        connection.close()


def _call(function: Callable[..., T], kwargs: dict[str, Any]) -> T:
    drop_if_unusable()
    try:
        return function(**kwargs)
    except DomainError:
        raise  # a refusal: the connection is fine
    except Exception:
        connection.close()  # a broken connection is not reused
        raise


async def in_db_thread(function: Callable[..., T], **kwargs: Any) -> T:
    """Run ``function(**kwargs)`` on the database thread and return its result."""
    return await asyncio.get_running_loop().run_in_executor(_executor, functools.partial(_call, function, kwargs))
