"""Limits on generations, counted across all workers in Redis.

- LLM_MAX_CONCURRENT generations at once, and LLM_MAX_CONCURRENT_PER_USER per user (so
  that one account cannot take every slot): sorted sets of running stream ids scored by
  their producer's last heartbeat, so the slot of a producer that died frees itself.
- LLM_TOKENS_PER_DAY per user (unset: no limit): a counter per user per UTC day.
- What one stream may write to its log (stream_cap): the log lives in Redis for ten
  minutes after it ends, so its size is what one request can make Redis hold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from django.conf import settings

from core.redis_clients import async_redis, hash_tag

RUNNING_KEY = "llm:running"
# A slot whose producer has not refreshed it for this long is free again.
SLOT_STALE_SECONDS = 15.0

_ACQUIRE_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
return 1
"""


def _budget_key(user_id: int) -> str:
    return f"llm:tokens:{hash_tag(f'user:{user_id}')}:{datetime.now(UTC):%Y%m%d}"


def _user_running_key(user_id: int) -> str:
    return f"llm:running:user:{hash_tag(f'user:{user_id}')}"


def _pools(user_id: int) -> list[tuple[str, int]]:
    """The sorted sets a generation takes a slot in, with their sizes: one per user, then
    the one for everybody (the user's first, so that a user at their own cap never
    takes, even briefly, a slot everyone else needs)."""
    return [
        (_user_running_key(user_id), int(settings.LLM_MAX_CONCURRENT_PER_USER)),
        (RUNNING_KEY, int(settings.LLM_MAX_CONCURRENT)),
    ]


async def slot_acquire(*, stream_id: str, user_id: int) -> Literal["ok", "user", "all"]:
    """Take a generation slot: "ok", or which pool is full ("user": this user's
    LLM_MAX_CONCURRENT_PER_USER; "all": LLM_MAX_CONCURRENT)."""
    now = time.time()
    taken: list[str] = []
    for (key, limit), pool in zip(_pools(user_id), ("user", "all"), strict=True):
        if not await _pool_take(key, limit, stream_id, now):
            for held in taken:
                await _pool_drop(held, stream_id)
            return "user" if pool == "user" else "all"
        taken.append(key)
    return "ok"


async def _pool_take(key: str, limit: int, stream_id: str, now: float) -> bool:
    # Each pool's key lives on its own shard; the script is atomic within one.
    acquired = await async_redis(key).eval(_ACQUIRE_SCRIPT, 1, key, now, now - SLOT_STALE_SECONDS, limit, stream_id)
    return bool(acquired)


async def _pool_drop(key: str, stream_id: str) -> None:
    await async_redis(key).zrem(key, stream_id)


async def slot_refresh(*, stream_id: str, user_id: int) -> None:
    now = time.time()
    for key, _ in _pools(user_id):
        await async_redis(key).zadd(key, {stream_id: now}, xx=True)


async def slot_release(*, stream_id: str, user_id: int) -> None:
    for key, _ in _pools(user_id):
        await _pool_drop(key, stream_id)


async def budget_exceeded(*, user_id: int) -> bool:
    budget = settings.LLM_TOKENS_PER_DAY
    if budget is None:
        return False
    key = _budget_key(user_id)
    used = await async_redis(key).get(key)
    return int(used or 0) >= budget


async def budget_spend(*, user_id: int, tokens: int) -> None:
    if settings.LLM_TOKENS_PER_DAY is None or tokens <= 0:
        return
    key = _budget_key(user_id)
    pipe = async_redis(key).pipeline(transaction=False)
    pipe.incrby(key, tokens)
    pipe.expire(key, 2 * 86400)
    await pipe.execute()


@dataclass(frozen=True, slots=True)
class StreamCap:
    """What one token stream may write to its log (docs/protocol.md, "Limits"): at most
    ``events`` token events holding at most ``chars`` characters. The final event repeats
    the whole content, so a stream holds at most about twice ``chars`` characters."""

    events: int
    chars: int

    def fit(self, tokens: list[str], *, events: int, chars: int) -> tuple[list[str], bool]:
        """The tokens that still fit after ``events`` events and ``chars`` characters (the
        one that crosses the character cap cut short), and whether any did not fit."""
        events_left, chars_left = self.events - events, self.chars - chars
        kept: list[str] = []
        for token in tokens:
            if events_left <= 0 or len(token) > chars_left:
                if events_left > 0 and chars_left > 0:
                    kept.append(token[:chars_left])
                return kept, True
            kept.append(token)
            events_left -= 1
            chars_left -= len(token)
        return kept, False


def stream_cap() -> StreamCap:
    """LLM_STREAM_MAX_EVENTS and LLM_STREAM_MAX_CHARS (or LLM_MAX_REPLY_CHARS, if lower)."""
    chars = min(int(settings.LLM_STREAM_MAX_CHARS), int(settings.LLM_MAX_REPLY_CHARS))
    return StreamCap(events=int(settings.LLM_STREAM_MAX_EVENTS), chars=chars)
