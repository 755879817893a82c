"""Two Redis shards (REDIS_URLS): cross-worker chat and resumable streams still hold, and
both shards carry part of the load."""

from __future__ import annotations

import asyncio
import binascii
import contextlib
from collections.abc import Iterator

import httpx
import pytest
import redis

from chat.wire import room_group
from tests.support.processes import Cluster, RedisServer
from tests.support.rooms_api import list_messages, new_room
from tests.support.streams import auth, read_events, start_stream
from tests.support.wsclient import room_client

pytestmark = [pytest.mark.multiworker]


@pytest.fixture(scope="module")
def sharded() -> Iterator[tuple[Cluster, list[RedisServer]]]:
    shards = [RedisServer(), RedisServer()]
    cluster = Cluster(shards[0], workers=2, env={"REDIS_URL": "", "REDIS_URLS": ",".join(s.url for s in shards)})
    cluster.tokens = cluster.mint_tokens("ann", "bob")
    yield cluster, shards
    cluster.stop()
    for shard in shards:
        shard.stop()


def keys_on(shard: RedisServer, pattern: str) -> list[str]:
    client = redis.Redis.from_url(shard.url, decode_responses=True, socket_timeout=5)
    try:
        return list(client.scan_iter(pattern))
    finally:
        client.close()


def subscribed_topics(shard: RedisServer) -> list[str]:
    client = redis.Redis.from_url(shard.url, decode_responses=True, socket_timeout=5)
    try:
        return [str(channel) for channel in client.pubsub_channels("chat:topic:room.*")]
    finally:
        client.close()


@pytest.mark.asyncio
async def test_chat_across_workers_is_exactly_once_with_rooms_on_both_shards(sharded):
    cluster, shards = sharded
    ann, bob = cluster.tokens["ann"], cluster.tokens["bob"]
    # A room's topic goes to the shard CRC32 picks (docs/deployment.md), and slugs differ from
    # run to run: eight rooms on one shard happen one run in 128, so add rooms until both have some.
    slugs = [new_room(cluster, ann) for _ in range(8)]
    while len({binascii.crc32(room_group(slug).encode()) % len(shards) for slug in slugs}) < len(shards):
        assert len(slugs) < 24, "CRC32 spreads rooms over the shards"
        slugs.append(new_room(cluster, ann))
    async with contextlib.AsyncExitStack() as stack, asyncio.timeout(60):
        pairs = [
            (
                await stack.enter_async_context(room_client(cluster.ws(0, f"/ws/rooms/{slug}/"), ann)),
                await stack.enter_async_context(room_client(cluster.ws(1, f"/ws/rooms/{slug}/"), bob)),
            )
            for slug in slugs
        ]
        for sender, reader in pairs:
            await sender.sync()
            await reader.sync()
        topics = [subscribed_topics(shard) for shard in shards]
        assert all(topics), f"each shard carries some rooms' topics: {topics}"
        assert sum(len(t) for t in topics) == len(slugs), "every room is subscribed on exactly one shard"
        for slug in slugs:
            shard = binascii.crc32(room_group(slug).encode()) % len(shards)
            assert f"chat:topic:{room_group(slug)}" in topics[shard], "each room on the shard CRC32 picks"
        for slug, (sender, _) in zip(slugs, pairs, strict=True):
            for i in range(15):
                await sender.say(f"{slug} {i}")
        for slug, (sender, reader) in zip(slugs, pairs, strict=True):
            for client in (sender, reader):
                await client.wait_messages(15)
            await reader.quiet(0.2)
            expected = [f"{slug} {i}" for i in range(15)]
            assert [m["content"] for m in reader.messages] == expected, "each message once, in order, on the other worker"
            assert [m["id"] for m in list_messages(cluster, slug, ann)] == [m["id"] for m in sender.messages]


def stream_logs(shard: RedisServer) -> list[str]:
    return [key for key in keys_on(shard, "log:*") if not key.endswith(":meta")]


def test_streams_resume_on_the_other_worker_with_their_logs_on_both_shards(sharded):
    cluster, shards = sharded
    token = cluster.tokens["bob"]
    # A stream's id is a random UUID and its log's shard follows from it, so six streams
    # leave one shard empty one time in 32. Go on (up to 16, one in 32,768) until both hold some.
    for number in range(16):
        if number >= 6 and all(stream_logs(shard) for shard in shards):
            break
        response = start_stream(cluster, number % 2, token, message=f"stream {number}", max_tokens=30)
        stream_id = response.headers["X-Stream-Id"]
        first = read_events(response, until=5)
        response.close()  # the client drops; the generation goes on
        seen = [e["data"]["index"] for e in first if e.get("event") == "token"]
        last_id = next(e["id"] for e in reversed(first) if e.get("event") == "token")
        with httpx.stream(
            "GET",
            f"{cluster.http(1 - number % 2)}/api/streams/{stream_id}/events",
            headers={**auth(token), "Last-Event-ID": last_id},
            timeout=20,
        ) as resumed:
            rest = read_events(resumed)
        indexes = [e["data"]["index"] for e in rest if e.get("event") == "token"]
        assert seen + indexes == list(range(30)), "every token exactly once across the two connections"
        assert rest[-1]["event"] == "done"
    logs = [stream_logs(shard) for shard in shards]
    assert all(logs), f"each shard holds some stream logs: {logs}"
    assert sum(len(keys) for keys in logs) >= 6
