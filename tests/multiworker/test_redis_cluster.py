"""A Redis Cluster (REDIS_CLUSTER_URL): three masters and three replicas on loopback.

Chat across workers stays exactly once with rooms on every master, token streams resume
on another worker, and both hold through a failover (a master killed; its replica takes
over) and through the migration of a busy room's slot to another master. The recovery
times printed here are the ones in docs/reliability.md, "Redis Cluster"."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from redis.crc import key_slot

from tests.support.processes import Cluster, RedisClusterServers
from tests.support.rooms_api import list_messages, new_room
from tests.support.sse_parsing import parse_events
from tests.support.streams import auth, read_events, start_stream
from tests.support.wsclient import RoomClient, room_client

pytestmark = [pytest.mark.multiworker]

TOPIC_PREFIX = "chat:topic:"  # core.broker's: a room's shard channel is this + "room.<slug>"


def start(redis_cluster: RedisClusterServers, workers: int) -> Cluster:
    # Cluster wants a RedisServer for REDIS_URL; the environment replaces it with the cluster.
    cluster = Cluster(
        redis_cluster,  # type: ignore[arg-type]
        workers=workers,
        env={
            "REDIS_URL": "",
            "REDIS_CLUSTER_URL": redis_cluster.seed_urls,
            "LLM_TOKEN_DELAY_MS": "20",
            "LLM_MAX_CONCURRENT_PER_USER": "50",
        },
    )
    cluster.tokens = cluster.mint_tokens("ann", "bob")
    return cluster


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers()
    yield servers
    servers.stop()


@pytest.fixture(scope="module")
def on_cluster(redis_cluster: RedisClusterServers) -> Iterator[Cluster]:
    cluster = start(redis_cluster, 3)
    yield cluster
    cluster.stop()


@pytest.fixture
def own_redis_cluster() -> Iterator[RedisClusterServers]:
    """A Redis Cluster of its own, for a test that kills one of its masters."""
    servers = RedisClusterServers()
    yield servers
    servers.stop()


@pytest.fixture
def on_own_cluster(own_redis_cluster: RedisClusterServers) -> Iterator[Cluster]:
    cluster = start(own_redis_cluster, 2)
    yield cluster
    cluster.stop()


def room_slot(slug: str) -> int:
    return key_slot(f"{TOPIC_PREFIX}room.{slug}".encode())


def rooms_on_every_master(cluster: Cluster, servers: RedisClusterServers, token: str, count: int) -> list[str]:
    """``count`` new rooms (or a few more) whose topics together live on every master."""
    slugs: list[str] = []
    owners: set[int] = set()
    masters = {node["port"] for node in servers.masters()}
    while len(slugs) < count or owners != masters:
        assert len(slugs) < count * 3, "room topics keep missing a master"
        slugs.append(new_room(cluster, token))
        owners.add(servers.master_of_slot(room_slot(slugs[-1]))["port"])
    return slugs


def shard_channels(servers: RedisClusterServers, port: int) -> list[str]:
    return [str(channel) for channel in servers.client(port).execute_command("PUBSUB", "SHARDCHANNELS", "chat:topic:room.*")]


async def say_until(sender: RoomClient, stop: asyncio.Event, sent: list[str], prefix: str) -> None:
    """Send a message every 20 ms until ``stop``: a busy room. The sender reads what comes
    meanwhile (its own messages, pings), as a page does, then until it has seen them all."""

    async def read_on() -> None:
        while True:
            await sender.recv(60)

    reading = asyncio.create_task(read_on())
    try:
        while not stop.is_set():
            content = f"{prefix} {len(sent)}"
            await sender.say(content)
            sent.append(content)
            await asyncio.sleep(0.02)
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
    await sender.wait_messages(len(sent), timeout=30)


@contextlib.asynccontextmanager
async def reading(*clients: RoomClient) -> AsyncIterator[None]:
    """Keep reading (and answering pings) while the test does something else, as a page
    does; what arrives is kept in each client's ``messages``."""

    async def read_on(client: RoomClient) -> None:
        while True:
            await client.recv(60)

    tasks = [asyncio.create_task(read_on(client)) for client in clients]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def delivered_once_in_order(reader: RoomClient, sent: list[str], timeout: float) -> None:
    await reader.wait_messages(len(sent), timeout=timeout)
    await reader.quiet(1.5)  # past the hub's 1 s gap check: nothing arrives twice
    assert [m["content"] for m in reader.messages] == sent, "each message exactly once, in order"


