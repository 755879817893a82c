"""Worker-to-worker fan-out: one subscription per topic per worker process.

Rather than one channel-layer channel per WebSocket (what a plain Channels consumer
does), each worker subscribes once to each topic its connections need (``room:<id>``,
``user:<id>``) and fans out in process. A message is encoded once by its publisher
and written as-is to every local socket. docs/architecture.md explains the choice and
docs/performance.md has the measurements behind it.

Delivery through a broker is at most once, like any channel layer: Redis pub/sub drops
what is published while a subscriber is disconnected. chat.hub detects and repairs
gaps from the database, and calls back here to re-subscribe after a Redis restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import ClassVar

import redis
import redis.asyncio

from core import metrics
from core.aio import spawn
from core.redis_clients import (
    async_redis,
    group_by_shard,
    new_async_client,
    redis_configured,
    shard_count,
    shard_for,
    sync_redis,
    sync_redis_at,
)

logger = logging.getLogger(__name__)

TOPIC_PREFIX = "chat:topic:"

MessageHandler = Callable[[str, str], Awaitable[None]]
ReconnectHandler = Callable[[], Awaitable[None]]


def publish(topic: str, data: str) -> None:
    """Publish from any thread. Never raises: the hub repairs what a failed publish loses."""
    metrics.BROKER_PUBLISHED.inc()
    if not redis_configured():
        LocalBroker.publish(topic, data)
        return
    try:
        sync_redis(topic).publish(TOPIC_PREFIX + topic, data)
    except (redis.RedisError, OSError) as exc:
        metrics.BROKER_PUBLISH_ERRORS.inc()
        logger.warning("publish to %s failed (%s); subscribers will backfill", topic, exc)


def publish_many(batch: list[tuple[str, str]]) -> None:
    """Publish several (topic, data) pairs in order, in one round trip. Never raises."""
    metrics.BROKER_PUBLISHED.inc(len(batch))
    if not redis_configured():
        for topic, data in batch:
            LocalBroker.publish(topic, data)
        return
    try:
        # A topic lives on one shard, so its events stay in order within that shard's pipeline.
        for shard, positions in group_by_shard(topic for topic, _ in batch).items():
            pipe = sync_redis_at(shard).pipeline(transaction=False)
            for position in positions:
                topic, data = batch[position]
                pipe.publish(TOPIC_PREFIX + topic, data)
            pipe.execute()
    except (redis.RedisError, OSError) as exc:
        metrics.BROKER_PUBLISH_ERRORS.inc()
        logger.warning("publishing %d events failed (%s); subscribers will backfill", len(batch), exc)


async def apublish(topic: str, data: str) -> None:
    """Publish from the event loop without blocking it. Never raises."""
    metrics.BROKER_PUBLISHED.inc()
    if not redis_configured():
        LocalBroker.publish(topic, data)
        return
    try:
        await async_redis(topic).publish(TOPIC_PREFIX + topic, data)
    except (redis.RedisError, OSError) as exc:
        metrics.BROKER_PUBLISH_ERRORS.inc()
        logger.warning("publish to %s failed (%s)", topic, exc)


class Broker:
    """Subscribe to topics; ``on_message`` is awaited once per message, in order."""

    def __init__(self, on_message: MessageHandler, on_reconnect: ReconnectHandler) -> None:
        self.on_message = on_message
        self.on_reconnect = on_reconnect
        self.topics: set[str] = set()

    async def subscribe(self, topic: str) -> None:
        raise NotImplementedError

    async def unsubscribe(self, topic: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


def create_broker(on_message: MessageHandler, on_reconnect: ReconnectHandler) -> Broker:
    if redis_configured():
        return RedisBroker(on_message, on_reconnect)
    return LocalBroker(on_message, on_reconnect)


class LocalBroker(Broker):
    """In-process fan-out for a single process (runserver without Redis, tests)."""

    instances: ClassVar[weakref.WeakSet[LocalBroker]] = weakref.WeakSet()

    def __init__(self, on_message: MessageHandler, on_reconnect: ReconnectHandler) -> None:
        super().__init__(on_message, on_reconnect)
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.task = spawn(self._run(), name="local-broker")
        LocalBroker.instances.add(self)

    @classmethod
    def publish(cls, topic: str, data: str) -> None:
        for broker in list(cls.instances):
            if topic in broker.topics and not broker.loop.is_closed():
                broker.loop.call_soon_threadsafe(broker.queue.put_nowait, (topic, data))

    async def subscribe(self, topic: str) -> None:
        self.topics.add(topic)

    async def unsubscribe(self, topic: str) -> None:
        self.topics.discard(topic)

    async def _run(self) -> None:
        while True:
            topic, data = await self.queue.get()
            if topic in self.topics:
                try:
                    await self.on_message(topic, data)
                except Exception:
                    logger.exception("handling a message on %s failed", topic)

    async def close(self) -> None:
        LocalBroker.instances.discard(self)
        self.task.cancel()


class RedisBroker(Broker):
    """Redis pub/sub: one dedicated subscriber connection per shard per worker, each
    re-established on loss. A topic is subscribed on the shard it is published to."""

    def __init__(self, on_message: MessageHandler, on_reconnect: ReconnectHandler) -> None:
        super().__init__(on_message, on_reconnect)
        self.shards = [_ShardSubscriber(self, index) for index in range(shard_count())]

    def _shard(self, topic: str) -> _ShardSubscriber:
        return self.shards[shard_for(topic)]

    async def wait_connected(self) -> None:
        """Return once every shard's subscriber is connected."""
        await asyncio.gather(*(shard.connected.wait() for shard in self.shards))

    async def subscribe(self, topic: str) -> None:
        self.topics.add(topic)
        await self._shard(topic).subscribe(topic)

    async def unsubscribe(self, topic: str) -> None:
        self.topics.discard(topic)
        await self._shard(topic).unsubscribe(topic)

    async def close(self) -> None:
        for shard in self.shards:
            await shard.close()


