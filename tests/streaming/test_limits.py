"""What one generation may leave in the stream log (streaming.limits.stream_cap)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from django.test import override_settings

pytestmark = pytest.mark.asyncio


@pytest.mark.django_db(transaction=True)
@override_settings(LLM_TOKEN_DELAY_MS=0, LLM_MAX_REPLY_CHARS=10**9, LLM_STREAM_MAX_CHARS=40_000)
async def test_what_one_generation_leaves_in_redis_is_capped(redis_server):
    """2,000 tokens of 1,000 characters asked for: Redis holds 40,000 characters of
    tokens, the final event's copy of them, and framing, not 4 MB."""
    import redis as redis_library
    from channels.db import database_sync_to_async

    from streaming import services
    from streaming.backends import ChatTurn
    from tests.support.factories import make_user

    user = await database_sync_to_async(make_user)("capped")
    with override_settings(REDIS_SHARDS=[{"url": redis_server.url}]):
        started = await services.generation_start(
            user_id=user.pk, turns=[ChatTurn("user", "w" * 999)], conversation_id=None, max_tokens=2_000
        )
        async for events in services.stream_follow(stream_id=started.stream_id, after=0):
            final = events[-1] if events else None
        await asyncio.gather(*services._running)  # the producer stores the reply, then frees its slot
    assert final is not None and final.kind == "done" and final.data["finish_reason"] == "length"
    client = redis_library.Redis.from_url(redis_server.url)
    try:
        key = f"log:{{{started.stream_id}}}"
        entries: Any = client.xrange(key)
        logged = [event for _, fields in entries for event in json.loads(fields[b"e"])]
        memory = client.memory_usage(key)
    finally:
        client.close()
    assert sum(len(data["token"]) for _, kind, data in logged if kind == "token") == 40_000
    assert memory is not None and memory < 120_000, f"{memory} bytes"


@pytest.mark.django_db(transaction=True)
@override_settings(LLM_TOKEN_DELAY_MS=50, LLM_MAX_CONCURRENT=10, LLM_MAX_CONCURRENT_PER_USER=10)
async def test_a_models_concurrency_cap_answers_busy_for_that_model_only(token, monkeypatch):
    """LLM_MODELS' max_concurrent (docs/protocol.md, "Models"): a third pool beside the
    user's and everyone's; the other models and, once a slot frees, the capped one answer."""
    from streaming import limits, services
    from tests.support.asgi_client import BearerClient, read_all

    monkeypatch.setenv("LLM_MODELS", json.dumps({"echo": {"max_concurrent": 1}, "free": {}}))
    client = BearerClient(token)

    async def ask(path: str, body: dict[str, Any]) -> Any:
        return await client.post(path, json.dumps(body), content_type="application/json")

    first = await ask("/api/assistant/stream", {"message": "slow", "max_tokens": 200, "model": "echo"})
    assert first.status_code == 200
    refused = await ask("/api/assistant/stream", {"message": "too many", "model": "echo"})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "busy"
    assert "echo" in refused.json()["error"]["detail"] and refused["Retry-After"]
    chat = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    v1 = await ask("/v1/chat/completions", chat)
    assert v1.status_code == 429 and v1.json()["error"]["code"] == "busy" and v1.json()["error"]["type"]
    responses = await ask("/v1/responses", {"model": "echo", "input": "hi"})
    assert responses.status_code == 429 and responses.json()["error"]["code"] == "busy"
    other = await ask("/v1/chat/completions", chat | {"model": "free"})
    assert other.status_code == 200 and other.json()["choices"][0]["message"]["content"] == "hi "

    await client.post(f"/api/streams/{first['X-Stream-Id']}/cancel")
    await read_all(first)
    await asyncio.gather(*services._running)  # the producer frees its slots as it ends
    assert (await ask("/v1/chat/completions", chat)).status_code == 200
    await asyncio.gather(*services._running)
    assert limits._held == {}, "every slot released, nothing remembered"


