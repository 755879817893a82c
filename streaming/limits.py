"""Limits on generations, counted across all workers (in process without Redis).

- LLM_MAX_CONCURRENT generations at once: a sorted set of running stream ids scored by
  their producer's last heartbeat, so the slot of a producer that died frees itself.
- LLM_TOKENS_PER_DAY per user (unset: no limit): a counter per user per UTC day.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime

from django.conf import settings

from project.redis_clients import async_redis, redis_configured

RUNNING_KEY = "llm:running"
# A slot whose producer has not refreshed it for this long is free again.
SLOT_STALE_SECONDS = 15.0

_ACQUIRE_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
return 1
"""

_local_running: dict[str, float] = {}
_local_tokens: dict[str, int] = defaultdict(int)


def _budget_key(user_id: int) -> str:
    return f"llm:tokens:{user_id}:{datetime.now(UTC):%Y%m%d}"


async def slot_acquire(*, stream_id: str) -> bool:
    now = time.time()
    limit = int(settings.LLM_MAX_CONCURRENT)
    if not redis_configured():
        for name, seen in list(_local_running.items()):
            if seen < now - SLOT_STALE_SECONDS:
                del _local_running[name]
        if len(_local_running) >= limit:
            return False
        _local_running[stream_id] = now
        return True
    client = async_redis(RUNNING_KEY)
    acquired = await client.eval(_ACQUIRE_SCRIPT, 1, RUNNING_KEY, now, now - SLOT_STALE_SECONDS, limit, stream_id)
    return bool(acquired)


async def slot_refresh(*, stream_id: str) -> None:
    if not redis_configured():
        _local_running[stream_id] = time.time()
        return
    await async_redis(RUNNING_KEY).zadd(RUNNING_KEY, {stream_id: time.time()}, xx=True)


async def slot_release(*, stream_id: str) -> None:
    if not redis_configured():
        _local_running.pop(stream_id, None)
        return
    await async_redis(RUNNING_KEY).zrem(RUNNING_KEY, stream_id)


async def budget_exceeded(*, user_id: int) -> bool:
    budget = settings.LLM_TOKENS_PER_DAY
    if budget is None:
        return False
    if not redis_configured():
        return _local_tokens[_budget_key(user_id)] >= budget
    key = _budget_key(user_id)
    used = await async_redis(key).get(key)
    return int(used or 0) >= budget


async def budget_spend(*, user_id: int, tokens: int) -> None:
    if settings.LLM_TOKENS_PER_DAY is None or tokens <= 0:
        return
    key = _budget_key(user_id)
    if not redis_configured():
        _local_tokens[key] += tokens
        return
    pipe = async_redis(key).pipeline(transaction=False)
    pipe.incrby(key, tokens)
    pipe.expire(key, 2 * 86400)
    await pipe.execute()


def reset_local_state() -> None:
    _local_running.clear()
    _local_tokens.clear()
