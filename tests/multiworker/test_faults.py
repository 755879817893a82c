"""Faults under traffic: Redis restarted (with and without persistence) or stalled for
5 s, PostgreSQL restarted, a WebSocket client that stops reading.

Each fault gets clusters of its own (it would disturb the shared session fixtures).
Every test asserts that service comes back without restarting anything by hand, and
that nothing acknowledged was lost: a message echoed to its sender (or answered 201)
is in the history exactly once and reached every connected client exactly once. The
recovery time (fault end to the first full round trip: a message sent after the fault
echoed to its sender and delivered on the other worker) is printed; run with ``-s``
to see the figures (docs/reliability.md records them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.processes import Cluster, PostgresServer, RedisServer
from tests.support.rooms_api import list_messages, new_room
from tests.support.sse_parsing import parse_events

pytestmark = [pytest.mark.multiworker]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def report(fault: str, what: str, seconds: float) -> None:
    """One line per measured recovery, for docs/reliability.md (visible with -s)."""
    print(f"\nRECOVERY {fault}: {what} {seconds:.2f}s")


# ---- a room member that reads in the background --------------------------------------------------------
class Member:
    """A room socket whose frames are read (and pings answered) by a background task,
    so that several members can take part in traffic at once."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.messages: list[dict[str, Any]] = []
        self.arrived: dict[str, float] = {}  # nonce -> when its message frame arrived
        self.errors: list[dict[str, Any]] = []
        self.synced = asyncio.Event()
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for text in self.connection:
                frame = json.loads(text)
                kind = frame["type"]
                if kind == "message":
                    self.messages.append(frame)
                    if frame["nonce"]:
                        self.arrived[frame["nonce"]] = time.monotonic()
                elif kind == "synced":
                    self.synced.set()
                elif kind == "error":
                    self.errors.append(frame)
                elif kind == "ping":
                    await self.connection.send('{"type":"pong"}')
        except ConnectionClosed:
            pass
        finally:
            received = self.connection.protocol.close_rcvd
            self.close_code = received.code if received else None
            self.closed.set()

    async def say(self, content: str, nonce: str) -> None:
        await self.connection.send(json.dumps({"type": "message", "content": content, "nonce": nonce}))

    async def close(self) -> None:
        await self.connection.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.reader, 5)


@contextlib.asynccontextmanager
async def member(url: str, token: str) -> AsyncIterator[Member]:
    connection = await connect(url, additional_headers=auth(token), open_timeout=10, max_size=None)
    joined = Member(connection)
    try:
        await asyncio.wait_for(joined.synced.wait(), 10)
        yield joined
    finally:
        await joined.close()


async def until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class ChatTraffic:
    """A sender on worker 0 saying a numbered message every ``interval`` seconds, and
    readers on workers 0 and 1; tells how long after a fault chat worked end to end."""

    def __init__(self, cluster: Cluster, slug: str, sender: Member, readers: list[Member], interval: float = 0.05) -> None:
        self.cluster, self.slug, self.sender, self.readers, self.interval = cluster, slug, sender, readers, interval
        self.sent: dict[str, float] = {}  # nonce -> when it was sent
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        number = 0
        while True:
            number += 1
            nonce = f"n{number}"
            self.sent[nonce] = time.monotonic()
            await self.sender.say(f"traffic {number}", nonce)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def recovery_after(self, fault_end: float, timeout: float = 20) -> float:
        """Seconds from ``fault_end`` to the first message sent after it that reached its
        sender (the ack) and every reader."""

        def round_trip() -> float | None:
            done = [
                max(self.sender.arrived[n], *(r.arrived[n] for r in self.readers))
                for n, at in self.sent.items()
                if at >= fault_end and n in self.sender.arrived and all(n in r.arrived for r in self.readers)
            ]
            return min(done) - fault_end if done else None

        await until(lambda: round_trip() is not None, timeout, "a full round trip after the fault")
        seconds = round_trip()
        assert seconds is not None
        return seconds

    async def settle_and_check(self, token: str) -> list[dict[str, Any]]:
        """Stop sending, let everything arrive; check exactly once everywhere; the history."""
        await asyncio.sleep(0.5)  # some traffic in full service
        await self.stop()
        acked = lambda: set(self.sender.arrived)  # noqa: E731
        refused = {e["nonce"] for e in self.sender.errors}
        await until(lambda: acked() | refused >= set(self.sent), 20, "an answer (ack or error) to every message")
        history = list_messages_all(self.cluster, self.slug, token)
        await until(lambda: all(len(r.messages) >= len(history) for r in self.readers), 15, "every reader caught up")
        await asyncio.sleep(1.2)  # a duplicate would arrive now (the hub's gap check runs every second)
        history_nonces = [m["nonce"] for m in history]
        assert len(history_nonces) == len(set(history_nonces)), "no message stored twice"
        assert acked() <= set(history_nonces), f"acknowledged but lost: {sorted(acked() - set(history_nonces))}"
        assert not refused & set(history_nonces), "a message refused with an error was stored anyway"
        ids = [m["id"] for m in history]
        for client in (self.sender, *self.readers):
            assert [m["id"] for m in client.messages] == ids, "every client got every message exactly once, in order"
        return history


