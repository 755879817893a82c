"""Clients that hold connections without doing their part, against a real daphne worker:
half requests and half WebSocket handshakes (slowloris), and SSE readers that never read.

The worker runs with short bounds (HTTP_IDLE_TIMEOUT_SECONDS=2, HTTP_SEND_TIMEOUT_SECONDS=3)
so that the tests see them act; core/servers/daphne.py explains them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.processes import Cluster, RedisServer
from tests.support.rooms_api import new_room
from tests.support.wsclient import room_client

pytestmark = [pytest.mark.multiworker, pytest.mark.asyncio]

IDLE_TIMEOUT = 2.0
SEND_TIMEOUT = 3.0


def _slow_cluster(server: str) -> Iterator[Cluster]:
    redis = RedisServer()  # its own: the worker's token streams must not crowd the shared one
    started = Cluster(
        redis,
        workers=1,
        env={
            "HTTP_IDLE_TIMEOUT_SECONDS": str(IDLE_TIMEOUT),
            "HTTP_SEND_TIMEOUT_SECONDS": str(SEND_TIMEOUT),
            "LLM_TOKEN_DELAY_MS": "0",
            # The test's 20 MB stream: far past the log's default caps, on purpose.
            "LLM_MAX_REPLY_CHARS": str(64 * 1024 * 1024),
            "LLM_STREAM_MAX_CHARS": str(64 * 1024 * 1024),
            "LLM_STREAM_MAX_EVENTS": str(10**7),
        },
        server=server,
    )
    started.tokens = started.mint_tokens("sloth", "hare")
    yield started
    started.stop()
    redis.stop()


@pytest.fixture(scope="module")
def slow() -> Iterator[Cluster]:
    """One daphne worker with short idle and send time-outs and instant tokens."""
    yield from _slow_cluster("daphne")


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def slow_any_server(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The same under daphne (core/servers/daphne.py), then uvicorn (core/servers/asyncio_server.py)."""
    if request.param == "daphne":
        yield request.getfixturevalue("slow")
    else:
        yield from _slow_cluster("uvicorn")


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``sock`` within ``timeout``, reading (and dropping) what it sends."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


