"""Telling a runner there is work: a Redis list the task workers block on, or the
in-process runners' events (one per event loop). A runner that is not woken finds new
rows within a second anyway (tasks.runner, IDLE_POLL_SECONDS)."""

from __future__ import annotations

import asyncio
import logging
import weakref

from django.conf import settings

from core.redis_clients import redis_configured, sync_redis

logger = logging.getLogger(__name__)

WAKE_KEY = "tasks:wake"
# A wake-up nobody picks up is dropped after this long; the row stays queued.
WAKE_TTL_SECONDS = 60

# The wake-up event of each in-process runner, by its event loop (tasks.runner registers them).
_local_wakeups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event] = weakref.WeakKeyDictionary()


def local_wakeup_register(*, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    _local_wakeups[loop] = event


def wakes_locally() -> bool:
    """Whether this process runs its own tasks (no Redis, or TASKS_IN_PROCESS)."""
    return bool(settings.TASKS_IN_PROCESS) or not redis_configured()


def task_wake() -> None:
    """Wake a runner, from any thread (the backend calls it once the new row is committed)."""
    if wakes_locally():
        for loop, event in list(_local_wakeups.items()):
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)
        return
    try:
        pipe = sync_redis(WAKE_KEY).pipeline(transaction=False)
        pipe.lpush(WAKE_KEY, "1")
        pipe.ltrim(WAKE_KEY, 0, 99)
        pipe.expire(WAKE_KEY, WAKE_TTL_SECONDS)
        pipe.execute()
    except Exception:  # the worker polls the table anyway
        logger.warning("could not wake the task worker", exc_info=True)