def list_messages_all(cluster: Cluster, slug: str, token: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        page = list_messages(cluster, slug, token, after=messages[-1]["id"] if messages else 0)
        if not page:
            return messages
        messages += page


# ---- token streams and tasks -------------------------------------------------------------------------
async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Events as they arrive, each with ``at``, when it arrived (time.monotonic())."""
    buffer = ""
    async for text in response.aiter_text():
        buffer += text
        *blocks, buffer = buffer.split("\n\n")
        for block in blocks:
            for event in parse_events(block + "\n\n"):
                if "event" in event:
                    event["at"] = time.monotonic()
                    yield event


class StreamReader:
    """Reads a token stream to its end, resuming with Last-Event-ID on the other worker
    whenever the connection breaks, as a browser's EventSource would."""

    def __init__(self, cluster: Cluster, token: str, *, max_tokens: int) -> None:
        self.cluster, self.token, self.max_tokens = cluster, token, max_tokens
        self.events: list[dict[str, Any]] = []
        self.resumes = 0
        self.stream_id = ""
        self.drop = asyncio.Event()  # set: drop the connection at the next event and resume elsewhere

    @property
    def tokens(self) -> list[int]:
        return [e["data"]["index"] for e in self.events if e["event"] == "token"]

    async def run(self, client: httpx.AsyncClient) -> None:
        request = client.build_request(
            "POST",
            f"{self.cluster.http(0)}/api/assistant/stream",
            json={"message": "one two three four five", "max_tokens": self.max_tokens},
            headers=auth(self.token),
        )
        response = await client.send(request, stream=True)
        assert response.status_code == 200, (await response.aread()).decode()
        self.stream_id = response.headers["X-Stream-Id"]
        worker = 0
        while True:
            try:
                async for event in sse_events(response):
                    self.events.append(event)
                    if event["event"] in ("done", "error"):
                        return
                    if self.drop.is_set():
                        self.drop.clear()
                        break
            except httpx.HTTPError:
                pass
            finally:
                await response.aclose()
            self.resumes += 1
            assert self.resumes <= 20, "the stream could not be resumed"
            await asyncio.sleep(0.2)
            worker = 1 - worker
            last = self.events[-1]["id"] if self.events else f"{self.stream_id}:-1"
            request = client.build_request(
                "GET",
                f"{self.cluster.http(worker)}/api/streams/{self.stream_id}/events",
                headers={**auth(self.token), "Last-Event-ID": last},
            )
            response = await client.send(request, stream=True)
            if response.status_code != 200:
                self.events.append({"event": f"http {response.status_code}", "data": (await response.aread()).decode()})
                await response.aclose()
                return


class TaskReader:
    """Creates a countdown task and reads its events to the end, resuming on errors."""

    def __init__(self, cluster: Cluster, token: str, *, steps: int, interval_ms: int) -> None:
        self.cluster, self.token, self.steps, self.interval_ms = cluster, token, steps, interval_ms
        self.events: list[dict[str, Any]] = []
        self.task_id = 0

    async def run(self, client: httpx.AsyncClient) -> None:
        created = await client.post(
            f"{self.cluster.http(0)}/api/tasks/",
            json={"kind": "countdown", "steps": self.steps, "interval_ms": self.interval_ms},
            headers=auth(self.token),
        )
        assert created.status_code == 202, created.text
        self.task_id = created.json()["id"]
        for attempt in range(20):
            headers = auth(self.token)
            if self.events:
                headers["Last-Event-ID"] = self.events[-1]["id"]
            try:
                async with client.stream(
                    "GET", f"{self.cluster.http(1)}/api/tasks/{self.task_id}/events", headers=headers
                ) as response:
                    async for event in sse_events(response):
                        self.events.append(event)
                        if event["event"] in ("complete", "failed"):
                            return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2 * (attempt + 1))
        raise AssertionError("the task's events could not be read to the end")


