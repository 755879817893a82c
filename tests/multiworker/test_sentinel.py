"""Redis through Sentinel (REDIS_SENTINELS + REDIS_SENTINEL_MASTERS): chat across workers
works, and survives a failover from the master to its replica with nothing lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis

from tests.support.processes import Cluster, RedisServer, SentinelServer
from tests.support.rooms_api import list_messages, new_room
from tests.support.wsclient import room_client

pytestmark = [pytest.mark.multiworker, pytest.mark.asyncio]


@pytest.fixture
def sentinel_cluster() -> Iterator[tuple[Cluster, RedisServer, RedisServer, SentinelServer]]:
    master = RedisServer()
    replica = RedisServer(replica_of=master)
    sentinel = SentinelServer(master, name="chat")
    cluster = Cluster(
        master,
        workers=2,
        env={"REDIS_URL": "", "REDIS_SENTINELS": sentinel.address, "REDIS_SENTINEL_MASTERS": "chat"},
    )
    cluster.tokens = cluster.mint_tokens("ann", "bob")
    yield cluster, master, replica, sentinel
    cluster.stop()
    for server in (sentinel, replica, master):
        server.stop()


def master_port(sentinel: SentinelServer) -> int:
    client = redis.Redis(host="127.0.0.1", port=sentinel.port, decode_responses=True, socket_timeout=2)
    try:
        address = client.sentinel_get_master_addr_by_name("chat")
        assert isinstance(address, tuple), address
        return int(address[1])
    finally:
        client.close()


async def test_chat_goes_on_through_a_sentinel_failover_losing_nothing(sentinel_cluster):
    cluster, master, replica, sentinel = sentinel_cluster
    ann, bob = cluster.tokens["ann"], cluster.tokens["bob"]
    slug = new_room(cluster, ann)
    path = f"/ws/rooms/{slug}/"
    async with room_client(cluster.ws(0, path), ann) as sender, room_client(cluster.ws(1, path), bob) as reader:
        await sender.sync()
        await reader.sync()
        for i in range(10):
            await sender.say(f"before {i}")
        await reader.wait_messages(10)

        master.stop()  # the master dies; Sentinel promotes the replica after about 1 s
        deadline = time.monotonic() + 30
        while master_port(sentinel) != replica.port:
            assert time.monotonic() < deadline, "Sentinel never promoted the replica"
            await asyncio.sleep(0.2)
        failed_over = time.monotonic()

        for i in range(10):  # through the new master
            await sender.say(f"after {i}")
        await reader.wait_messages(20, timeout=20)
        await reader.quiet(1.5)  # past the hub's 1 s gap check: nothing arrives twice
        print(f"\nSentinel failover: chat delivered again {time.monotonic() - failed_over:.2f} s after the promotion")
        expected = [f"before {i}" for i in range(10)] + [f"after {i}" for i in range(10)]
        assert [m["content"] for m in reader.messages] == expected, "each message exactly once, in order"
        assert [m["id"] for m in list_messages(cluster, slug, ann)] == [m["id"] for m in reader.messages]
