"""`make serve`: several daphne workers behind one port (supervisor, daphne --fd 0)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.processes import PYTHON, ROOT, Cluster, RedisServer, free_port, wait_for_port
from tests.support.wsclient import room_client

pytestmark = [pytest.mark.multiworker, pytest.mark.asyncio]


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def served(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[tuple[int, dict[str, str]]]:
    database = Cluster(redis_server, workers=0)  # a migrated database, no workers of its own
    tokens = database.mint_tokens("sam", "sue")  # a fresh database per server
    port = free_port()
    process = subprocess.Popen(
        [PYTHON, "deploy/serve.py", "--workers", "2", "--port", str(port), "--server", request.param],
        cwd=ROOT,
        env=database.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, process)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(worker_pids(port)) < 2:
            time.sleep(0.2)
        yield port, tokens
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        database.stop()


def worker_pids(port: int) -> set[int]:
    """PIDs of the daphne processes serving through supervisor's socket."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return {int(line.split()[0]) for line in out.splitlines() if "--fd 0" in line and "config.asgi" in line}


async def test_two_workers_share_one_port_and_rooms(served):
    port, tokens = served
    base = f"http://127.0.0.1:{port}"
    assert len(worker_pids(port)) >= 2, "supervisor started two web workers"
    processes = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert "manage.py taskworker" in processes, "and the task worker"
    assert httpx.get(f"{base}/healthz", timeout=10).json() == {"status": "ok", "db": "ok", "redis": "ok"}
    headers = {"Authorization": f"Bearer {tokens['sam']}"}
    assert (
        httpx.post(f"{base}/api/rooms/", json={"slug": "served", "title": "Served"}, headers=headers, timeout=10).status_code
        == 201
    )
    url = f"ws://127.0.0.1:{port}/ws/rooms/served/"
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(room_client(url, tokens["sam" if i % 2 else "sue"])) for i in range(6)]
        for client in clients:
            await client.sync()
        await clients[0].say("to every worker")
        for client in clients:
            frame = await client.until("message")
            assert frame["content"] == "to every worker"


def _messages_created(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("chat_messages_created_total "):
            return float(line.split()[1])
    return 0.0


async def test_metrics_count_every_worker_whichever_one_a_scrape_reaches(served):
    port, tokens = served
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=10) as http:
        headers = {"Authorization": f"Bearer {tokens['sue']}"}
        created = await http.post(f"{base}/api/rooms/", json={"slug": "metered", "title": "Metered"}, headers=headers)
        assert created.status_code in (201, 409), created.text
        before = _messages_created((await http.get(f"{base}/metrics")).text)
        for number in range(20):  # new connections: the workers take turns accepting them
            async with httpx.AsyncClient(timeout=10) as one_off:
                posted = await one_off.post(f"{base}/api/rooms/metered/messages", json={"content": f"m{number}"}, headers=headers)
                assert posted.status_code == 201, posted.text
        scrapes = []
        for _ in range(10):
            async with httpx.AsyncClient(timeout=10) as one_off:
                scrapes.append(_messages_created((await one_off.get(f"{base}/metrics")).text) - before)
    assert scrapes == [20.0] * 10, f"every scrape counts all workers' messages: {scrapes}"
