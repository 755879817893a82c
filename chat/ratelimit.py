"""A sliding-window rate limit per user, shared by every worker, WebSocket and REST.

With Redis each user has a sorted set of the times of their accepted messages; a Lua
script trims it to the window, counts and records atomically, using Redis' clock so
that workers with different clocks agree (without REDIS_URL, on the in-process Redis).
If Redis cannot be reached the limit fails open: chat keeps working during a Redis
blip, and the limit is back as soon as Redis is.
"""

from __future__ import annotations

import logging
import uuid

import redis
from django.conf import settings
from redis.commands.core import Script as Script

from core.redis_clients import group_for_scripts, sync_redis_at

logger = logging.getLogger(__name__)

# The user as a hash tag: beside the user's connection counts in a Redis Cluster.
KEY = "chat:rate:{{user:{user_id}}}"

# One call records a whole batch: KEYS are the senders' keys in order (a key may repeat),
# ARGV the window (ms), the limit, then one unique member per hit. Returns, per hit, 0
# when accepted, else the milliseconds until one more would be.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local waits = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    waits[i] = math.max(1, tonumber(oldest[2]) + window - now)
  else
    redis.call('ZADD', key, now, ARGV[2 + i])
    redis.call('PEXPIRE', key, window)
    waits[i] = 0
  end
end
return waits
"""
_script: Script | None = None


def _rate_script() -> Script:
    global _script
    if _script is None:
        # Sent once per shard, then called by its SHA (redis-py loads it on NOSCRIPT).
        _script = sync_redis_at(0).register_script(_SCRIPT)
    return _script


def rate_limit_hits(*, user_ids: list[int]) -> list[float]:
    """Record one message per entry, in order; for each, 0 if allowed, else the
    seconds until sending works again. One Redis round trip per shard (per hash slot in
    a Redis Cluster, where a script's keys must share one)."""
    if not user_ids:
        return []
    limit = int(settings.CHAT_RATE_LIMIT)
    window = float(settings.CHAT_RATE_WINDOW)
    keys = [KEY.format(user_id=user_id) for user_id in user_ids]
    members = [f"{uuid.uuid4().hex}" for _ in user_ids]
    waits = [0.0] * len(user_ids)
    for shard, positions in group_for_scripts(keys):
        try:
            shard_waits = _rate_script()(
                keys=[keys[p] for p in positions],
                args=[int(window * 1000), limit, *(members[p] for p in positions)],
                client=sync_redis_at(shard),
            )
        except (redis.RedisError, OSError) as exc:
            logger.warning("rate limit unavailable (%s); allowing %d messages", exc, len(positions))
            continue
        for position, wait_ms in zip(positions, shard_waits, strict=True):
            waits[position] = int(wait_ms) / 1000.0
    return waits