# ---- Redis faults ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_fault_cluster() -> Iterator[Cluster]:
    """Two workers and a task worker on their own Redis (AOF persistence switched per test)."""
    redis = RedisServer(persistent=True)
    started = Cluster(redis, workers=2, env={"LLM_TOKEN_DELAY_MS": "20"})
    started.tokens = started.mint_tokens("ann", "bob", "cid")
    started.start_taskworker()
    yield started
    started.stop()
    redis.stop()


def first_after(events: list[dict[str, Any]], moment: float) -> float:
    """Seconds from ``moment`` to the first event that arrived after it."""
    return min(e["at"] for e in events if e["at"] >= moment) - moment


@dataclass
class Room:
    """A new room with chat traffic running: ann sends on worker 0, bob reads on workers 0 and 1."""

    slug: str
    path: str
    client: httpx.AsyncClient
    sender: Member
    near: Member
    far: Member
    traffic: ChatTraffic


@contextlib.asynccontextmanager
async def room_under_traffic(cluster: Cluster) -> AsyncIterator[Room]:
    tokens = cluster.tokens
    slug = new_room(cluster, tokens["ann"])
    path = f"/ws/rooms/{slug}/"
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(20.0)) as client,
        member(cluster.ws(0, path), tokens["ann"]) as sender,
        member(cluster.ws(0, path), tokens["bob"]) as near,
        member(cluster.ws(1, path), tokens["bob"]) as far,
    ):
        traffic = ChatTraffic(cluster, slug, sender, [near, far])
        traffic.start()
        yield Room(slug, path, client, sender, near, far, traffic)


async def _redis_fault_under_traffic(cluster: Cluster, fault: str, inflict: Any) -> tuple[StreamReader, TaskReader]:
    tokens = cluster.tokens
    stream = StreamReader(cluster, tokens["cid"], max_tokens=200)  # 4 s at 20 ms a token
    task = TaskReader(cluster, tokens["cid"], steps=20, interval_ms=200)  # 4 s
    async with room_under_traffic(cluster) as room:
        client, traffic = room.client, room.traffic
        streaming = asyncio.get_running_loop().create_task(stream.run(client))
        tasking = asyncio.get_running_loop().create_task(task.run(client))
        await until(lambda: len(stream.tokens) >= 30 and len(task.events) >= 3, 15, "the stream and the task under way")
        fault_end = await asyncio.to_thread(inflict)
        stream.drop.set()  # and resume on the other worker, after the fault
        report(fault, "chat round trip", await traffic.recovery_after(fault_end))
        await asyncio.wait_for(asyncio.gather(streaming, tasking), 30)
        report(fault, "token stream, next event", first_after(stream.events, fault_end))
        report(fault, "task progress, next event", first_after(task.events, fault_end))
        history = await traffic.settle_and_check(tokens["ann"])
        assert len(history) > 40
    return stream, task


@pytest.mark.asyncio
async def test_redis_restart_with_persistence_loses_nothing(redis_fault_cluster: Cluster):
    cluster = redis_fault_cluster

    def restart() -> float:
        cluster.redis.persistent = True
        cluster.redis.restart()  # SIGTERM: Redis writes its AOF out; the streams' logs survive
        return time.monotonic()

    stream, task = await _redis_fault_under_traffic(cluster, "redis restart (AOF)", restart)
    assert stream.tokens == list(range(200)), "every token exactly once across reconnections"
    assert stream.events[-1]["event"] == "done" and stream.events[-1]["data"]["finish_reason"] == "length"
    assert task.events[-1]["event"] == "complete"
    ids = [int(e["id"]) for e in task.events]
    assert ids == list(range(1, len(ids) + 1))


@pytest.mark.asyncio
async def test_redis_restart_without_persistence(redis_fault_cluster: Cluster):
    cluster = redis_fault_cluster

    def restart() -> float:
        cluster.redis.persistent = False
        cluster.redis.restart()  # everything in Redis is gone: logs, presence, counters
        return time.monotonic()

    stream, task = await _redis_fault_under_traffic(cluster, "redis restart (no persistence)", restart)
    # The generation runs on; its log before the restart is gone, but readers that had
    # read it lose nothing, and the final event carries the whole reply.
    assert stream.tokens == list(range(200)), "every token exactly once across reconnections"
    assert stream.events[-1]["event"] == "done" and stream.events[-1]["data"]["finish_reason"] == "length"
    assert task.events[-1]["event"] == "complete", task.events[-3:]


