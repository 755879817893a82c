"""Room changes across three real workers (docs/protocol.md, "Room changes"): a client
that was away converges on exactly what a client that stayed sees, and on the database,
after resuming with ``last_seq`` on another worker; also through a Redis restart and a
SIGKILLed worker. Read markers across two devices; random interleavings (hypothesis)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.processes import Cluster, RedisServer
from tests.support.room_views import ViewClient, database_view, open_view, resume, room_seq
from tests.support.rooms_api import new_room, post_message

pytestmark = [pytest.mark.multiworker]
REACTIONS = ["\U0001f44d", "\u2764\ufe0f", "\U0001f602"]


def call(cluster: Cluster, worker: int, token: str, method: str, path: str, body: object = None) -> httpx.Response:
    return httpx.request(
        method, f"{cluster.http(worker)}{path}", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


@pytest.fixture(scope="module")
def staff(cluster: Cluster) -> str:
    return cluster.mint_tokens("rc-staff", staff=True)["rc-staff"]


def changes_while_away(
    cluster: Cluster, slug: str, tokens: dict[str, str], staff: str, ids: list[int], between=None, dead: int | None = None
) -> None:
    """An edit, a removal, a restoration (of another message) and three reactions, over
    REST on every worker (but a ``dead`` one); ``between()`` runs after the first three (a fault)."""
    author = tokens["user0"]
    alive = [worker for worker in range(3) if worker != dead]

    def at(worker: int, token: str, method: str, path: str, body: object = None) -> httpx.Response:
        return call(cluster, alive[worker % len(alive)], token, method, path, body)

    assert at(0, author, "PATCH", f"/api/rooms/{slug}/messages/{ids[0]}", {"content": "edited"}).status_code == 200
    assert at(1, staff, "DELETE", f"/api/rooms/{slug}/messages/{ids[1]}").status_code == 204
    assert at(2, staff, "DELETE", f"/api/rooms/{slug}/messages/{ids[2]}").status_code == 204
    if between is not None:
        between()
    assert at(0, staff, "POST", f"/api/rooms/{slug}/messages/{ids[2]}/restore").status_code == 200
    for worker, (user, emoji) in enumerate([("user1", REACTIONS[0]), ("user2", REACTIONS[1]), ("user0", REACTIONS[0])]):
        path = f"/api/rooms/{slug}/messages/{ids[3]}/reactions/{quote(emoji)}"
        assert at(worker, tokens[user], "PUT", path).status_code == 200


async def converge(cluster: Cluster, slug: str, token: str, *clients: ViewClient, timeout: float = 15) -> None:
    """Every client reaches the room's seq, and all of them show what the database holds."""
    seq = await room_seq(cluster, 1, slug, token)
    for client in clients:
        await client.wait_seq(seq, timeout)
    await asyncio.sleep(1.2)  # a duplicate or a late backfill would arrive now (the gap check runs every second)
    expected = await asyncio.to_thread(database_view, cluster, slug, token)
    for client in clients:
        assert client.view == expected, f"a client's view {client.view} is not the database's {expected}"
        assert not client.errors, client.errors


async def away_and_back(cluster: Cluster, tokens: dict[str, str], staff: str, *, fault=None, kill: int | None = None) -> None:
    slug = new_room(cluster, tokens["user0"])
    ids = [post_message(cluster, 0, slug, tokens["user0"], f"m{i}").json()["id"] for i in range(4)]
    path = f"/ws/rooms/{slug}/"
    online = await open_view(cluster.ws(0, path), tokens["user1"])
    away = await open_view(cluster.ws(kill if kill is not None else 1, path), tokens["user2"])
    assert set(away.view) == set(ids) and away.seq == 4
    try:
        if kill is not None:
            cluster.kill_worker(kill)  # SIGKILL: the client drops without a close
            await asyncio.wait_for(away.reader, 5)
        else:
            await away.close()
        await asyncio.to_thread(changes_while_away, cluster, slug, tokens, staff, ids, fault, kill)
        back = await resume(cluster, 2 if kill is None else 1, slug, tokens["user2"], away)
        await converge(cluster, slug, tokens["user0"], online, back, timeout=25)
        assert online.view == back.view and back.view[ids[0]][0] == "edited" and ids[1] not in back.view
        assert back.view[ids[3]][1] == {REACTIONS[0]: ["user1", "user0"], REACTIONS[1]: ["user2"]}
        replayed = [f["type"] for f in back.frames if f["type"] not in ("hello", "presence", "ping")]
        assert replayed[: replayed.index("synced")] == ["message_edited", "message_deleted", "message_restored", "reactions"]
        for client in (online, back):
            await client.close()
    finally:
        if kill is not None:
            cluster.start_worker(kill)


@pytest.mark.asyncio
async def test_a_client_away_during_changes_converges_after_resuming_on_another_worker(cluster: Cluster, staff: str):
    await away_and_back(cluster, cluster.tokens, staff)


@pytest.mark.asyncio
async def test_a_client_whose_worker_was_killed_converges_on_another(cluster: Cluster, staff: str):
    await away_and_back(cluster, cluster.tokens, staff, kill=2)


@pytest.fixture(scope="module")
def restart_cluster() -> Iterator[Cluster]:
    """Three workers on a Redis of their own (restarted under them)."""
    redis = RedisServer()
    started = Cluster(redis, workers=3)
    started.tokens = started.mint_tokens("user0", "user1", "user2")
    started.staff = started.mint_tokens("rc-staff", staff=True)["rc-staff"]  # type: ignore[attr-defined]
    yield started
    started.stop()
    redis.stop()