@pytest.mark.asyncio
async def test_chat_in_twenty_rooms_over_all_three_masters_is_exactly_once(on_cluster, redis_cluster):
    cluster = on_cluster
    health = httpx.get(f"{cluster.http(0)}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["redis"] == "ok", health.text
    ann, bob = cluster.tokens["ann"], cluster.tokens["bob"]
    slugs = rooms_on_every_master(cluster, redis_cluster, ann, 20)
    async with contextlib.AsyncExitStack() as stack, asyncio.timeout(90):
        pairs = []
        for number, slug in enumerate(slugs):  # sender and reader on different workers
            path = f"/ws/rooms/{slug}/"
            sender = await stack.enter_async_context(room_client(cluster.ws(number % 3, path), ann))
            reader = await stack.enter_async_context(room_client(cluster.ws((number + 1) % 3, path), bob))
            pairs.append((sender, reader))
        for sender, reader in pairs:
            await sender.sync()
            await reader.sync()
        subscribed = {node["port"]: shard_channels(redis_cluster, node["port"]) for node in redis_cluster.masters()}
        assert all(subscribed.values()), f"every master carries some rooms' shard channels: {subscribed}"
        for slug in slugs:
            owner = redis_cluster.master_of_slot(room_slot(slug))["port"]
            assert f"{TOPIC_PREFIX}room.{slug}" in subscribed[owner], "subscribed on the master that owns its slot"
        for slug, (sender, _) in zip(slugs, pairs, strict=True):
            for i in range(10):
                await sender.say(f"{slug} {i}")
        for sender, reader in pairs:
            await sender.wait_messages(10)
            await reader.wait_messages(10)
        await asyncio.sleep(1.5)  # past the hub's gap check
        for slug, (sender, reader) in zip(slugs, pairs, strict=True):
            expected = [f"{slug} {i}" for i in range(10)]
            assert [m["content"] for m in reader.messages] == expected, "each message once, in order, on another worker"
            assert [m["id"] for m in list_messages(cluster, slug, ann)] == [m["id"] for m in sender.messages]


def stream_logged_on(servers: RedisClusterServers, cluster: Cluster, token: str, port: int) -> tuple[httpx.Response, str]:
    """A new 300-token stream on worker 0 whose log lives on the master at ``port``."""
    for _ in range(20):
        response = start_stream(cluster, 0, token, message="a long stream", max_tokens=300)
        stream_id = response.headers["X-Stream-Id"]
        if servers.master_of_slot(key_slot(f"log:{{{stream_id}}}".encode()))["port"] == port:
            return response, stream_id
        response.close()  # it runs to its end elsewhere
    raise AssertionError(f"twenty streams and none logged on {port}")


def resume(cluster: Cluster, worker: int, token: str, stream_id: str, last_id: str) -> list[dict]:
    with httpx.stream(
        "GET",
        f"{cluster.http(worker)}/api/streams/{stream_id}/events",
        headers={**auth(token), "Last-Event-ID": last_id},
        timeout=30,
    ) as resumed:
        return read_events(resumed)


def resume_elsewhere(cluster: Cluster, token: str, worker: int, *, tokens: int = 30) -> tuple[str, list[int], dict]:
    """Start a stream on ``worker``, drop it after 5 tokens, resume it on the next worker:
    the stream id, every token index seen over both connections, and the last event."""
    response = start_stream(cluster, worker, token, message="a stream", max_tokens=tokens)
    stream_id = response.headers["X-Stream-Id"]
    first = read_events(response, until=5)
    response.close()  # the client drops; the generation goes on
    seen = [e["data"]["index"] for e in first if e.get("event") == "token"]
    last_id = next(e["id"] for e in reversed(first) if e.get("event") == "token")
    rest = resume(cluster, (worker + 1) % len(cluster.ports), token, stream_id, last_id)
    return stream_id, seen + [e["data"]["index"] for e in rest if e.get("event") == "token"], rest[-1]


def test_token_streams_resume_on_another_worker_with_logs_on_every_master(on_cluster, redis_cluster):
    cluster = on_cluster
    owners = set()
    for number in range(9):
        stream_id, indexes, last = resume_elsewhere(cluster, cluster.tokens["bob"], number % 3)
        assert indexes == list(range(30)), "every token exactly once across the two connections"
        assert last["event"] == "done"
        slot = key_slot(f"log:{{{stream_id}}}".encode())
        assert slot == key_slot(f"log:{{{stream_id}}}:meta".encode()), "a log and its meta share a slot"
        owner = redis_cluster.master_of_slot(slot)["port"]
        assert redis_cluster.client(owner).exists(f"log:{{{stream_id}}}"), "the log is on its slot's master"
        owners.add(owner)
    assert len(owners) >= 2, "the streams' logs spread over the masters"


@pytest.mark.asyncio
async def test_a_busy_rooms_slot_migrates_to_another_master_losing_nothing(on_cluster, redis_cluster):
    cluster = on_cluster
    ann, bob = cluster.tokens["ann"], cluster.tokens["bob"]
    slug = new_room(cluster, ann)
    slot = room_slot(slug)
    path = f"/ws/rooms/{slug}/"
    sent: list[str] = []
    stop = asyncio.Event()
    async with (
        asyncio.timeout(60),
        room_client(cluster.ws(0, path), ann) as sender,
        room_client(cluster.ws(1, path), bob) as reader,
        room_client(cluster.ws(2, path), bob) as third,
    ):
        for client in (sender, reader, third):
            await client.sync()
        busy = asyncio.create_task(say_until(sender, stop, sent, "busy"))
        await asyncio.sleep(1)
        async with reading(reader, third):
            source = redis_cluster.master_of_slot(slot)["port"]
            target = next(node["port"] for node in redis_cluster.masters() if node["port"] != source)
            migrated = time.monotonic()
            redis_cluster.migrate_slot(slot, to_port=target)
            assert redis_cluster.master_of_slot(slot)["port"] == target
            # The workers follow the channel to its new master (the old one unsubscribed them).
            while f"{TOPIC_PREFIX}room.{slug}" not in shard_channels(redis_cluster, target):
                assert time.monotonic() - migrated < 10, "nobody re-subscribed on the slot's new master"
                await asyncio.sleep(0.05)
            followed = time.monotonic() - migrated
            await asyncio.sleep(1)
            stop.set()
            await busy
        for client in (reader, third):
            await delivered_once_in_order(client, sent, timeout=20)
        print(f"\nslot migration: subscribers on the new master {followed:.2f} s after the move began; {len(sent)} sent")


def test_a_streams_slot_migrates_while_it_is_written_losing_nothing(on_cluster, redis_cluster):
    """The log's slot moves to another master while the producer appends to it (ASK, then
    MOVED, followed by the cluster client) and a reader resumes it on another worker."""
    cluster = on_cluster
    token = cluster.tokens["bob"]
    response = start_stream(cluster, 0, token, message="a long stream", max_tokens=300)
    stream_id = response.headers["X-Stream-Id"]
    first = read_events(response, until=10)
    response.close()
    slot = key_slot(f"log:{{{stream_id}}}".encode())
    source = redis_cluster.master_of_slot(slot)["port"]
    target = next(node["port"] for node in redis_cluster.masters() if node["port"] != source)
    assert redis_cluster.migrate_slot(slot, to_port=target) >= 2, "the log and its meta moved"
    assert redis_cluster.client(target).exists(f"log:{{{stream_id}}}")
    last_id = next(e["id"] for e in reversed(first) if e.get("event") == "token")
    rest = resume(cluster, 1, token, stream_id, last_id)
    tokens = [e["data"]["index"] for e in first + rest if e.get("event") == "token"]
    assert tokens == list(range(300)) and rest[-1]["event"] == "done", "every token exactly once, then done"


@pytest.mark.asyncio
async def test_chat_and_streams_survive_a_master_failover_losing_nothing(own_redis_cluster, on_own_cluster):
    servers, cluster = own_redis_cluster, on_own_cluster
    ann, bob = cluster.tokens["ann"], cluster.tokens["bob"]
    # The victim is the node REDIS_CLUSTER_URL names, which the clients learnt the cluster
    # from (the hardest case: redis-py asked it for every XREAD's keys), and the room's.
    victim = servers.ports[0]
    assert victim in {node["port"] for node in servers.masters()}
    slug = new_room(cluster, ann)
    while servers.master_of_slot(room_slot(slug))["port"] != victim:
        slug = new_room(cluster, ann)
    path = f"/ws/rooms/{slug}/"
    sent: list[str] = []
    stop = asyncio.Event()
    async with (
        asyncio.timeout(90),
        room_client(cluster.ws(0, path), ann) as sender,
        room_client(cluster.ws(1, path), bob) as reader,
    ):
        await sender.sync()
        await reader.sync()
        busy = asyncio.create_task(say_until(sender, stop, sent, "busy"))
        # A 300-token stream (6 s) whose log is on the victim, read up to its 10th token.
        streaming, stream_id = await asyncio.to_thread(stream_logged_on, servers, cluster, bob, victim)
        first = await asyncio.to_thread(read_events, streaming, until=10)
        streaming.close()
        killed = time.monotonic()
        servers.kill(victim)  # its replica is promoted after the 1 s node timeout
        count_at_kill = len(sent)
        # Until the first message sent after the kill reaches the reader.
        await reader.wait_messages(count_at_kill + 1, timeout=30)
        recovered = time.monotonic() - killed
        async with reading(reader):
            await asyncio.to_thread(servers.wait_healthy)
            promoted = time.monotonic() - killed
            await asyncio.sleep(1)
            stop.set()
            await busy
        await delivered_once_in_order(reader, sent, timeout=30)
        assert [m["id"] for m in list_messages(cluster, slug, ann)] == [m["id"] for m in reader.messages]
    # The stream went on through the failover: resumed on the other worker, every token once.
    last_id = next(e["id"] for e in reversed(first) if e.get("event") == "token")
    rest = await asyncio.to_thread(resume, cluster, 1, bob, stream_id, last_id)
    tokens = [e["data"]["index"] for e in first + rest if e.get("event") == "token"]
    assert tokens == list(range(300)) and rest[-1]["event"] == "done", "every token exactly once, then done"
    # Streams whose logs are on the new master (and the others) start and resume again.
    for number in range(4):
        _, indexes, last = await asyncio.to_thread(resume_elsewhere, cluster, bob, number % 2)
        assert indexes == list(range(30)) and last["event"] == "done"
    for worker in range(2):  # a cluster with a dead node is healthy once its slots are served
        health = httpx.get(f"{cluster.http(worker)}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["redis"] == "ok", health.text
    print(f"\nfailover: replica promoted {promoted:.2f} s after the kill; chat flowing again after {recovered:.2f} s")


@pytest.fixture(scope="module")
def limited_on_cluster(redis_cluster: RedisClusterServers) -> Iterator[Cluster]:
    """Two workers with a low rate limit and connection cap, and a task worker, on the
    module's Redis Cluster."""
    cluster = Cluster(
        redis_cluster,  # type: ignore[arg-type]
        workers=2,
        env={
            "REDIS_URL": "",
            "REDIS_CLUSTER_URL": redis_cluster.seed_urls,
            "CHAT_RATE_LIMIT": "5",
            "CHAT_RATE_WINDOW": "3",
            "CHAT_MAX_CONNECTIONS_PER_USER": "2",
        },
    )
    cluster.tokens = cluster.mint_tokens("amy", "ben")
    cluster.start_taskworker()
    yield cluster
    cluster.stop()


@pytest.mark.asyncio
async def test_presence_caps_and_rate_limits_hold_across_workers_on_the_cluster(limited_on_cluster):
    cluster = limited_on_cluster
    amy, ben = cluster.tokens["amy"], cluster.tokens["ben"]
    slug = new_room(cluster, amy)
    path = f"/ws/rooms/{slug}/"
    async with asyncio.timeout(30), room_client(cluster.ws(0, path), amy) as zero, room_client(cluster.ws(1, path), amy) as one:
        await zero.sync()
        _, presence = await one.sync()
        assert presence["users"] == ["amy"]
        async with room_client(cluster.ws(0, path), amy) as third:  # the cap counts both workers' sockets
            assert await third.close_code() == 4029
        async with room_client(cluster.ws(1, path), ben) as other:
            _, seen = await other.sync()
            assert seen["users"] == ["amy", "ben"], "presence from both workers, in one slot's keys"
        for i in range(5):  # alternate workers: 5 accepted in the window
            await (zero if i % 2 == 0 else one).say(f"m{i}", nonce=str(i))
        await zero.wait_messages(5)
        await one.say("sixth", nonce="6")
        error = await one.until("error")
        assert error["code"] == "rate_limited" and error["nonce"] == "6"
    stored = sorted(m["content"] for m in list_messages(cluster, slug, amy))  # two workers: either order
    assert stored == [f"m{i}" for i in range(5)], "the five in the window, not the sixth"


def test_task_events_stream_from_another_worker_on_the_cluster(limited_on_cluster):
    cluster = limited_on_cluster
    headers = auth(cluster.tokens["ben"])
    created = httpx.post(
        f"{cluster.http(0)}/api/tasks/", json={"kind": "countdown", "steps": 5, "interval_ms": 100}, headers=headers, timeout=10
    )
    assert created.status_code == 202, created.text
    task_id = created.json()["id"]
    with httpx.stream("GET", f"{cluster.http(1)}/api/tasks/{task_id}/events", headers=headers, timeout=30) as response:
        events = read_task_events(response)
    assert events[-1]["event"] == "complete" and events[-1]["data"]["status"] == "succeeded"
    ids = [int(e["id"]) for e in events]
    assert ids == list(range(1, len(ids) + 1)), "every event once, numbered from 1"


def read_task_events(response: httpx.Response) -> list[dict]:
    events: list[dict] = []
    buffer = ""
    for text in response.iter_text():
        buffer += text
        *blocks, buffer = buffer.split("\n\n")
        events += [e for block in blocks for e in parse_events(block + "\n\n") if "event" in e]
        if events and events[-1]["event"] in ("complete", "failed"):
            break
    return events