@pytest.mark.asyncio
@pytest.mark.parametrize("seconds", [5, 8])  # 8: longer than a producer's heartbeat may be missing
async def test_redis_stalled(redis_fault_cluster: Cluster, seconds: int):
    cluster = redis_fault_cluster

    def stall() -> float:
        cluster.redis.pause()  # SIGSTOP: connections stay open, nothing answers
        time.sleep(seconds)
        cluster.redis.resume()
        return time.monotonic()

    stream, task = await _redis_fault_under_traffic(cluster, f"redis stall {seconds} s", stall)
    assert stream.tokens == list(range(200))
    assert task.events[-1]["event"] == "complete"


# ---- PostgreSQL restart ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_fault_cluster() -> Iterator[Cluster]:
    """Two workers on a PostgreSQL server of their own (it is restarted under them)."""
    postgres = PostgresServer()
    redis = RedisServer()
    started = Cluster(redis, workers=2, env={"DATABASE_URL": postgres.create_database("faults")})
    started.tokens = started.mint_tokens("ann", "bob")
    started.postgres = postgres  # type: ignore[attr-defined]
    yield started
    started.stop()
    redis.stop()
    postgres.stop()


async def handshake_close_code(url: str, token: str) -> int | None:
    """Open a room socket and read until the server closes it; its close code."""
    async with connect(url, additional_headers=auth(token), open_timeout=10) as connection:
        try:
            while True:
                await asyncio.wait_for(connection.recv(), 10)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


@pytest.mark.asyncio
async def test_postgres_restart_gives_clear_errors_then_full_service(pg_fault_cluster: Cluster):
    cluster = pg_fault_cluster
    postgres: PostgresServer = cluster.postgres  # type: ignore[attr-defined]
    tokens = cluster.tokens
    async with room_under_traffic(cluster) as room:
        slug, path, client, traffic = room.slug, room.path, room.client, room.traffic
        sender, near, far = room.sender, room.near, room.far
        await far.say("worker 1 before", "far-before")  # worker 1's writer opens its connection
        await until(lambda: len(far.messages) >= 10 and "far-before" in far.arrived, 10, "traffic under way")
        await asyncio.to_thread(postgres.shut_down)
        down_since = time.monotonic()
        # While it is down: messages are refused with an error naming the cause (no ack,
        # so the client knows to send again), sockets stay open, REST answers 503.
        await until(lambda: len(sender.errors) >= 3, 10, "errors for the messages sent while the database is down")
        assert {e["code"] for e in sender.errors} == {"unavailable"}, sender.errors
        assert all(e["nonce"] for e in sender.errors)
        refused = await client.post(
            f"{cluster.http(1)}/api/rooms/{slug}/messages", json={"content": "over REST"}, headers=auth(tokens["bob"])
        )
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "unavailable", refused.text
        assert refused.headers["Retry-After"] == "1"
        assert await handshake_close_code(cluster.ws(1, path), tokens["bob"]) == 4503, "new sockets: try again later"
        assert await handshake_close_code(cluster.ws(1, "/ws/assistant/"), tokens["bob"]) == 4503, "the assistant's too"
        health = await client.get(f"{cluster.http(0)}/healthz")
        assert (health.status_code, health.json()["db"]) == (503, "down")
        await asyncio.sleep(max(0.0, down_since + 2 - time.monotonic()))
        await asyncio.to_thread(postgres.start)
        fault_end = time.monotonic()
        report("postgres restart", "chat round trip", await traffic.recovery_after(fault_end))
        assert (sender.close_code, near.close_code, far.close_code) == (None, None, None), "no socket was closed"
        # Worker 1's writer sat idle through the outage; its first message after it goes through.
        await far.say("worker 1 after", "far-after")
        await until(lambda: "far-after" in far.arrived or far.errors, 10, "worker 1's message answered")
        assert not far.errors, far.errors
        history = await traffic.settle_and_check(tokens["ann"])
        assert sum(traffic.sent.get(m["nonce"], 0) > fault_end for m in history) >= 5, "chat goes on after the restart"
        posted = await client.post(
            f"{cluster.http(1)}/api/rooms/{slug}/messages", json={"content": "over REST"}, headers=auth(tokens["bob"])
        )
        assert posted.status_code == 201
        stream = StreamReader(cluster, tokens["bob"], max_tokens=5)
        await asyncio.wait_for(stream.run(client), 15)
        assert stream.tokens == list(range(5)), "token streams start again (the database thread reconnected)"


