"""The asyncio Redis clients (core/redis_clients.py): a cancelled task stops, whatever the
command it was in, on the in-process Redis and on a real one."""

from __future__ import annotations

import asyncio

import pytest
from django.test import override_settings

from core.redis_clients import async_redis

pytestmark = pytest.mark.asyncio
# A cancel that lands on the first few turns of the event loop after a command starts
# lands during its write: where Python 3.11's wait_for (inside redis-py) used to drop it.
TURNS = range(1, 6)
ATTEMPTS = 10


@pytest.fixture(params=["in-process", "redis"])
def client_settings(request):
    if request.param == "in-process":
        yield
        return
    redis_server = request.getfixturevalue("redis_server")
    with override_settings(REDIS_SHARDS=[{"url": redis_server.url}]):
        yield


async def _one_command() -> None:
    await async_redis("probe").xadd("probe:stream", {"event": "1"})


async def _one_pipeline() -> None:
    async with async_redis("probe").pipeline() as pipeline:
        pipeline.xadd("probe:stream", {"event": "1"})
        pipeline.expire("probe:stream", 60)
        await pipeline.execute()


@pytest.mark.parametrize("command", [_one_command, _one_pipeline], ids=["command", "pipeline"])
async def test_a_task_cancelled_during_a_command_stops_there(client_settings, command) -> None:
    await async_redis("probe").ping()  # connected: the cancel meets the command, not the connect
    for turns in TURNS:
        for _ in range(ATTEMPTS):

            async def work() -> None:
                await command()
                await asyncio.sleep(1)  # a cancel that came during the command stops it here at the latest

            task = asyncio.create_task(work())
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                async with asyncio.timeout(5):
                    await task
    assert await async_redis("probe").ping(), "the connections are still good"