# ---- slowloris ---------------------------------------------------------------------------------
def half_requests(port: int, count: int) -> list[socket.socket]:
    """``count`` connections: a third send nothing, a third half a GET, a third half a
    WebSocket handshake; none ever finishes its request."""
    partial = [
        b"",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
        b"GET /ws/rooms/lobby/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    ]
    sockets = []
    for index in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(partial[index % 3])
        sockets.append(sock)
    return sockets


async def test_half_requests_are_closed_within_the_idle_timeout_while_others_are_served(slow: Cluster):
    token = slow.tokens["hare"]
    slug = new_room(slow, token)
    opened = time.monotonic()
    sockets = await asyncio.to_thread(half_requests, slow.ports[0], 60)
    try:
        # Meanwhile the worker serves everyone else: HTTP, and a room socket that chats.
        assert httpx.get(f"{slow.http()}/healthz", timeout=5).status_code == 200
        async with room_client(slow.ws(0, f"/ws/rooms/{slug}/"), token) as client:
            await client.sync()
            await client.say("served meanwhile", nonce="m")
            assert (await client.until("message", nonce="m"))["content"] == "served meanwhile"
        bound = IDLE_TIMEOUT + 3.0  # Twisted checks its time-outs with a timer: a little slack
        results = await asyncio.gather(*(asyncio.to_thread(closed_by_server, s, bound) for s in sockets))
        elapsed = time.monotonic() - opened
        assert all(results), f"{results.count(False)} of {len(sockets)} half requests still open after {elapsed:.1f} s"
        assert elapsed < bound + 2
    finally:
        for sock in sockets:
            sock.close()
    assert httpx.get(f"{slow.http()}/healthz", timeout=5).status_code == 200


# ---- unread SSE streams --------------------------------------------------------------------------
WORD = "w" * 100  # the echo model repeats the words of the message: a 100-byte token


def start_long_stream(cluster: Cluster, token: str) -> tuple[str, str]:
    """A token stream of 100,000 tokens as fast as the worker can (about 10 MB of token
    events, then the whole reply again in ``done``): (stream id, conversation id). The
    generation goes on without this request, which reads only its first event."""
    with httpx.stream(
        "POST",
        f"{cluster.http()}/api/assistant/stream",
        json={"message": WORD, "max_tokens": 100_000},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                return response.headers["X-Stream-Id"], json.loads(line.removeprefix("data: "))["conversation_id"]
    raise AssertionError("no start event")


def reply_length(cluster: Cluster, token: str, conversation_id: str) -> int:
    """The length of the stored reply (stored when the stream ends), waiting up to 20 s."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = httpx.get(
            f"{cluster.http()}/api/conversations/{conversation_id}", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert response.status_code == 200, response.text
        replies = [m for m in response.json()["messages"] if m["role"] == "assistant"]
        if replies:
            return len(replies[-1]["content"])
        time.sleep(0.2)
    raise AssertionError("the reply was not stored within 20 s")


def stalled_reader(port: int, token: str, stream_id: str) -> socket.socket:
    """A client with a 4 KiB receive buffer that asks for the stream and never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET /api/streams/{stream_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    return sock


def drain(sock: socket.socket) -> tuple[int, bool]:
    """Read what the server left for us, for at most 5 s: (bytes, whether it ended in a close or reset)."""
    sock.settimeout(1)
    total = 0
    deadline = time.monotonic() + 5
    try:
        while time.monotonic() < deadline and (chunk := sock.recv(65536)):
            total += len(chunk)
        return total, time.monotonic() < deadline
    except ConnectionResetError:
        return total, True
    except TimeoutError:
        return total, False


async def test_stalled_sse_readers_are_cut_off_and_do_not_grow_memory(slow_any_server: Cluster):
    slow = slow_any_server
    token = slow.tokens["sloth"]
    headers = {"Authorization": f"Bearer {token}"}
    stream_id, conversation_id = await asyncio.to_thread(start_long_stream, slow, token)
    readers = 8
    before = slow.rss_kib()
    sockets = [stalled_reader(slow.ports[0], token, stream_id) for _ in range(readers)]
    try:
        peak = before
        deadline = time.monotonic() + 10  # the send time-out, then time for an unbounded worker to buffer it all
        while time.monotonic() < deadline:  # the stall: the readers read nothing, the stream runs to its end
            peak = max(peak, slow.rss_kib())
            await asyncio.sleep(0.1)
        held = slow.rss_kib()
        # The worker serves the others meanwhile.
        assert httpx.get(f"{slow.http()}/healthz", timeout=5).status_code == 200
        results = await asyncio.gather(*(asyncio.to_thread(drain, s) for s in sockets))
    finally:
        for sock in sockets:
            sock.close()
        httpx.post(f"{slow.http()}/api/streams/{stream_id}/cancel", headers=headers, timeout=10)
    produced = 2 * await asyncio.to_thread(reply_length, slow, token, conversation_id)  # tokens, then ``done``
    assert produced > 8 * 1024 * 1024, f"the stream produced only {produced} bytes: the test would prove nothing"
    for received, closed in results:
        assert closed, "the server cut the stalled reader off"
        # What reached the client is what the kernel buffers held, a small part of the
        # stream: the server stopped producing for it when it stopped reading.
        assert received < produced / 4, f"{received} of {produced} bytes went to a client that read nothing"
    growth_mib = (held - before) / 1024
    # Measured on a 2-core machine: +54 MiB held (the generation's own share included) with
    # the bound; without it each reader keeps the whole stream buffered, +144 MiB, for as
    # long as the client stays connected (docs/protocol.md, "Slow and stalled clients").
    assert growth_mib < 100, f"the worker holds {growth_mib:.1f} MiB more after {readers} stalled readers"
    print(
        f"\nstalled SSE: RSS {before / 1024:.1f} MiB, peak {peak / 1024:.1f}, held {held / 1024:.1f} MiB; stream {produced} bytes"
    )
