"""Worker-to-worker fan-out: one subscription per topic per worker process.

Rather than one channel-layer channel per WebSocket (what a plain Channels consumer
does), each worker subscribes once to each topic its connections need (``room:<id>``,
``user:<id>``) and fans out in process. A message is encoded once by its publisher
and written as-is to every local socket. docs/architecture.md explains the choice and
docs/performance.md has the measurements behind it.

Delivery through a broker is at most once, like any channel layer: Redis pub/sub drops
what is published while a subscriber is disconnected. chat.hub detects and repairs
gaps from the database, and calls back here to re-subscribe after a Redis restart.

In a Redis Cluster pub/sub is sharded (SPUBLISH/SSUBSCRIBE, Redis 7): a topic is a shard
channel that lives on the master owning its hash slot, so each message crosses only
that master and its replicas instead of every node of the cluster (``ClusterBroker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar, cast

import redis
import redis.asyncio
import redis.asyncio.cluster
from redis.crc import key_slot

from core import metrics
from core.aio import spawn
from core.redis_clients import (
    async_redis,
    async_redis_at,
    group_by_shard,
    new_async_client,
    new_async_node_client,
    redis_cluster_mode,
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
        if redis_cluster_mode():
            sync_redis(topic).spublish(TOPIC_PREFIX + topic, data)
        else:
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
        # A topic lives on one shard, so its events stay in order within that shard's pipeline
        # (a Redis Cluster's pipeline keeps each node's commands in order).
        sharded = redis_cluster_mode()
        for shard, positions in group_by_shard(topic for topic, _ in batch).items():
            pipe = sync_redis_at(shard).pipeline(transaction=False)
            for position in positions:
                topic, data = batch[position]
                if sharded:
                    pipe.spublish(TOPIC_PREFIX + topic, data)
                else:
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
        if redis_cluster_mode():
            await async_redis(topic).spublish(TOPIC_PREFIX + topic, data)
        else:
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
    if redis_cluster_mode():
        return ClusterBroker(on_message, on_reconnect)
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


class _Subscriber:
    """One dedicated subscriber connection, re-established on loss: subclasses say what
    it subscribes to (``_connect``) and what a message means (``_handle``)."""

    pubsub: redis.asyncio.client.PubSub | None = None
    name = ""

    def __init__(self, broker: Broker, client: redis.asyncio.Redis) -> None:
        self.broker = broker
        self.client = client
        self.connected = asyncio.Event()
        self.task = spawn(self._run(), name=f"redis-subscriber-{self.name}")

    async def _connect(self) -> redis.asyncio.client.PubSub:
        raise NotImplementedError

    async def _handle(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def _lost(self) -> None:
        """Runs when the connection is lost, before the next attempt."""

    async def _deliver(self, topic: str, data: str) -> None:
        if topic in self.broker.topics:
            try:
                await self.broker.on_message(topic, data)
            except Exception:
                logger.exception("handling a message on %s failed", topic)

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                pubsub = await self._connect()
                self.pubsub = pubsub
                self.connected.set()
                # Anything published while we were not subscribed is lost to us: on every
                # (re)connection the hub compares each room with the database.
                metrics.BROKER_CONNECTS.inc()
                await self.broker.on_reconnect()
                backoff = 0.05
                while True:
                    message = await self._next(pubsub)
                    if message is not None:
                        await self._handle(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lost connection, whatever the exception says
                self.connected.clear()
                self.pubsub = None
                logger.warning("Redis subscriber %s lost (%s); retrying in %.2fs", self.name, exc, backoff)
                self._lost()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _next(self, pubsub: redis.asyncio.client.PubSub) -> dict[str, Any] | None:
        message: dict[str, Any] | None = await pubsub.get_message(timeout=None)
        return message

    async def close(self) -> None:
        self.task.cancel()
        if self.pubsub is not None:
            with contextlib.suppress(Exception):
                await self.pubsub.aclose()
        await self.client.aclose()


class _ShardSubscriber(_Subscriber):
    """The subscriber connection of one shard: the topics of ``broker`` that hash here."""

    def __init__(self, broker: RedisBroker, index: int) -> None:
        self.index = index
        self.name = f"of shard {index}"
        # No socket timeout on the subscriber: it is idle whenever rooms are quiet, and a
        # read timeout would tear it down every few seconds (the channels_redis#422 trap).
        # Keepalive notices a dead peer; a Redis restart resets the connection at once.
        options = {"socket_timeout": None, "socket_keepalive": True, "health_check_interval": 0, "max_connections": None}
        super().__init__(broker, new_async_client(index, **options))

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

    async def _handle(self, message: dict[str, Any]) -> None:
        if message.get("type") == "message":
            await self._deliver(message["channel"][len(TOPIC_PREFIX) :], message["data"])


# ---- Redis Cluster: sharded pub/sub ---------------------------------------------------------
class ClusterBroker(Broker):
    """Sharded pub/sub on a Redis Cluster: each topic is SSUBSCRIBEd on the master that owns
    its slot, over one subscriber connection per such master (``_NodeSubscriber``), each
    blocking on its own socket.

    Not redis-py's ``ClusterPubSub``: its reader polls the nodes in turn, a slice of the
    wait each, so a message on one node can wait out the slices of the others (up to the
    poll timeout); a reader per node delivers at once.

    When the slot map changes (a failover; a slot migrated away, for which the old owner
    sends SUNSUBSCRIBE; a MOVED reply; a node lost) ``repair`` refreshes the map, moves the
    topics whose owner changed, and calls ``on_reconnect``: what was published meanwhile
    is backfilled from the database, as after any reconnect."""

    def __init__(self, on_message: MessageHandler, on_reconnect: ReconnectHandler) -> None:
        super().__init__(on_message, on_reconnect)
        # This loop's cluster client: it holds the slot map.
        self.cluster = cast(redis.asyncio.cluster.RedisCluster, async_redis_at(0))
        self.owner: dict[str, str] = {}  # topic -> the name (host:port) of its node's subscriber
        self.nodes: dict[str, _NodeSubscriber] = {}
        self._repair: asyncio.Task[None] | None = None
        self._repair_again = False

    async def _owner_of(self, topic: str) -> tuple[str, int, str]:
        if self.cluster._initialize:  # the first use of this loop's client
            await self.cluster.initialize()
        node = self.cluster.get_node_from_key(TOPIC_PREFIX + topic)
        if node is None:
            raise redis.exceptions.SlotNotCoveredError(f"no node serves the slot of {topic}")
        return node.host, int(node.port), node.name

    def _subscriber(self, host: str, port: int, name: str) -> _NodeSubscriber:
        subscriber = self.nodes.get(name)
        if subscriber is None:
            subscriber = self.nodes[name] = _NodeSubscriber(self, host, port, name)
        return subscriber

    async def wait_connected(self) -> None:
        """Return once the subscriber of every node that owns a topic is connected."""
        await asyncio.gather(*(self.nodes[name].connected.wait() for name in set(self.owner.values())))

    async def subscribe(self, topic: str) -> None:
        self.topics.add(topic)
        try:
            host, port, name = await self._owner_of(topic)
        except (redis.RedisError, OSError) as exc:  # no slot map now: the repair finds the owner
            logger.warning("Redis Cluster slot map unavailable (%s); subscribing %s later", exc, topic)
            self.request_repair()
            return
        self.owner[topic] = name
        await self._subscriber(host, port, name).subscribe(topic)

    async def unsubscribe(self, topic: str) -> None:
        self.topics.discard(topic)
        name = self.owner.pop(topic, None)
        if name in self.nodes:
            await self.nodes[name].unsubscribe(topic)

    def request_repair(self, *, unsubscribed: Iterable[str] = ()) -> None:
        """Refresh the slot map and move topics to their owners, once at a time.
        ``unsubscribed`` topics are subscribed nowhere now (their node gave their slot
        away): they are subscribed again on their owner, whichever it is."""
        for topic in unsubscribed:
            self.owner.pop(topic, None)
        if self._repair is not None and not self._repair.done():
            self._repair_again = True
            return
        self._repair = spawn(self._run_repair(), name="redis-cluster-repair")

    async def _run_repair(self) -> None:
        backoff = 0.05
        while True:
            self._repair_again = False
            try:
                await self.cluster.nodes_manager.initialize()
                for topic in list(self.topics):
                    host, port, name = await self._owner_of(topic)
                    before = self.owner.get(topic)
                    if before == name:
                        continue
                    self.owner[topic] = name
                    if before in self.nodes:
                        await self.nodes[before].unsubscribe(topic)
                    await self._subscriber(host, port, name).subscribe(topic)
                # A node that owns none of our topics any more (dead, or its slots moved).
                for name in set(self.nodes) - set(self.owner.values()):
                    await self.nodes.pop(name).close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the cluster is failing over: ask again shortly
                logger.warning("Redis Cluster slot map refresh failed (%s); retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            metrics.BROKER_CONNECTS.inc()
            await self.on_reconnect()  # backfill what moved topics may have missed
            if not self._repair_again:
                return

    async def close(self) -> None:
        if self._repair is not None:
            self._repair.cancel()
        for subscriber in list(self.nodes.values()):
            await subscriber.close()
        self.nodes.clear()


class _NodeSubscriber(_Subscriber):
    """The subscriber connection to one master of a Redis Cluster: the shard channels of
    ``broker``'s topics that this master owns."""

    broker: ClusterBroker

    def __init__(self, broker: ClusterBroker, host: str, port: int, name: str) -> None:
        self.name = name
        # No socket timeout, as for _ShardSubscriber: idle is normal for a subscriber.
        client = new_async_node_client(host, port, socket_timeout=None, socket_keepalive=True, health_check_interval=0)
        super().__init__(broker, client)

    def _topics(self) -> set[str]:
        return {topic for topic, name in self.broker.owner.items() if name == self.name}

    async def subscribe(self, topic: str) -> None:
        if self.pubsub is not None:
            # On failure the reader reconnects and subscribes to every topic again.
            with contextlib.suppress(redis.RedisError, OSError):
                await self.pubsub.ssubscribe(TOPIC_PREFIX + topic)

    async def unsubscribe(self, topic: str) -> None:
        if self.pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await self.pubsub.sunsubscribe(TOPIC_PREFIX + topic)

    async def _connect(self) -> redis.asyncio.client.PubSub:
        pubsub = self.client.pubsub()
        # A plain placeholder channel keeps the reader blocking on the socket (as in
        # _ShardSubscriber); SSUBSCRIBE takes one slot a call, so a call a topic.
        await pubsub.subscribe(TOPIC_PREFIX + "_worker")
        subscribed: set[str] = set()
        while added := self._topics() - subscribed:
            subscribed |= added
            for topic in added:
                await pubsub.ssubscribe(TOPIC_PREFIX + topic)
        return pubsub

    async def _next(self, pubsub: redis.asyncio.client.PubSub) -> dict[str, Any] | None:
        try:
            return await super()._next(pubsub)
        except redis.exceptions.MovedError as moved:
            # An SSUBSCRIBE reached this node after it lost the slot.
            lost = [t for t in self._topics() if key_slot((TOPIC_PREFIX + t).encode()) == moved.slot_id]
            self.broker.request_repair(unsubscribed=lost)
            return None

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        topic = message["channel"][len(TOPIC_PREFIX) :]
        if kind == "smessage":
            await self._deliver(topic, message["data"])
        elif kind == "sunsubscribe" and self.broker.owner.get(topic) == self.name:
            # Not asked for: the node gave the slot away (a migration). Follow it.
            self.broker.request_repair(unsubscribed=[topic])

    def _lost(self) -> None:
        self.broker.request_repair()  # perhaps a failover: its topics may have a new owner
