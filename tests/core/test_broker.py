"""The Redis broker against a real redis-server: no subscription is lost to a race."""

from __future__ import annotations

import asyncio

import pytest
import redis
from django.test import override_settings

from core.broker import TOPIC_PREFIX, RedisBroker
from tests.support.processes import RedisServer

pytestmark = pytest.mark.asyncio


async def test_a_topic_subscribed_while_the_broker_connects_is_not_lost(redis_server: RedisServer):
    received: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def on_message(topic: str, data: str) -> None:
        received.put_nowait((topic, data))

    async def on_reconnect() -> None:
        pass

    with override_settings(REDIS_SHARDS=[{"url": redis_server.url}]):
        broker = RedisBroker(on_message, on_reconnect)
        try:
            await asyncio.sleep(0)  # the broker's reader is now connecting (a worker's first room join)
            await broker.subscribe("room:race")
            await asyncio.wait_for(broker.wait_connected(), 10)
            publisher = redis.Redis.from_url(redis_server.url)
            try:
                for _ in range(50):  # until the subscription is in place, or give up
                    publisher.publish(TOPIC_PREFIX + "room:race", "hello")
                    try:
                        assert await asyncio.wait_for(received.get(), 0.1) == ("room:race", "hello")
                        break
                    except TimeoutError:
                        continue
                else:
                    pytest.fail("the topic subscribed during the connection never delivered")
            finally:
                publisher.close()
        finally:
            await broker.close()
