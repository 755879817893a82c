"""Limits on generations, counted across all workers in Redis.

- LLM_MAX_CONCURRENT generations at once, LLM_MAX_CONCURRENT_PER_USER per user (so
  that one account cannot take every slot), and a model's own ``max_concurrent`` of
  LLM_MODELS (an upstream that takes only so many requests at once): sorted sets of
  running stream ids scored by their producer's last heartbeat, so the slot of a
  producer that died frees itself.
- LLM_TOKENS_PER_DAY per user (unset: no limit): a counter per user per UTC day.
- What one stream may write to its log (stream_cap): the log lives in Redis for ten
  minutes after it ends, so its size is what one request can make Redis hold.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from django.conf import settings

from core.eventlog import Admission
from core.redis_clients import async_redis, async_redis_at, group_by_shard, group_for_scripts, hash_tag
from streaming.catalog import ModelSpec

RUNNING_KEY = "llm:running"
# A slot whose producer has not refreshed it for this long is free again.
SLOT_STALE_SECONDS = 15.0

_ACQUIRE_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
return 1
"""


# The daily budget, then every pool's check, then a slot in each: a stream's admission in the
# script that creates its log (core.eventlog.Admission), or a script of its own
# (slot_acquire, without the budget). KEYS: the pools, narrowest first, then the budget's
# counter if there is a budget; ARGV: now, stale before, the stream id, the budget ("" for
# none), then each pool's size. Returns 0, -1 for a budget used up, or the position (from 1)
# of the first full pool, having taken nothing.
_ADMISSION_LUA = """
local pools = #KEYS
if ARGV[4] ~= '' then
  pools = pools - 1
  if tonumber(redis.call('GET', KEYS[#KEYS]) or '0') >= tonumber(ARGV[4]) then return -1 end
end
for i = 1, pools do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[2])
  if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[4 + i]) then return i end
end
for i = 1, pools do redis.call('ZADD', KEYS[i], ARGV[1], ARGV[3]) end
return 0
"""


def _budget_key(user_id: int) -> str:
    return f"llm:tokens:{hash_tag(f'user:{user_id}')}:{datetime.now(UTC):%Y%m%d}"


def _user_running_key(user_id: int) -> str:
    return f"llm:running:user:{hash_tag(f'user:{user_id}')}"


def _model_running_key(model: str) -> str:
    return f"llm:running:model:{hash_tag(f'model:{model}')}"


Pool = Literal["user", "model", "all"]


def _pools(user_id: int, model: ModelSpec | None = None) -> list[tuple[str, int, Pool]]:
    """The sorted sets a generation takes a slot in, with their sizes: one per user, the
    model's when it has a cap, then the one for everybody (narrowest first, so that a
    user or a model at its own cap never takes, even briefly, a slot everyone else needs)."""
    pools: list[tuple[str, int, Pool]] = [(_user_running_key(user_id), int(settings.LLM_MAX_CONCURRENT_PER_USER), "user")]
    if model is not None and model.max_concurrent is not None:
        pools.append((_model_running_key(model.name), model.max_concurrent, "model"))
    pools.append((RUNNING_KEY, int(settings.LLM_MAX_CONCURRENT), "all"))
    return pools


# The pools each generation of this worker holds a slot in: its producer runs on the
# worker that took them, and refreshes and releases them here, knowing only its user.
_held: dict[str, list[str]] = {}


