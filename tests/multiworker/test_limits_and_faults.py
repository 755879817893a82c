"""Multi-worker behaviour that needs its own settings or breaks Redis: own cluster each."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.processes import Cluster, RedisServer
from tests.support.rooms_api import list_messages, new_room, post_message
from tests.support.wsclient import room_client

pytestmark = [pytest.mark.multiworker, pytest.mark.asyncio]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def limited(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Two workers with a low rate limit and connection cap, on SQLite, then on PostgreSQL."""
    redis = RedisServer()
    env = {"CHAT_RATE_LIMIT": "5", "CHAT_RATE_WINDOW": "3", "CHAT_MAX_CONNECTIONS_PER_USER": "2"}
    if request.param == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("postgres_server").create_database("limited")
    started = Cluster(redis, workers=2, env=env)
    started.tokens = started.mint_tokens("amy", "ben")
    yield started
    started.stop()
    redis.stop()


async def test_rate_limit_holds_across_workers_and_rest(limited: Cluster):
    token = limited.tokens["amy"]
    slug = new_room(limited, token)
    path = f"/ws/rooms/{slug}/"
    async with room_client(limited.ws(0, path), token) as zero, room_client(limited.ws(1, path), token) as one:
        await zero.sync()
        await one.sync()
        for i in range(4):  # alternate workers: 4 accepted
            await (zero if i % 2 == 0 else one).say(f"m{i}", nonce=str(i))
        await zero.wait_messages(4)
        assert post_message(limited, 1, slug, token, "fifth, over REST").status_code == 201
        refused = post_message(limited, 0, slug, token, "sixth")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 3
        await one.say("seventh", nonce="7")
        error = await one.until("error")
        assert error["code"] == "rate_limited" and error["nonce"] == "7" and 0 < error["retry_after"] <= 3
        await asyncio.sleep(error["retry_after"] + 0.1)
        await one.say("after the window", nonce="8")
        assert (await one.until("message", nonce="8"))["content"] == "after the window"
    assert len(list_messages(limited, slug, token)) == 6


async def test_connection_cap_is_counted_across_workers(limited: Cluster):
    token = limited.tokens["ben"]
    slug = new_room(limited, token)
    path = f"/ws/rooms/{slug}/"
    async with room_client(limited.ws(0, path), token) as first, room_client(limited.ws(1, path), token) as second:
        await first.sync()
        await second.sync()
        async with room_client(limited.ws(0, path), token) as third:
            assert await third.close_code() == 4029
    async with room_client(limited.ws(1, path), token) as again:
        await again.sync()  # closed connections free their places


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    redis = RedisServer()
    started = Cluster(redis, workers=2)
    started.tokens = started.mint_tokens("cat", "dan")
    yield started
    started.stop()
    redis.stop()


async def test_chat_resumes_after_a_redis_restart_without_restarting_workers(own_cluster: Cluster):
    cluster = own_cluster
    tokens = cluster.tokens
    slug = new_room(cluster, tokens["cat"])
    path = f"/ws/rooms/{slug}/"
    async with (
        room_client(cluster.ws(0, path), tokens["cat"]) as sender,
        room_client(cluster.ws(1, path), tokens["dan"]) as reader,
    ):
        await sender.sync()
        await reader.sync()
        for i in range(10):
            await sender.say(f"before {i}")
        await reader.wait_messages(10)
        cluster.redis.restart()  # without persistence: subscriptions, presence and counters are gone
        for i in range(10):  # sent while the workers are still reconnecting
            await sender.say(f"during {i}")
            await asyncio.sleep(0.05)
        await reader.wait_messages(20, timeout=15)
        for i in range(10):
            await sender.say(f"after {i}")
        await reader.wait_messages(30, timeout=15)
        await sender.wait_messages(30, timeout=15)
        await reader.quiet(1.0)
        expected = [f"{phase} {i}" for phase in ("before", "during", "after") for i in range(10)]
        assert [m["content"] for m in reader.messages] == expected
        assert [m["content"] for m in sender.messages] == expected, "every sender gets its acks, once"
        # Presence heals: both users are online again after the workers re-register.
        deadline = time.monotonic() + 6
        online = 0
        while time.monotonic() < deadline and online != 2:
            rooms = httpx.get(f"{cluster.http(0)}/api/rooms/", headers={"Authorization": f"Bearer {tokens['cat']}"}).json()
            online = next(r["online"] for r in rooms["rooms"] if r["slug"] == slug)
            await asyncio.sleep(0.2)
        assert online == 2


async def test_a_ban_closes_the_users_sockets_on_every_worker_within_two_seconds(db_cluster: Cluster):
    cluster = db_cluster  # on SQLite and on PostgreSQL
    tokens = cluster.tokens
    slug = new_room(cluster, tokens["user0"])
    path = f"/ws/rooms/{slug}/"
    async with (
        room_client(cluster.ws(0, path), tokens["user5"]) as zero,
        room_client(cluster.ws(1, path), tokens["user5"]) as one,
        room_client(cluster.ws(2, path), tokens["user5"]) as two,
    ):
        for client in (zero, one, two):
            await client.sync()
        banning = asyncio.create_task(
            asyncio.to_thread(
                cluster.manage,
                "shell",
                "-c",
                "import time; from django.contrib.auth.models import User; from chat.models import Room; "
                "from chat.services.moderation import ban_create; "
                f"ban_create(user=User.objects.get(username='user5'), room=Room.objects.get(slug='{slug}'), minutes=1); "
                "print(time.time())",
            )
        )

        async def closed_at(client):
            code = await client.close_code(timeout=15)
            return code, time.time()

        results = await asyncio.gather(*(closed_at(c) for c in (zero, one, two)))
        banned_at = float((await banning).strip().splitlines()[-1])
        assert [code for code, _ in results] == [4003, 4003, 4003]
        slowest = max(at for _, at in results) - banned_at
        assert slowest < 2, f"the last socket closed {slowest:.2f}s after the ban committed"
    async with room_client(cluster.ws(1, path), tokens["user5"]) as refused:
        assert await refused.close_code() == 4003