class _ShardSubscriber:
    """The subscriber connection of one shard: the topics of ``broker`` that hash here."""

    def __init__(self, broker: RedisBroker, index: int) -> None:
        self.broker = broker
        self.index = index
        # No socket timeout on the subscriber: it is idle whenever rooms are quiet, and a
        # read timeout would tear it down every few seconds (the channels_redis#422 trap).
        # Keepalive notices a dead peer; a Redis restart resets the connection at once.
        self.client = new_async_client(
            index, socket_timeout=None, socket_keepalive=True, health_check_interval=0, max_connections=None
        )
        self.pubsub: redis.asyncio.client.PubSub | None = None
        self.connected = asyncio.Event()
        self.task = spawn(self._run(), name=f"redis-broker-{index}")

    def _topics(self) -> set[str]:
        return {topic for topic in self.broker.topics if shard_for(topic) == self.index}

    async def subscribe(self, topic: str) -> None:
        if self.pubsub is not None:
            # On failure the reader reconnects and subscribes to every topic again.
            with contextlib.suppress(redis.RedisError, OSError):
                await self.pubsub.subscribe(TOPIC_PREFIX + topic)

    async def unsubscribe(self, topic: str) -> None:
        if self.pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await self.pubsub.unsubscribe(TOPIC_PREFIX + topic)

    async def _connect(self) -> redis.asyncio.client.PubSub:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        # Subscribing to a placeholder keeps the reader's get_message blocking on the
        # socket even while this worker has no rooms, so a dead Redis is noticed.
        subscribed = self._topics()
        await pubsub.subscribe(TOPIC_PREFIX + "_worker", *(TOPIC_PREFIX + t for t in subscribed))
        # A topic added while that was in flight found no pubsub to subscribe on (a worker's
        # first room join races its first connection): subscribe it here, or it is lost.
        while added := self._topics() - subscribed:
            subscribed |= added
            await pubsub.subscribe(*(TOPIC_PREFIX + t for t in added))
        return pubsub

    async def _run(self) -> None:
        backoff = 0.05
        prefix_length = len(TOPIC_PREFIX)
        broker = self.broker
        while True:
            try:
                pubsub = await self._connect()
                self.pubsub = pubsub
                self.connected.set()
                # Anything published while we were not subscribed is lost to us: on every
                # (re)connection the hub compares each room with the database.
                metrics.BROKER_CONNECTS.inc()
                await broker.on_reconnect()
                backoff = 0.05
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is None or message.get("type") != "message":
                        continue
                    topic = message["channel"][prefix_length:]
                    if topic in broker.topics:
                        try:
                            await broker.on_message(topic, message["data"])
                        except Exception:
                            logger.exception("handling a message on %s failed", topic)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lost connection, whatever the exception says
                self.connected.clear()
                self.pubsub = None
                logger.warning("Redis subscriber of shard %d lost (%s); retrying in %.2fs", self.index, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def close(self) -> None:
        self.task.cancel()
        if self.pubsub is not None:
            with contextlib.suppress(Exception):
                await self.pubsub.aclose()
        await self.client.aclose()
