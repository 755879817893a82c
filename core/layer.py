"""Our channel layer: the Channels layer specification over one subscription per group
per worker, fanned out in process (docs/architecture.md, "The channel layer").

Django code talks to it through Channels' own API, ``get_channel_layer()``: ``send``,
``receive``, ``new_channel``, ``group_add``, ``group_discard``, ``group_send`` and
``flush``, as the specification (channels' docs/channel_layer_spec.rst) defines them.
Underneath, each worker process (each event loop) holds one broker (core.broker:
Redis pub/sub with ``REDIS_URL``, shards included, or in process without it) and
subscribes once to each group that has a member on this worker, whatever the number of
members: a ``group_send`` crosses Redis once per worker, not once per socket, and the
worker puts the message on each local member's queue. A channel name made by
``new_channel`` names its worker (``<prefix>.<worker>!<id>``), so a ``send`` to it is
published on that worker's inbox topic only.

The fast path, as a capability of the layer: ``listen(group, handler)`` hands every
*raw* text published to a group with ``publish`` (or ``apublish``/``publish_many``) to
``handler``, once per worker, with no queue, task or decode per socket. The hub uses it
for room traffic (chat.hub: a frame encoded once by its publisher and written to every
local socket), with its exactly-once chain on top; consumers of the same group get the
messages of ``group_send`` as Channels consumers do. Both share the one subscription.

Delivery is at most once, as in Channels: pub/sub forgets what a disconnected worker
missed. ``on_reconnect`` callbacks run on every (re)connection, so that layers above
(the hub's gap check, the credential re-check) can repair what was lost.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
from asgiref.sync import markcoroutinefunction
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

from core import broker
from core.aio import Inbox

logger = logging.getLogger(__name__)

RawHandler = Callable[[str, str], Awaitable[None]]
ReconnectHandler = Callable[[], Awaitable[None]]

# A Channels message on a group or channel topic: this line, then the message as
# base64 msgpack (the broker carries text). Anything else on a group topic is raw, for
# the group's listeners. A raw event never starts with it (chat.wire's kinds are letters
# followed by a space or a newline, and none is "@").
MESSAGE_MARK = "@\n"
# Group names cannot contain ":" (the specification allows letters, digits, "-", "_"
# and "."), so channel topics never collide with groups.
CHANNEL_TOPIC_PREFIX = "channel:"
# How long a worker's first new_channel waits for its subscriber to connect.
INBOX_WAIT_SECONDS = 5.0


def encode_message(message: dict[str, Any]) -> str:
    return MESSAGE_MARK + base64.b64encode(msgpack.packb(message, use_bin_type=True)).decode("ascii")


def decode_message(data: str) -> dict[str, Any]:
    message: dict[str, Any] = msgpack.unpackb(base64.b64decode(data[len(MESSAGE_MARK) :]), raw=False)
    return message


def user_group(user_id: int) -> str:
    """Every WebSocket of a user is in this group (docs/protocol.md, "Channels integration")."""
    return f"user.{user_id}"


def channel_topic(non_local_name: str) -> str:
    return CHANNEL_TOPIC_PREFIX + non_local_name


class RealtimeChannelLayer(BaseChannelLayer):
    """``CHANNEL_LAYERS = {"default": {"BACKEND": "core.layer.RealtimeChannelLayer"}}``.

    Redis or not is decided by the project's settings (``REDIS_URL``, ``REDIS_URLS``,
    ``REDIS_SENTINELS``, ``REDIS_CLUSTER_URL``), as for everything else; without them the layer works within
    one process, like Channels' InMemoryChannelLayer. ``capacity`` bounds each channel's
    queue (a ``send`` to a full local channel raises ChannelFull; group messages for a
    full channel are dropped, as channels_redis does)."""

    extensions = ["groups", "flush"]

    def __init__(
        self, expiry: int = 60, capacity: int = 100, channel_capacity: dict[str, int] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopLayer] = weakref.WeakKeyDictionary()

    def _local(self) -> _LoopLayer:
        loop = asyncio.get_running_loop()
        layer = self._loops.get(loop)
        if layer is None:
            layer = self._loops[loop] = _LoopLayer(self)
            self._close_with(loop)
        return layer

    def _close_with(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close this loop's subscriber when the loop itself closes (async_to_sync, tests
        that make their own loops), as channels_redis does, rather than leave its tasks
        to be destroyed pending."""
        close = loop.close

        def close_layer_first() -> None:
            layer = self._loops.pop(loop, None)
            if layer is not None and not loop.is_running():
                loop.run_until_complete(layer.close())
            loop.close = close  # type: ignore[method-assign]
            close()

        loop.close = close_layer_first  # type: ignore[method-assign]

    # ---- the Channels layer specification ------------------------------------------------------
    async def new_channel(self, prefix: str = "specific") -> str:
        return await self._local().new_channel(prefix)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        await self._local().send(channel, message)

    @markcoroutinefunction
    def receive(self, channel: str) -> Awaitable[dict[str, Any]]:
        """The channel's next message. A future for a channel of this worker rather than a
        coroutine: Channels' consumers wrap each receive in a task (await_many_dispatch),
        and for an idle socket that task and its coroutine frames are a large part of what
        it costs; a future is wrapped in nothing (docs/performance.md, "The channel layer, before and after").
        Marked as a coroutine function, so async_to_sync and ``await`` take it as one."""
        self.require_valid_channel_name(channel)
        try:
            local = self._local()
        except RuntimeError:  # no running loop: async_to_sync makes the awaitable before its loop runs
            return self._receive_in_loop(channel)
        return local.receive(channel)

    async def _receive_in_loop(self, channel: str) -> dict[str, Any]:
        return await self._local().receive(channel)

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self._local().group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self._local().group_discard(group, channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        await broker.apublish(group, encode_message(message))

    async def flush(self) -> None:
        """Forget every channel, group and listener of this process (tests)."""
        layers, self._loops = list(self._loops.values()), weakref.WeakKeyDictionary()
        for layer in layers:
            await layer.close()

    async def close(self) -> None:
        await self.flush()

    # ---- the fast path -------------------------------------------------------------------------
    async def listen(self, group: str, handler: RawHandler) -> None:
        """Hand every raw text published to ``group`` to ``handler(group, text)``, in order,
        once per worker. One handler per group per event loop."""
        await self._local().listen(group, handler)

    async def unlisten(self, group: str) -> None:
        await self._local().unlisten(group)

    def on_reconnect(self, handler: ReconnectHandler) -> None:
        """Await ``handler`` on every (re)connection of this worker's subscriber."""
        self._local().reconnect_handlers.append(handler)

    async def wait_connected(self) -> None:
        await self._local().wait_connected()

    @staticmethod
    def publish(group: str, text: str) -> None:
        """Publish raw text to a group's listeners, from any thread (never raises)."""
        broker.publish(group, text)

    @staticmethod
    def publish_many(batch: list[tuple[str, str]]) -> None:
        """Several (group, text) in order, one round trip per shard (never raises)."""
        broker.publish_many(batch)

    @staticmethod
    async def apublish(group: str, text: str) -> None:
        await broker.apublish(group, text)


class _Mailbox(Inbox[dict[str, Any]]):
    """A channel's queue (core.aio.Inbox: every socket has a channel, and an idle
    asyncio.Queue costs about 3 KiB), bounded by the layer's capacity."""

    __slots__ = ("capacity",)

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def full(self) -> bool:
        return self.size() >= self.capacity


class _LoopLayer:
    """The layer's state in one event loop: local channels, groups and listeners, and the
    one broker subscription per topic."""

    def __init__(self, layer: RealtimeChannelLayer) -> None:
        self.layer = layer
        self.worker = uuid.uuid4().hex[:12]
        self.queues: dict[str, _Mailbox] = {}
        self.groups: dict[str, set[str]] = {}
        self.listeners: dict[str, RawHandler] = {}
        self.reconnect_handlers: list[ReconnectHandler] = []
        self._broker: broker.Broker | None = None
        self.inbox = ""  # this worker's inbox topic, subscribed with its first channel

    @property
    def broker(self) -> broker.Broker:
        """The subscriber, made on first use: a loop that only sends (async_to_sync in a
        management command) never opens one."""
        if self._broker is None:
            self._broker = broker.create_broker(self._on_message, self._on_reconnect)
        return self._broker

    # ---- channels ----------------------------------------------------------------------------
    async def new_channel(self, prefix: str) -> str:
        name = f"{prefix}.{self.worker}!{secrets.token_hex(8)}"
        self.queues[name] = self._new_queue(name)
        if not self.inbox:  # sends to this worker's channels from other workers arrive here
            self.inbox = channel_topic(self.layer.non_local_name(name))
            await self._subscribe(self.inbox)
            # Once, per worker: a channel handed out before its inbox is subscribed would
            # lose what other workers send to it at once. Bounded: with Redis down the
            # socket still opens (delivery is at most once anyway).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(INBOX_WAIT_SECONDS):
                    await self.wait_connected()
        return name

    def _new_queue(self, name: str) -> _Mailbox:
        return _Mailbox(self.layer.get_capacity(name))

    async def _subscribe(self, topic: str) -> None:
        if topic not in self.broker.topics:
            await self.broker.subscribe(topic)

    def _is_ours(self, channel: str) -> bool:
        return "!" in channel and channel.partition("!")[0].endswith(f".{self.worker}")

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if channel in self.queues and ("!" not in channel or self._is_ours(channel)):
            queue = self.queues[channel]
            if queue.full():
                raise ChannelFull(channel)
            queue.put_nowait(message)
            return
        topic = channel_topic(self.layer.non_local_name(channel))
        payload = encode_message(message)
        await broker.apublish(topic, f"{channel}\n{payload}" if "!" in channel else payload)

    def receive(self, channel: str) -> Awaitable[dict[str, Any]]:
        queue = self.queues.get(channel)
        if queue is None:
            queue = self.queues[channel] = self._new_queue(channel)
        if "!" not in channel:  # a general channel: anyone may send to it, from any worker
            return self._receive_general(channel, queue)
        return queue.get()

    async def _receive_general(self, channel: str, queue: _Mailbox) -> dict[str, Any]:
        await self._subscribe(channel_topic(channel))
        waiter = queue.get()
        try:
            return await waiter
        except asyncio.CancelledError:
            # Cancelled after the message was handed over: keep it for the next receiver
            # of this channel (several consumers may share a general channel).
            if waiter.done() and not waiter.cancelled():
                queue.put_back(waiter.result())
            raise

    # ---- groups ------------------------------------------------------------------------------
    async def group_add(self, group: str, channel: str) -> None:
        members = self.groups.setdefault(group, set())
        members.add(channel)
        await self._subscribe(group)

    async def group_discard(self, group: str, channel: str) -> None:
        members = self.groups.get(group)
        if members is None:
            return
        members.discard(channel)
        if not members:
            del self.groups[group]
            if group not in self.listeners:
                await self.broker.unsubscribe(group)

    async def listen(self, group: str, handler: RawHandler) -> None:
        self.listeners[group] = handler
        await self._subscribe(group)

    async def unlisten(self, group: str) -> None:
        if self.listeners.pop(group, None) is not None and group not in self.groups:
            await self.broker.unsubscribe(group)

    async def wait_connected(self) -> None:
        wait = getattr(self.broker, "wait_connected", None)
        if wait is not None:
            await wait()

    # ---- from the broker ---------------------------------------------------------------------
    async def _on_message(self, topic: str, data: str) -> None:
        if topic.startswith(CHANNEL_TOPIC_PREFIX):
            self._deliver_to_channel(topic, data)
            return
        if data.startswith(MESSAGE_MARK):
            members = self.groups.get(topic)
            if members:
                message = decode_message(data)
                for channel in list(members):
                    queue = self.queues.get(channel)
                    if queue is not None and not queue.full():  # a full channel loses it, as in channels_redis
                        queue.put_nowait(message)
            return
        handler = self.listeners.get(topic)
        if handler is not None:
            await handler(topic, data)

    def _deliver_to_channel(self, topic: str, data: str) -> None:
        if data.startswith(MESSAGE_MARK):  # a general channel
            channel, payload = topic[len(CHANNEL_TOPIC_PREFIX) :], data
        else:
            channel, _, payload = data.partition("\n")
        queue = self.queues.get(channel)
        if queue is None or queue.full():
            logger.debug("a message for %s was dropped (no such channel here, or it is full)", channel)
            return
        queue.put_nowait(decode_message(payload))

    async def _on_reconnect(self) -> None:
        for handler in list(self.reconnect_handlers):
            try:
                await handler()
            except Exception:
                logger.exception("a reconnect handler failed")

    async def close(self) -> None:
        if self._broker is not None:
            await self._broker.close()


def get_layer() -> RealtimeChannelLayer:
    """The project's channel layer (Channels' default alias), typed."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    assert isinstance(layer, RealtimeChannelLayer), f"CHANNEL_LAYERS must use core.layer.RealtimeChannelLayer, not {layer!r}"
    return layer
