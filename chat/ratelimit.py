"""A sliding-window rate limit per user, shared by every worker, WebSocket and REST.

With Redis each user has a sorted set of the times of their accepted messages; a Lua
script trims it to the window, counts and records atomically, using Redis' clock so
that workers with different clocks agree. Without Redis the same log lives in process.
If Redis cannot be reached the limit fails open: chat keeps working during a Redis
blip, and the limit is back as soon as Redis is.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict, deque

import redis
from django.conf import settings

from project.redis_clients import redis_configured, sync_redis

logger = logging.getLogger(__name__)

KEY = "chat:rate:{user_id}"

# Returns 0 when the hit is accepted, else the milliseconds until one more would be.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""

_local_lock = threading.Lock()
_local_hits: dict[int, deque[float]] = defaultdict(deque)


def reset_local_state() -> None:
    with _local_lock:
        _local_hits.clear()


def rate_limit_hits(*, user_ids: list[int]) -> list[float]:
    """Record one message per entry, in order; for each, 0 if allowed, else the
    seconds until sending works again. One Redis round trip for the lot."""
    if not user_ids:
        return []
    limit = int(settings.CHAT_RATE_LIMIT)
    window = float(settings.CHAT_RATE_WINDOW)
    if not redis_configured():
        return [_local_hit(user_id, limit, window) for user_id in user_ids]
    try:
        pipe = sync_redis().pipeline(transaction=False)
        for user_id in user_ids:
            pipe.eval(_SCRIPT, 1, KEY.format(user_id=user_id), int(window * 1000), limit, uuid.uuid4().hex)
        waits = pipe.execute()
    except (redis.RedisError, OSError) as exc:
        logger.warning("rate limit unavailable (%s); allowing %d messages", exc, len(user_ids))
        return [0.0] * len(user_ids)
    return [int(wait_ms) / 1000.0 for wait_ms in waits]


def _local_hit(user_id: int, limit: int, window: float) -> float:
    now = time.monotonic()
    with _local_lock:
        hits = _local_hits[user_id]
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) >= limit:
            return max(0.001, hits[0] + window - now)
        hits.append(now)
        return 0.0
