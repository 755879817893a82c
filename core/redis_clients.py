"""The process's Redis clients, created on first use when Redis is configured.

Redis is one server (``REDIS_URL``), several shards (``REDIS_URLS``), or masters found
through Sentinel (``REDIS_SENTINELS`` + ``REDIS_SENTINEL_MASTERS``, one shard per
master). Sharding is client-side: every key, stream and pub/sub topic lives on the
shard its *shard key* hashes to (``shard_for``), the way channels_redis spreads its
channels. Callers pass the shard key; keys that a Lua script or pipeline touches
together share one (a room's presence keys, a stream's log and meta).

One pooled synchronous client per shard serves threads (services run in Django's sync
world); one asyncio client per shard per event loop serves consumers and async views.
"""

from __future__ import annotations

import asyncio
import binascii
import threading
import weakref
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.retry
import redis.sentinel
from django.conf import settings
from redis.backoff import ExponentialBackoff

# Keyed by the shard's address as well as its index, so that tests pointing REDIS_SHARDS
# elsewhere (override_settings) get clients of their own.
_sync_clients: dict[tuple[int, str], redis.Redis] = {}
_sync_lock = threading.Lock()
_ShardClients = dict[tuple[int, str], redis.asyncio.Redis]
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ShardClients] = weakref.WeakKeyDictionary()

# Short enough that a dead Redis is noticed quickly, long enough for a busy one.
CONNECT_TIMEOUT_SECONDS = 2.0
# redis-py's pools stop at 100 connections and then raise. Every stream reader holds one
# for its blocking XREAD, so a worker with a few hundred open streams needs more; Redis
# itself accepts 10,000 clients by default.
MAX_CONNECTIONS = 4096
# A restarted Redis leaves every pooled connection dead, and redis-py's from_url retries
# nothing: each command would fail once per stale connection (a token stream or a task
# ended by an error). Commands retry connection errors on a fresh connection with
# back-off (0.05 s doubling to 0.5 s, about 1.7 s in all), riding out a restart.
# Time-outs are not retried: a stalled Redis already had REDIS_SOCKET_TIMEOUT.
COMMAND_RETRIES = 5


def redis_configured() -> bool:
    return bool(settings.REDIS_SHARDS)


def shard_count() -> int:
    return len(settings.REDIS_SHARDS)


def shard_for(shard_key: str) -> int:
    """The shard a key lives on: CRC32 modulo the number of shards.

    The mapping changes when the list of shards does; docs/deployment.md says what that
    costs (streams and presence in flight move, pub/sub subscribers re-subscribe)."""
    count = len(settings.REDIS_SHARDS)
    if count == 1:
        return 0
    return binascii.crc32(shard_key.encode()) % count


def group_by_shard(shard_keys: Iterable[str]) -> dict[int, list[int]]:
    """Positions of ``shard_keys`` grouped by shard, in order: for batches that span keys
    (one pipeline or script call per shard instead of one round trip per key)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for position, key in enumerate(shard_keys):
        groups[shard_for(key)].append(position)
    return dict(groups)


def _client_options(**overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_timeout": settings.REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "health_check_interval": 30,
        "decode_responses": True,
        "max_connections": MAX_CONNECTIONS,
    }
    options.update(overrides)
    return options


def _sentinel_options(shard: dict[str, Any]) -> dict[str, Any]:
    """Options for the connections to the master a Sentinel names."""
    return {"db": shard["db"], "password": shard["password"]}


def _sentinel_connection(shard: dict[str, Any]) -> dict[str, Any]:
    """Options for the connections to the Sentinels themselves (asked which server is the
    master whenever a connection to it is opened)."""
    return {
        "socket_timeout": CONNECT_TIMEOUT_SECONDS,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "password": shard["sentinel_password"],
    }


def _open_client(index: int, client_class: Any, sentinel_class: Any, **overrides: Any) -> Any:
    """A client of shard ``index``: redis-py's synchronous or asyncio classes, which take
    the same arguments."""
    shard = settings.REDIS_SHARDS[index]
    if "url" in shard:
        return client_class.from_url(shard["url"], **_client_options(**overrides))
    sentinel = sentinel_class(shard["sentinels"], sentinel_kwargs=_sentinel_connection(shard))
    options = _client_options(**_sentinel_options(shard), **overrides)
    return sentinel.master_for(shard["master"], redis_class=client_class, **options)


def _command_retry(retry_class: Any) -> Any:
    return retry_class(ExponentialBackoff(cap=0.5, base=0.05), COMMAND_RETRIES, (redis.ConnectionError,))


def _new_sync_client(index: int) -> redis.Redis:
    client: redis.Redis = _open_client(index, redis.Redis, redis.sentinel.Sentinel, retry=_command_retry(redis.retry.Retry))
    return client


def new_async_client(index: int, **overrides: Any) -> redis.asyncio.Redis:
    """A new asyncio client for shard ``index`` (the broker's dedicated subscriber
    connections use this with their own timeouts)."""
    client: redis.asyncio.Redis = _open_client(index, redis.asyncio.Redis, redis.asyncio.sentinel.Sentinel, **overrides)
    return client


def _cache_key(index: int) -> tuple[int, str]:
    shard = settings.REDIS_SHARDS[index]
    return index, shard.get("url") or shard["master"]


def sync_redis_at(index: int) -> redis.Redis:
    key = _cache_key(index)
    client = _sync_clients.get(key)
    if client is None:
        with _sync_lock:
            client = _sync_clients.get(key)
            if client is None:
                client = _sync_clients[key] = _new_sync_client(index)
    return client


def sync_redis(shard_key: str) -> redis.Redis:
    """The synchronous client of the shard that holds ``shard_key``."""
    return sync_redis_at(shard_for(shard_key))


def async_redis_at(index: int) -> redis.asyncio.Redis:
    loop = asyncio.get_running_loop()
    clients = _async_clients.get(loop)
    if clients is None:
        clients = _async_clients[loop] = {}
    key = _cache_key(index)
    client = clients.get(key)
    if client is None:
        client = clients[key] = new_async_client(index, retry=_command_retry(redis.asyncio.retry.Retry))
    return client


def async_redis(shard_key: str) -> redis.asyncio.Redis:
    """This event loop's client of the shard that holds ``shard_key``."""
    return async_redis_at(shard_for(shard_key))