async def slot_acquire(*, stream_id: str, user_id: int, model: ModelSpec | None = None) -> Literal["ok", Pool]:
    """Take a generation slot: "ok", or which pool is full ("user": this user's
    LLM_MAX_CONCURRENT_PER_USER; "model": the model's max_concurrent; "all":
    LLM_MAX_CONCURRENT).

    Where every pool lives on one Redis (one shard, or one hash slot of a cluster), one
    script checks them all and takes a slot in each: one round trip of a stream's start
    instead of one per pool (docs/performance.md, "Stream start"); otherwise pool by pool."""
    now = time.time()
    pools = _pools(user_id, model)
    keys = [key for key, _, _ in pools]
    if len(group_for_scripts(keys)) == 1:
        limits = [limit for _, limit, _ in pools]
        arguments: list[str | float] = [now, now - SLOT_STALE_SECONDS, stream_id, "", *limits]  # the budget: budget_exceeded
        full = await async_redis(keys[0]).eval(_ADMISSION_LUA, len(keys), *keys, *arguments)
        if int(full):
            return pools[int(full) - 1][2]
        _held[stream_id] = keys
        return "ok"
    taken: list[str] = []
    for key, limit, pool in pools:
        if not await _pool_take(key, limit, stream_id, now):
            for held in taken:
                await _pool_drop(held, stream_id)
            return pool
        taken.append(key)
    _held[stream_id] = taken
    return "ok"


def admission(*, stream_id: str, user_id: int, model: ModelSpec | None = None) -> Admission:
    """The budget check and the slots of a stream, to be taken in the script that creates
    its log (``RedisLog.create_admitted``; ``admitted`` reads its answer): a stream's start
    in one round trip where it took two, or three with a budget (docs/performance.md,
    "Eleventh step")."""
    now = time.time()
    pools = _pools(user_id, model)
    keys = [key for key, _, _ in pools]
    budget = settings.LLM_TOKENS_PER_DAY
    if budget is not None:
        keys.append(_budget_key(user_id))
    sizes = [limit for _, limit, _ in pools]
    return Admission(_ADMISSION_LUA, keys, [now, now - SLOT_STALE_SECONDS, stream_id, "" if budget is None else budget, *sizes])


def admitted(*, stream_id: str, user_id: int, model: ModelSpec | None, answer: int) -> Literal["ok", "budget", Pool]:
    """What ``admission``'s script answered: "ok" (the stream holds its slots from now on),
    "budget" (LLM_TOKENS_PER_DAY used up) or the full pool, as ``slot_acquire`` names it."""
    pools = _pools(user_id, model)
    if answer == 0:
        _held[stream_id] = [key for key, _, _ in pools]
        return "ok"
    if answer < 0:
        return "budget"
    return pools[answer - 1][2]


async def _pool_take(key: str, limit: int, stream_id: str, now: float) -> bool:
    # Each pool's key lives on its own shard; the script is atomic within one.
    acquired = await async_redis(key).eval(_ACQUIRE_SCRIPT, 1, key, now, now - SLOT_STALE_SECONDS, limit, stream_id)
    return bool(acquired)


async def _pool_drop(key: str, stream_id: str) -> None:
    await async_redis(key).zrem(key, stream_id)


async def _each_pool(keys: list[str], add: Callable[[Any, str], object]) -> None:
    """``add(pipeline, key)`` for each pool's key, sent as one pipeline per Redis that holds
    some of them: one round trip where a command per pool took one each (at the end of every
    stream: docs/performance.md, "Stream start")."""
    for shard, positions in group_by_shard(keys).items():
        pipe = async_redis_at(shard).pipeline(transaction=False)
        for position in positions:
            add(pipe, keys[position])
        await pipe.execute()


async def slot_refresh(*, stream_id: str, user_id: int) -> None:
    now = time.time()
    keys = _held.get(stream_id) or [key for key, _, _ in _pools(user_id)]
    await _each_pool(keys, lambda pipe, key: pipe.zadd(key, {stream_id: now}, xx=True))


async def slot_release(*, stream_id: str, user_id: int, model: ModelSpec | None = None) -> None:
    """Give the stream's slots back: those it is known to hold, else every pool it could
    hold one in (``model``: its model's too, when a start failed before its answer was read)."""
    keys = _held.pop(stream_id, None) or [key for key, _, _ in _pools(user_id, model)]
    await _each_pool(keys, lambda pipe, key: pipe.zrem(key, stream_id))


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
