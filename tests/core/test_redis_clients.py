"""The asyncio Redis clients (core/redis_clients.py): a cancelled task stops, whatever the
command it was in, on the in-process Redis and on a real one."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.exceptions
from django.test import override_settings

from core.redis_clients import async_redis, new_async_client
from tests.support.processes import RedisServer

pytestmark = pytest.mark.asyncio
# A cancel that lands on the first few turns of the event loop after a command starts
# lands during its write: where Python 3.11's wait_for (inside redis-py) used to drop it.
TURNS = range(1, 6)
ATTEMPTS = 10


async def _one_command() -> None:
    await async_redis("probe").xadd("probe:stream", {"event": "1"})


async def _one_pipeline() -> None:
    async with async_redis("probe").pipeline() as pipeline:
        pipeline.xadd("probe:stream", {"event": "1"})
        pipeline.expire("probe:stream", 60)
        await pipeline.execute()


@pytest.mark.parametrize("command", [_one_command, _one_pipeline], ids=["command", "pipeline"])
async def test_a_task_cancelled_during_a_command_stops_there(either_redis, command) -> None:
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


@pytest.fixture
def redis_settings(redis_server):
    with override_settings(REDIS_SHARDS=[{"url": redis_server.url}]):
        yield


async def test_commands_beyond_the_pools_connections_wait_for_one(redis_settings) -> None:
    """Thousands of sockets closing at once each clean up in Redis: with every connection
    of the pool in use, a command waits for one instead of failing."""
    client = new_async_client(0, max_connections=2)
    try:
        # Each BLPOP holds its connection for 0.1 s: 20 of them need ten turns of two.
        async with asyncio.timeout(10):
            replies = await asyncio.gather(*(client.blpop([f"empty:{i}"], timeout=0.1) for i in range(20)))
        assert replies == [None] * 20
        assert await client.ping()
    finally:
        await client.aclose()


async def test_the_wait_for_a_connection_is_bounded_by_the_command_timeout(redis_settings) -> None:
    client = new_async_client(0, max_connections=1)

    async def hold_the_connection() -> Any:
        return await client.blpop(["empty"], timeout=3)

    holder = asyncio.create_task(hold_the_connection())
    try:
        await asyncio.sleep(0.2)  # the only connection is taken
        started = time.monotonic()
        with override_settings(REDIS_SOCKET_TIMEOUT=1.0), pytest.raises(redis.exceptions.MaxConnectionsError):
            await client.ping()
        assert 0.9 < time.monotonic() - started < 2.5
        async with asyncio.timeout(5):
            assert await holder is None
        assert await client.ping(), "the pool works again once its connection is back"
    finally:
        holder.cancel()
        await client.aclose()


async def test_a_write_that_a_stalled_redis_does_not_take_times_out() -> None:
    """A command's write goes straight to the socket (no wait_for); one that Redis does not
    read still ends after REDIS_SOCKET_TIMEOUT, and the client recovers on a new connection."""
    stalled = RedisServer()
    try:
        with override_settings(REDIS_SHARDS=[{"url": stalled.url}], REDIS_SOCKET_TIMEOUT=0.5):
            client = new_async_client(0)
            try:
                assert await client.ping()
                stalled.pause()
                started = time.monotonic()
                # Far more than the kernel's socket buffers and the transport's high-water mark.
                with pytest.raises(redis.exceptions.TimeoutError, match="writing"):
                    async with asyncio.timeout(10):
                        await client.set("big", "x" * 32 * 1024 * 1024)
                assert 0.4 < time.monotonic() - started < 5
                stalled.resume()
                async with asyncio.timeout(10):
                    assert await client.set("small", "1")
                    assert await client.get("small") == "1"
            finally:
                stalled.resume()
                await client.aclose()
    finally:
        stalled.stop()