@pytest.mark.asyncio
async def test_a_redis_restart_during_the_changes_loses_none_of_them(restart_cluster: Cluster):
    cluster = restart_cluster

    def restart() -> None:
        cluster.redis.restart()  # every subscription is gone; publishes meanwhile are lost
        time.sleep(0.5)

    await away_and_back(cluster, cluster.tokens, cluster.staff, fault=restart)  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_read_markers_and_unread_counts_across_two_devices_on_two_workers(cluster: Cluster):
    tokens = cluster.mint_tokens("rc-reader", "rc-writer")
    reader, writer = tokens["rc-reader"], tokens["rc-writer"]
    slug = new_room(cluster, writer)
    path = f"/ws/rooms/{slug}/"
    phone = await open_view(cluster.ws(0, path), reader)
    laptop = await open_view(cluster.ws(1, path), reader)
    ids = [post_message(cluster, 2, slug, writer, f"m{i}").json()["id"] for i in range(3)]

    def unread(worker: int) -> int:
        rooms = call(cluster, worker, reader, "GET", "/api/rooms/").json()["rooms"]
        return next(room["unread"] for room in rooms if room["slug"] == slug)

    assert unread(2) == 3
    await phone.wait_seq(3)
    await phone.send({"type": "read", "id": ids[1]})

    async def read_frames(client: ViewClient, count: int) -> list[dict]:
        deadline = time.monotonic() + 5
        while len(frames := [f for f in client.frames if f["type"] == "read"]) < count:
            assert time.monotonic() < deadline, f"{len(frames)} of {count} read frames"
            await asyncio.sleep(0.02)
        return frames

    assert await read_frames(laptop, 1) == [{"type": "read", "user": "rc-reader", "id": ids[1]}]
    assert unread(1) == 1 and unread(0) == 1
    assert call(cluster, 2, reader, "POST", f"/api/rooms/{slug}/read", {"id": ids[2]}).status_code == 204
    assert (await read_frames(phone, 1))[0]["id"] == ids[2], "after a REST read, every socket of the reader"
    assert (await read_frames(laptop, 2))[1]["id"] == ids[2]
    assert unread(0) == 0
    assert call(cluster, 0, reader, "POST", f"/api/rooms/{slug}/read", {"id": ids[0]}).status_code == 204
    await asyncio.sleep(0.5)
    assert len([f for f in laptop.frames if f["type"] == "read"]) == 2, "a marker that does not move tells nobody"
    assert unread(0) == 0
    for client in (phone, laptop):
        await client.close()


# ---- random interleavings --------------------------------------------------------------------------
OPERATIONS = st.lists(
    st.tuples(
        st.integers(0, 2),  # which client acts
        st.sampled_from(["say", "edit", "delete", "react", "unreact", "drop"]),
        st.integers(0, 50),  # which message (modulo those known)
        st.integers(0, 2),  # which emoji, or which worker to come back on
    ),
    min_size=8,
    max_size=30,
)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS, seed=st.integers(0, 1000))
def test_random_interleavings_of_changes_and_resumes_end_in_the_databases_state(
    cluster: Cluster, operations: list[tuple[int, str, int, int]], seed: int
) -> None:
    asyncio.run(asyncio.wait_for(_interleave(cluster, operations, random.Random(seed)), 90))


async def _interleave(cluster: Cluster, operations: list[tuple[int, str, int, int]], rng: random.Random) -> None:
    tokens = cluster.tokens
    users = ["user3", "user4", "user5"]
    slug = new_room(cluster, tokens[users[0]])
    path = f"/ws/rooms/{slug}/"
    clients: list[ViewClient | None] = [await open_view(cluster.ws(i, path), tokens[user]) for i, user in enumerate(users)]
    ids: list[int] = []
    gone: list[ViewClient] = [None] * 3  # type: ignore[list-item]
    try:
        for number, (who, action, which, extra) in enumerate(operations):
            client = clients[who]
            if client is None:  # away: it comes back, on any worker, with its last seq
                clients[who] = await resume(cluster, extra, slug, tokens[users[who]], gone[who])
                continue
            target = ids[which % len(ids)] if ids else None
            if action == "say" or target is None:
                await client.send({"type": "message", "content": f"say {number}", "nonce": f"n{number}"})
                deadline = time.monotonic() + 10
                while not any(f.get("nonce") == f"n{number}" for f in client.frames):
                    assert time.monotonic() < deadline, "a message was not echoed"
                    await asyncio.sleep(0.01)
                ids.append(next(f["id"] for f in client.frames if f.get("nonce") == f"n{number}" and f["type"] == "message"))
            elif action == "edit":
                await client.send({"type": "edit", "id": target, "content": f"edit {number}"})
            elif action == "delete":
                await client.send({"type": "delete", "id": target})
            elif action in ("react", "unreact"):
                await client.send({"type": "react", "id": target, "emoji": REACTIONS[extra], "on": action == "react"})
            elif action == "drop":
                await client.close()
                gone[who], clients[who] = client, None
            await asyncio.sleep(rng.random() * 0.05)
        for who, client in enumerate(clients):
            if client is None:
                clients[who] = await resume(cluster, rng.randrange(3), slug, tokens[users[who]], gone[who])
        live = [client for client in clients if client is not None]
        # Errors are fine here (someone else's message: forbidden; a removed one: not_found),
        # as long as every view ends as the database's.
        for client in live:
            client.errors.clear()
        seq = await room_seq(cluster, 0, slug, tokens[users[0]])
        for client in live:
            await client.wait_seq(seq)
        await asyncio.sleep(1.2)
        expected = await asyncio.to_thread(database_view, cluster, slug, tokens[users[0]])
        for client in live:
            assert client.view == expected
    finally:
        for client in clients:
            if client is not None:
                await client.close()
