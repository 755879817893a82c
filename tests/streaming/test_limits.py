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