# ---- a client that stops reading -------------------------------------------------------------------
@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def slow_reader_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Two workers that cut off a room socket whose client has not read for 2 s (30 s by
    default; core/servers: SocketFlow under daphne, Outbox under uvicorn)."""
    redis = RedisServer()
    started = Cluster(redis, workers=2, env={"WS_SEND_TIMEOUT_SECONDS": "2"}, server=request.param)
    started.tokens = started.mint_tokens("ann", "bob", "sly")
    yield started
    started.stop()
    redis.stop()


def small_buffer_socket(port: int) -> socket.socket:
    """A connected TCP socket whose receive buffer stays small (set before connecting,
    so the kernel does not grow it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


@pytest.mark.asyncio
async def test_a_client_that_stops_reading_is_cut_off_without_holding_up_the_room(slow_reader_cluster: Cluster):
    cluster = slow_reader_cluster
    tokens = cluster.tokens
    slug = new_room(cluster, tokens["ann"])
    path = f"/ws/rooms/{slug}/"
    total, content = 400, "\U0001f600" * 3900  # 6 MB of frames or more for each reader: above what kernel buffers hold
    async with (
        member(cluster.ws(0, path), tokens["ann"]) as sender,
        member(cluster.ws(0, path), tokens["bob"]) as near,
        member(cluster.ws(1, path), tokens["bob"]) as far,
        # max_queue=1: the client library stops reading the socket after one frame; a small
        # receive buffer keeps the kernel from soaking up the burst on the client's side.
        connect(
            cluster.ws(0, path),
            additional_headers=auth(tokens["sly"]),
            max_queue=1,
            max_size=None,
            sock=small_buffer_socket(cluster.ports[0]),
            compression=None,  # uvicorn would deflate the repetitive burst to almost nothing
        ) as stalled,
    ):
        await asyncio.sleep(0.5)  # the stalled client has its hello, backlog and presence
        rss_before = cluster.rss_kib(0)
        started = time.monotonic()
        for number in range(total):
            await sender.say(f"{number} {content}", f"n{number}")
        await until(lambda: len(near.messages) == total and len(far.messages) == total, 30, "every reader got everything")
        delivered_in = time.monotonic() - started
        rss_after = cluster.rss_kib(0)
        print(
            f"\nSLOW READER: {total} messages to the other readers in {delivered_in:.2f}s; "
            f"worker RSS {rss_before} -> {rss_after} KiB"
        )

        # Its buffer has been full since early in the burst; past 2 s the next broadcast closes it.
        def cut_off() -> bool:
            metrics = httpx.get(f"{cluster.http(0)}/metrics", timeout=10).text
            return 'chat_websocket_closes_total{code="4008"} 1.0' in metrics

        deadline = time.monotonic() + 10
        while not await asyncio.to_thread(cut_off):
            assert time.monotonic() < deadline, "the stalled socket was not closed with 4008"
            await sender.say("tick", f"tick{time.monotonic()}")
            await asyncio.sleep(0.5)
        print(f"SLOW READER: cut off {time.monotonic() - started:.2f}s after the burst began")
        # The stalled client reads at last: some of the messages, then the end of the connection.
        seen: list[int] = []
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(10):
                async for text in stalled:
                    frame = json.loads(text)
                    if frame["type"] == "message":
                        seen.append(frame["id"])
        assert stalled.close_code in (4008, 1006), stalled.close_code
        # What was already on its way may still arrive (a client that resumes reading
        # before the close handshake times out drains the buffer): a prefix, in order.
        assert seen == sorted(set(seen))
    # It reconnects with last_id and gets exactly the rest.
    last_id = seen[-1] if seen else 0
    async with member(cluster.ws(1, f"{path}?last_id={last_id}"), tokens["sly"]) as back:
        history_ids = [m["id"] for m in list_messages_all(cluster, slug, tokens["ann"])]
        await until(lambda: len(back.messages) == len([i for i in history_ids if i > last_id]), 10, "the backfill")
        assert seen + [m["id"] for m in back.messages] == history_ids, "every message once, across the cut"