async def _commands_of_a_start(monkeypatch, **start: Any) -> list[str]:
    """The Redis commands ``generation_start`` sends before it returns (the producer's own come after)."""
    from core.redis_clients import _AsyncRedis
    from streaming import services

    sent: list[str] = []
    original = _AsyncRedis.execute_command

    async def counted(self: Any, *args: Any, **options: Any) -> Any:
        sent.append(str(args[0]).upper())
        return await original(self, *args, **options)

    monkeypatch.setattr(_AsyncRedis, "execute_command", counted)
    try:
        await services.generation_start(max_tokens=2, **start)
    finally:
        monkeypatch.setattr(_AsyncRedis, "execute_command", original)
    return sent


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("budget", [None, 1_000])
async def test_a_start_is_one_redis_round_trip_budget_and_slots_included(either_redis, monkeypatch, budget):
    """Budget, slots and the log with its ``start`` event in one script; in an existing
    conversation (whose new turns are stored only once a slot is taken) one more, and the
    budget's read (docs/performance.md, "Eleventh step")."""
    from channels.db import database_sync_to_async

    from streaming import limits, services
    from streaming.backends import ChatTurn
    from tests.support.factories import make_user

    user = await database_sync_to_async(make_user)("counted")
    with override_settings(LLM_TOKENS_PER_DAY=budget, LLM_TOKEN_DELAY_MS=0):
        turn = [ChatTurn("user", "hi")]
        await services.generation_start(user_id=user.pk, turns=turn, conversation_id=None, max_tokens=2)  # warm: subscriptions
        await asyncio.gather(*services._running)
        new = await _commands_of_a_start(monkeypatch, user_id=user.pk, turns=turn, conversation_id=None)
        assert new == ["EVAL"], new
        started = await services.generation_start(user_id=user.pk, turns=turn, conversation_id=None, max_tokens=2)
        await asyncio.gather(*services._running)
        again = await _commands_of_a_start(monkeypatch, user_id=user.pk, turns=turn, conversation_id=started.conversation_id)
        assert again == (["GET"] if budget else []) + ["EVAL", "EVAL"], again
        await asyncio.gather(*services._running)
    assert limits._held == {}, "every slot released"


@pytest.mark.django_db(transaction=True)
async def test_a_refused_start_takes_no_slot_and_leaves_no_log(either_redis):
    from channels.db import database_sync_to_async

    from core.redis_clients import async_redis
    from streaming import limits, services
    from streaming.backends import ChatTurn
    from tests.support.factories import make_user

    user = await database_sync_to_async(make_user)("refused")
    user_pool = limits._user_running_key(user.pk)
    turn = [ChatTurn("user", "hi")]
    with override_settings(LLM_MAX_CONCURRENT_PER_USER=1, LLM_TOKEN_DELAY_MS=50, LLM_TOKENS_PER_DAY=None):
        running = await services.generation_start(user_id=user.pk, turns=turn, conversation_id=None, max_tokens=1_000)
        logs_before = sorted(await async_redis(running.stream_id).keys("log:*"))
        with pytest.raises(services.StreamRefusedError) as busy:
            await services.generation_start(user_id=user.pk, turns=turn, conversation_id=None, max_tokens=2)
        assert busy.value.code == "busy"
        assert await async_redis(user_pool).zrange(user_pool, 0, -1) == [running.stream_id], "no slot taken"
        assert sorted(await async_redis(running.stream_id).keys("log:*")) == logs_before, "no log created"
        assert list(limits._held) == [running.stream_id]
        await services.stream_cancel(stream_id=running.stream_id, user_id=user.pk)
        await asyncio.gather(*services._running)
    with override_settings(LLM_TOKENS_PER_DAY=10, LLM_TOKEN_DELAY_MS=0):
        await limits.budget_spend(user_id=user.pk, tokens=10)
        with pytest.raises(services.StreamRefusedError) as spent:
            await services.generation_start(user_id=user.pk, turns=turn, conversation_id=None, max_tokens=2)
        assert spent.value.code == "budget_exceeded"
        assert await async_redis(user_pool).zcard(user_pool) == 0 and limits._held == {}
