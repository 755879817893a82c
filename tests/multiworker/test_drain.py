"""A rolling restart of three real daphne workers under load (core/drain.py): each worker,
sent SIGTERM, stops accepting, tells its sockets to reconnect with 1012 at moments spread
over DRAIN_SECONDS, and exits; its clients reconnect to the others with ``last_id``; a
sender keeps posting throughout. What the users see: every message once, close code 1012
(never an abrupt 1006), goodbyes spread out, and every worker back at the end."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from dataclasses import dataclass, field

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.processes import Cluster, RedisServer
from tests.support.rooms_api import list_messages, new_room
from tests.support.wsclient import room_client

pytestmark = [pytest.mark.multiworker]

DRAIN_SECONDS = 3.0
SOCKETS_PER_WORKER = 20
ROOMS = 3


@pytest.fixture(scope="module")
def draining_cluster(redis_server: RedisServer):
    cluster = Cluster(redis_server, workers=3, env={"DRAIN_SECONDS": str(DRAIN_SECONDS), "WS_ADMIT_PER_SECOND": "50"})
    cluster.tokens = cluster.mint_tokens(*(f"drain{i}" for i in range(6)))
    yield cluster
    cluster.stop()


@dataclass
class Member:
    """One user's socket that, closed by the server, reconnects to the next worker with last_id."""

    slug: str
    token: str
    worker: int
    ids: list[int] = field(default_factory=list)  # every message id received, duplicates included
    closes: list[tuple[int, int | None, float]] = field(default_factory=list)  # (worker, code, when)
    reconnects: list[float] = field(default_factory=list)  # seconds from a close to the next synced

    async def run(self, cluster: Cluster, stop: asyncio.Event) -> None:
        closed_at: float | None = None
        while not stop.is_set():
            last = f"?last_id={max(self.ids)}" if self.ids else ""
            try:
                async with room_client(cluster.ws(self.worker, f"/ws/rooms/{self.slug}/{last}"), self.token) as client:
                    await client.sync(timeout=15)
                    if closed_at is not None:
                        self.reconnects.append(time.monotonic() - closed_at)
                    self.ids += [frame["id"] for frame in client.messages]
                    client.messages.clear()
                    while not stop.is_set():
                        try:
                            await client.recv(timeout=0.5)
                        except TimeoutError:
                            continue
                        finally:
                            self.ids += [frame["id"] for frame in client.messages]
                            client.messages.clear()
            except ConnectionClosed as closed:
                closed_at = time.monotonic()
                self.closes.append((self.worker, closed.rcvd.code if closed.rcvd else None, closed_at))
            except (OSError, InvalidStatus, TimeoutError):  # the worker is down or not up yet
                closed_at = closed_at or time.monotonic()
                await asyncio.sleep(0.2)
            self.worker = (self.worker + 1) % 3


