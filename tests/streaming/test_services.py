"""A draining worker's generations (streaming.services, core.drain): refused when new,
finished or handed over as producer_lost when running."""

from __future__ import annotations

import pytest
from django.test import override_settings

from core import drain
from streaming import services
from streaming.backends import ChatTurn

pytestmark = pytest.mark.asyncio


@pytest.mark.django_db(transaction=True)
@override_settings(LLM_TOKEN_DELAY_MS=50)
async def test_a_draining_worker_refuses_new_generations_and_hands_over_running_ones(monkeypatch):
    from channels.db import database_sync_to_async

    from tests.support.factories import make_user

    user = await database_sync_to_async(make_user)("drained")
    started = await services.generation_start(
        user_id=user.pk, turns=[ChatTurn("user", "many words")], conversation_id=None, max_tokens=10_000
    )  # 10,000 tokens at 50 ms: far longer than the drain
    monkeypatch.setattr(drain, "_draining", True)
    with pytest.raises(services.StreamRefusedError) as refused:
        await services.generation_start(user_id=user.pk, turns=[ChatTurn("user", "hi")], conversation_id=None, max_tokens=5)
    assert refused.value.code == "unavailable" and refused.value.http_status == 503
    await services._generations.drain(0.6)
    assert not services._running, "nothing of it runs on"
    final = None
    async for events in services.stream_follow(stream_id=started.stream_id, after=0):
        final = events[-1] if events else final
    assert final is not None and final.kind == "error" and final.data["code"] == "producer_lost"
