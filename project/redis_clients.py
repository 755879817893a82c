"""The process's Redis clients, created on first use when REDIS_URL is set.

One pooled synchronous client serves threads (services run in Django's sync world);
one asyncio client per event loop serves consumers and async views.
"""

from __future__ import annotations

import asyncio
import threading
import weakref

import redis
import redis.asyncio
from django.conf import settings

_sync_client: redis.Redis | None = None
_sync_lock = threading.Lock()
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = weakref.WeakKeyDictionary()

# Short enough that a dead Redis is noticed quickly, long enough for a busy one.
CONNECT_TIMEOUT_SECONDS = 2.0
# redis-py's pools stop at 100 connections and then raise. Every stream reader holds one
# for its blocking XREAD, so a worker with a few hundred open streams needs more; Redis
# itself accepts 10,000 clients by default.
MAX_CONNECTIONS = 4096


def redis_configured() -> bool:
    return bool(settings.REDIS_URL)


def _redis_url() -> str:
    url = settings.REDIS_URL
    assert url, "Redis is used only when REDIS_URL is set"
    return str(url)


def sync_redis() -> redis.Redis:
    global _sync_client
    if _sync_client is None:
        with _sync_lock:
            if _sync_client is None:
                _sync_client = redis.Redis.from_url(
                    _redis_url(),
                    socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
                    socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    health_check_interval=30,
                    decode_responses=True,
                    max_connections=MAX_CONNECTIONS,
                )
    return _sync_client


def async_redis() -> redis.asyncio.Redis:
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = redis.asyncio.Redis.from_url(
            _redis_url(),
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            health_check_interval=30,
            decode_responses=True,
            max_connections=MAX_CONNECTIONS,
        )
        _async_clients[loop] = client
    return client