async def send_messages(cluster: Cluster, slugs: list[str], token: str, stop: asyncio.Event, down: set[int]) -> list[int]:
    """Post to the rooms round-robin, through a worker that is up, until ``stop``; the ids
    the server accepted."""
    accepted: list[int] = []
    async with httpx.AsyncClient(timeout=10) as http:
        for number in itertools.count():
            if stop.is_set():
                return accepted
            worker = next(w for w in itertools.chain(range(number % 3, 3), range(3)) if w not in down)
            try:
                response = await http.post(
                    f"{cluster.http(worker)}/api/rooms/{slugs[number % len(slugs)]}/messages",
                    json={"content": f"m{number}"},
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.TransportError:
                continue  # that worker stopped listening just now: nothing was stored
            assert response.status_code == 201, response.text
            accepted.append(response.json()["id"])
            await asyncio.sleep(0.05)
    return accepted


def test_a_rolling_restart_loses_nothing_and_spreads_the_reconnects(draining_cluster: Cluster) -> None:
    cluster = draining_cluster
    tokens = list(cluster.tokens.values())
    slugs = [new_room(cluster, tokens[0]) for _ in range(ROOMS)]
    members = [Member(slug=slugs[i % ROOMS], token=tokens[i % len(tokens)], worker=i % 3) for i in range(3 * SOCKETS_PER_WORKER)]
    exits: list[float] = []
    expected: dict[str, list[int]] = {}

    async def scenario() -> list[int]:
        stop_members, stop_sending = asyncio.Event(), asyncio.Event()
        down: set[int] = set()
        running = [asyncio.create_task(member.run(cluster, stop_members)) for member in members]
        await asyncio.sleep(2)  # everyone connected and synced
        sender = asyncio.create_task(send_messages(cluster, slugs, tokens[1], stop_sending, down))
        for worker in range(3):
            process = cluster.processes[worker]
            assert process is not None
            down.add(worker)
            started = time.monotonic()
            process.terminate()
            await asyncio.wait_for(asyncio.to_thread(process.wait), DRAIN_SECONDS + 10)
            exits.append(time.monotonic() - started)
            await asyncio.to_thread(cluster.start_worker, worker)
            down.discard(worker)
            await asyncio.sleep(1)
        stop_sending.set()
        accepted = await asyncio.wait_for(sender, 15)
        for slug in slugs:  # the rooms are new: the sender's messages are all they hold
            expected[slug] = [message["id"] for message in await asyncio.to_thread(list_messages, cluster, slug, tokens[0])]
        for _ in range(40):  # up to 20 s for the last deliveries
            if all(set(expected[m.slug]) <= set(m.ids) for m in members):
                break
            await asyncio.sleep(0.5)
        stop_members.set()
        await asyncio.wait_for(asyncio.gather(*running), 10)
        return accepted

    accepted = asyncio.run(scenario())
    assert len(accepted) > 50, "the sender kept posting through the restarts"
    assert sorted(accepted) == sorted(i for ids in expected.values() for i in ids), "what was accepted is stored"
    for member in members:
        lost, doubled = set(expected[member.slug]) - set(member.ids), len(member.ids) - len(set(member.ids))
        assert not lost and not doubled, f"{member.slug}: lost {sorted(lost)}, {doubled} doubled"
    codes = [code for member in members for _, code, _ in member.closes]
    assert len(codes) >= 3 * SOCKETS_PER_WORKER, "every socket was drained at least once"
    assert set(codes) == {1012}, f"close codes seen: {sorted(set(map(str, codes)))}"
    for worker in range(3):
        moments = sorted(when for member in members for w, _, when in member.closes if w == worker)
        assert moments[-1] - moments[0] >= 0.4 * DRAIN_SECONDS, f"worker {worker}'s goodbyes came all at once"
    assert all(seconds < DRAIN_SECONDS + 5 for seconds in exits), exits
    waits = sorted(wait for member in members for wait in member.reconnects)
    print(
        f"\nrolling restart: exits {[round(e, 2) for e in exits]} s; reconnect p50 {statistics.median(waits):.3f} s,"
        f" p99 {waits[int(0.99 * (len(waits) - 1))]:.3f} s over {len(waits)} reconnects"
    )


@pytest.mark.parametrize("server", ["uvicorn", "daphne"])
def test_sigterm_spreads_the_goodbyes_and_exits_after_the_drain(redis_server: RedisServer, server: str) -> None:
    """One worker under each server: every socket closed with 1012, the closes spread over
    the drain, and the process gone soon after it."""
    seconds = 2.0
    cluster = Cluster(redis_server, workers=1, server=server, env={"DRAIN_SECONDS": str(seconds)})
    try:
        token = cluster.mint_tokens("drain-one")["drain-one"]
        slug = new_room(cluster, token)

        async def scenario() -> tuple[list[tuple[int | None, float]], float]:
            closes: list[tuple[int | None, float]] = []
            started = asyncio.Event()

            async def member() -> None:
                async with room_client(cluster.ws(0, f"/ws/rooms/{slug}/"), token) as client:
                    await client.sync()
                    await started.wait()
                    code = await client.close_code(timeout=seconds + 10)
                    closes.append((code, time.monotonic()))

            members = [asyncio.create_task(member()) for _ in range(15)]
            await asyncio.sleep(1.5)  # all synced
            process = cluster.processes[0]
            assert process is not None
            signalled = time.monotonic()
            process.terminate()
            started.set()
            await asyncio.wait_for(asyncio.gather(*members), seconds + 15)
            await asyncio.wait_for(asyncio.to_thread(process.wait), seconds + 10)
            return closes, signalled

        closes, signalled = asyncio.run(scenario())
        assert [code for code, _ in closes] == [1012] * 15
        moments = sorted(when - signalled for _, when in closes)
        assert moments[-1] - moments[0] >= 0.4 * seconds, f"the goodbyes came all at once: {moments}"
        assert moments[-1] <= seconds + 2
    finally:
        cluster.stop()
