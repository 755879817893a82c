"""core.layer against each clause of the Channels layer specification (channels'
docs/channel_layer_spec.rst), in process and over a real Redis; two layer objects stand
for two worker processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
import redis
from channels.exceptions import ChannelFull
from django.test import override_settings

from core.layer import RealtimeChannelLayer
from tests.support.processes import RedisServer

pytestmark = pytest.mark.asyncio
QUIET = 0.3


@pytest.fixture(params=["in-process", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        with override_settings(REDIS_SHARDS=[{"url": server.url}]):
            yield server.url
    else:
        with override_settings(REDIS_SHARDS=[]):
            yield ""


@pytest_asyncio.fixture
async def workers(backend: str) -> AsyncIterator[tuple[RealtimeChannelLayer, RealtimeChannelLayer]]:
    """Two layers: each has its own subscriptions and channels, like two worker processes."""
    one, two = RealtimeChannelLayer(), RealtimeChannelLayer()
    for layer in (one, two):
        await layer.wait_connected()
    yield one, two
    await one.flush()
    await two.flush()


async def nothing_arrives(layer: RealtimeChannelLayer, channel: str) -> bool:
    try:
        await asyncio.wait_for(layer.receive(channel), QUIET)
    except TimeoutError:
        return True
    return False


async def test_new_channels_are_unique_valid_and_name_their_worker(workers):
    one, _ = workers
    names = {await one.new_channel() for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert one.require_valid_channel_name(name)
        assert name.startswith("specific.") and "!" in name
    assert (await one.new_channel(prefix="chat")).startswith("chat.")


async def test_messages_to_a_channel_arrive_in_order_from_any_worker(workers):
    one, two = workers
    channel = await one.new_channel()
    await one.send(channel, {"type": "message.1"})
    await two.send(channel, {"type": "message.2", "body": b"\x00bytes", "nested": {"list": [1, None, True]}})
    assert await asyncio.wait_for(one.receive(channel), 5) == {"type": "message.1"}
    assert await asyncio.wait_for(one.receive(channel), 5) == {
        "type": "message.2",
        "body": b"\x00bytes",
        "nested": {"list": [1, None, True]},
    }


async def test_a_general_channel_is_received_by_whoever_listens(workers):
    one, two = workers
    receiving = asyncio.create_task(two.receive("general-channel"))
    await asyncio.sleep(0.2)
    await one.send("general-channel", {"type": "hello"})
    assert await asyncio.wait_for(receiving, 5) == {"type": "hello"}


async def test_a_full_channel_refuses_sends(backend):
    layer = RealtimeChannelLayer(capacity=2)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "a"})
    await layer.send(channel, {"type": "b"})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "c"})
    assert (await layer.receive(channel))["type"] == "a"
    await layer.flush()


async def test_invalid_names_and_messages_are_refused(workers):
    one, _ = workers
    channel = await one.new_channel()
    for bad in ("spaces are bad", "ünicode", "x" * 200, ""):
        with pytest.raises(TypeError):
            await one.send(bad, {"type": "x"})
        with pytest.raises(TypeError):
            await one.group_add(bad, channel)
    with pytest.raises(TypeError):
        await one.group_add("room:colon", channel)  # the project's old topics cannot be groups
    with pytest.raises(AssertionError):
        await one.send(channel, "not a dict")


async def test_group_send_reaches_every_member_on_every_worker_and_no_one_else(workers):
    one, two = workers
    here, there, discarded, outsider = (
        await one.new_channel(),
        await two.new_channel(),
        await one.new_channel(),
        await two.new_channel(),
    )
    for channel, layer in ((here, one), (there, two), (discarded, one)):
        await layer.group_add("room.lobby", channel)
    await one.group_discard("room.lobby", discarded)
    await one.group_discard("room.lobby", "specific.never!added")  # discarding a non-member is fine
    await asyncio.sleep(0.1)
    await two.group_send("room.lobby", {"type": "room.notice", "content": "hi"})
    assert await asyncio.wait_for(one.receive(here), 5) == {"type": "room.notice", "content": "hi"}
    assert await asyncio.wait_for(two.receive(there), 5) == {"type": "room.notice", "content": "hi"}
    assert await nothing_arrives(one, discarded)
    assert await nothing_arrives(two, outsider)
    assert await nothing_arrives(one, here), "exactly one copy"


async def test_a_group_is_one_subscription_per_worker_whatever_its_size(workers, backend):
    one, _ = workers
    channels = [await one.new_channel() for _ in range(50)]
    for channel in channels:
        await one.group_add("room.crowded", channel)
    await asyncio.sleep(0.1)
    if backend:
        subscribers = redis.Redis.from_url(backend).pubsub_numsub("chat:topic:room.crowded")
        assert subscribers == [(b"chat:topic:room.crowded", 1)]
    await one.group_send("room.crowded", {"type": "x"})
    received = [await asyncio.wait_for(one.receive(channel), 5) for channel in channels]
    assert received == [{"type": "x"}] * 50
    for channel in channels:
        await one.group_discard("room.crowded", channel)
    if backend:
        await asyncio.sleep(0.1)
        assert redis.Redis.from_url(backend).pubsub_numsub("chat:topic:room.crowded") == [(b"chat:topic:room.crowded", 0)]


async def test_flush_forgets_channels_and_groups(workers):
    one, _ = workers
    channel = await one.new_channel()
    await one.group_add("room.flushed", channel)
    await one.send(channel, {"type": "pending"})
    await one.flush()
    await one.group_send("room.flushed", {"type": "after"})
    assert await nothing_arrives(one, channel)


async def test_listeners_get_raw_texts_once_per_worker_and_members_only_messages(workers):
    one, two = workers
    heard: list[tuple[str, str]] = []

    async def listener(group: str, text: str) -> None:
        heard.append((group, text))

    await one.listen("room.fast", listener)
    member = await one.new_channel()
    await one.group_add("room.fast", member)
    await asyncio.sleep(0.1)
    await two.apublish("room.fast", "f\n{}")
    await two.group_send("room.fast", {"type": "room.notice", "content": "x"})
    assert await asyncio.wait_for(one.receive(member), 5) == {"type": "room.notice", "content": "x"}
    assert heard == [("room.fast", "f\n{}")], "the raw event went to the listener only, once"
    await one.unlisten("room.fast")
    await two.apublish("room.fast", "f\n{}")
    await asyncio.sleep(QUIET)
    assert len(heard) == 1


async def test_a_receive_on_a_specific_channel_is_a_future_so_a_consumer_costs_no_task_for_it(workers):
    """Channels' consumers wrap each receive in ensure_future: a coroutine would become a
    task (and its frames) per idle socket, a future is taken as it is."""
    one, _ = workers
    channel = await one.new_channel()
    waiting = one.receive(channel)
    assert isinstance(waiting, asyncio.Future)
    await one.send(channel, {"type": "hello"})
    assert await asyncio.wait_for(waiting, 2) == {"type": "hello"}


async def test_a_cancelled_receive_loses_nothing_sent_after_it(workers):
    one, _ = workers
    channel = await one.new_channel()
    for _ in range(3):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(one.receive(channel), 0.05)
    await one.send(channel, {"type": "after"})
    assert await asyncio.wait_for(one.receive(channel), 2) == {"type": "after"}
