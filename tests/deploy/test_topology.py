"""docker-compose.yml's topology, natively: PostgreSQL and nginx from Debian's packages,
a private Redis, three daphne workers behind the project's own nginx configuration
(deploy/nginx.conf.template) and the task worker. Everything goes through nginx's one
port, so nothing here may rely on reaching a particular worker: no sticky sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.processes import (
    PYTHON,
    ROOT,
    Cluster,
    NginxServer,
    PostgresServer,
    RedisServer,
    free_port,
    render_nginx_site,
)
from tests.support.sse_parsing import parse_events
from tests.support.wsclient import room_client

pytestmark = pytest.mark.multiworker

# Slow enough that a stream is still being generated while the first tokens are read.
TOKEN_DELAY_MS = 40
FORGED = "203.0.113.77"  # a documentation address (RFC 5737), as a client would forge it


@dataclass
class Topology:
    cluster: Cluster
    nginx: NginxServer
    static_root: Path
    tokens: dict[str, str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.nginx.port}"

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.nginx.port}{path}"

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def workers_logging(self, needle: str) -> set[int]:
        """The workers whose access log has a line containing ``needle``."""
        return {i for i in range(len(self.cluster.ports)) if any(needle in line for line in self.cluster.access_entries(i))}

    def upstreams_of(self, request: str) -> set[int]:
        """The workers nginx passed requests containing ``request`` to (its access log)."""
        ports = {f"upstream=127.0.0.1:{port}": index for index, port in enumerate(self.cluster.ports)}
        return {
            index
            for line in self.nginx.access_entries()
            if request in line
            for upstream, index in ports.items()
            if line.endswith(upstream)
        }

    def logs(self) -> str:
        return f"{self.cluster.logs()}\n{self.nginx.logs()}"


def collect_static(env: dict[str, str], target: Path) -> None:
    """collectstatic into ``target`` (what the Dockerfile does into STATIC_ROOT)."""
    code = (
        "import sys, django\n"
        "from django.conf import settings\n"
        "django.setup()\n"
        "settings.STATIC_ROOT = sys.argv[1]\n"
        "from django.core.management import call_command\n"
        "call_command('collectstatic', interactive=False, verbosity=0)\n"
    )
    subprocess.run([PYTHON, "-c", code, str(target)], cwd=ROOT, env=env, check=True, timeout=120, capture_output=True)


@pytest.fixture(scope="module")
def topology(postgres_server: PostgresServer) -> Iterator[Topology]:
    with contextlib.ExitStack() as stack:
        redis = RedisServer(persistent=True)  # compose runs Redis with AOF
        stack.callback(redis.stop)
        cluster = Cluster(
            redis,
            workers=3,
            env={"DATABASE_URL": postgres_server.create_database("topology"), "LLM_TOKEN_DELAY_MS": str(TOKEN_DELAY_MS)},
            proxy_headers=True,  # as the Dockerfile starts daphne
            access_log=True,
        )
        stack.callback(cluster.stop)
        cluster.start_taskworker()
        static_root = Path(tempfile.mkdtemp(prefix="test-static-"))
        stack.callback(shutil.rmtree, static_root, ignore_errors=True)
        static_root.chmod(0o755)  # nginx's workers run unprivileged
        collect_static(cluster.env, static_root)
        port = free_port()
        site = render_nginx_site(
            {
                "NGINX_LISTEN": f"127.0.0.1:{port}",
                "NGINX_UPSTREAM_SERVERS": " ".join(f"server 127.0.0.1:{p};" for p in cluster.ports),
                "NGINX_STATIC_ROOT": str(static_root),
            }
        )
        nginx = NginxServer(site, port=port)
        stack.callback(nginx.stop)
        tokens = cluster.mint_tokens("ann", "bob", "cy", "dee")
        yield Topology(cluster=cluster, nginx=nginx, static_root=static_root, tokens=tokens)


def test_the_stack_is_postgresql_redis_and_three_workers_behind_nginx(topology: Topology):
    health = httpx.get(f"{topology.base}/healthz", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok", "db": "ok", "redis": "ok"}
    vendor = topology.cluster.manage("shell", "-c", "from django.db import connection; print(connection.vendor)")
    assert vendor.strip().splitlines()[-1] == "postgresql"
    assert all(process is not None and process.poll() is None for process in topology.cluster.processes)
    assert topology.cluster.taskworkers and topology.cluster.taskworkers[0].poll() is None, "the task worker runs"
    # Round-robin: six requests in a row are answered by all three workers, two each.
    marker = f"/healthz?round={time.monotonic_ns()}"
    for _ in range(6):
        assert httpx.get(f"{topology.base}{marker}", timeout=10).status_code == 200
    counts = [sum(marker in line for line in topology.cluster.access_entries(i)) for i in range(3)]
    assert all(count >= 2 for count in counts), f"requests per worker: {counts}"


@pytest.mark.asyncio
async def test_chat_crosses_workers_through_one_port(topology: Topology):
    created = httpx.post(
        f"{topology.base}/api/rooms/", json={"slug": "topo", "title": "Topo"}, headers=topology.auth("ann"), timeout=10
    )
    assert created.status_code == 201, created.text
    path = "/ws/rooms/topo/"
    users = ["ann", "bob", "cy", "dee", "bob", "cy"]
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(room_client(topology.ws(path), topology.tokens[user])) for user in users]
        for client in clients:
            await client.sync()
        # Six sockets through one port landed on every worker: the room spans them all.
        assert topology.workers_logging(f"WSCONNECT {path}") == {0, 1, 2}
        for i in range(10):
            await clients[i % 3].say(f"hello {i}", nonce=f"n{i}")
        for client in clients:
            await client.wait_messages(10)
        for client in clients:
            await client.quiet(0.5)
        # Three senders on three workers: the room's order is the commit order, the same everywhere.
        order = [m["content"] for m in clients[0].messages]
        assert sorted(order) == sorted(f"hello {i}" for i in range(10))
        for client in clients:
            assert [m["content"] for m in client.messages] == order, "each message exactly once, in one order, everywhere"
            assert [m["id"] for m in client.messages] == sorted(m["id"] for m in client.messages)
        last_id = clients[0].messages[4]["id"]
    # Reconnecting through the proxy (to whichever worker) resumes after last_id.
    async with room_client(topology.ws(f"{path}?last_id={last_id}"), topology.tokens["dee"]) as back:
        await back.sync()
        assert [m["content"] for m in back.messages] == order[5:]


class EventReader:
    """Reads SSE events from a streaming response, noting when each arrived."""

    def __init__(self, response: httpx.Response) -> None:
        self.texts = response.iter_text()
        self.buffer = ""
        self.events: list[dict] = []
        self.arrivals: list[float] = []

    def read(self, *, until, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        for text in self.texts:
            self.buffer += text
            *blocks, self.buffer = self.buffer.split("\n\n")
            for block in blocks:
                for event in parse_events(block + "\n\n"):
                    self.events.append(event)
                    self.arrivals.append(time.monotonic())
            if until(self.events):
                return self.events
            assert time.monotonic() < deadline, f"no end after {timeout}s; got {self.events[-3:]}"
        return self.events


def tokens_of(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("event") == "token"]


def test_a_token_stream_passes_unbuffered_and_resumes_on_another_worker(topology: Topology):
    total = 75  # at TOKEN_DELAY_MS each: three seconds of generation
    with httpx.Client(timeout=20) as client:
        started = time.monotonic()
        with client.stream(
            "POST",
            f"{topology.base}/api/assistant/stream",
            json={"message": "alpha beta gamma", "max_tokens": total},
            headers=topology.auth("ann"),
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            stream_id = response.headers["X-Stream-Id"]
            reader = EventReader(response)
            first = reader.read(until=lambda events: len(tokens_of(events)) >= 5, timeout=15)
        # Dropped after five tokens. They came as they were generated, not in one
        # buffer-full at the end: the fifth long before the whole stream could be done.
        fifth_at = reader.arrivals[first.index(tokens_of(first)[4])] - started
        assert fifth_at < total * TOKEN_DELAY_MS / 1000 * 0.6, f"the fifth token came after {fifth_at:.2f}s"
        assert not any(e.get("event") == "done" for e in first)
    seen = [e["data"]["index"] for e in tokens_of(first)]
    last_id = tokens_of(first)[-1]["id"]
    with httpx.stream(
        "GET",
        f"{topology.base}/api/streams/{stream_id}/events",
        headers={**topology.auth("ann"), "Last-Event-ID": last_id},
        timeout=20,
    ) as resumed:
        assert resumed.status_code == 200
        rest = EventReader(resumed).read(
            until=lambda events: any(e.get("event") in ("done", "error") for e in events), timeout=15
        )
    assert seen + [e["data"]["index"] for e in tokens_of(rest)] == list(range(total)), "exactly the remaining tokens"
    assert rest[-1]["event"] == "done" and rest[-1]["data"]["finish_reason"] == "length"
    # Round-robin sent the resumption to another worker than the one producing the stream.
    # nginx writes a request's log line when it has finished with it, which may come a
    # moment after the client has read the last event and gone: wait for it, bounded.
    deadline = time.monotonic() + 10
    while not (resumer := topology.upstreams_of(f"GET /api/streams/{stream_id}/events")) and time.monotonic() < deadline:
        time.sleep(0.1)
    producer = topology.upstreams_of("POST /api/assistant/stream")
    assert len(producer) == len(resumer) == 1 and producer != resumer, (producer, resumer)


def test_a_task_runs_on_the_task_worker_and_its_events_pass_the_proxy(topology: Topology):
    created = httpx.post(
        f"{topology.base}/api/tasks/",
        json={"kind": "countdown", "steps": 5, "interval_ms": 100},
        headers=topology.auth("bob"),
        timeout=10,
    )
    assert created.status_code == 202, created.text
    task_id = created.json()["id"]
    with httpx.stream("GET", f"{topology.base}/api/tasks/{task_id}/events", headers=topology.auth("bob"), timeout=20) as response:
        assert response.status_code == 200
        events = EventReader(response).read(
            until=lambda events: any(e.get("event") in ("complete", "failed") for e in events), timeout=20
        )
    named = [e for e in events if "event" in e]
    assert named[-1]["event"] == "complete", named[-1]
    assert named[-1]["data"] == {"status": "succeeded", "result": {"steps": 5}}
    assert [int(e["id"]) for e in named] == list(range(1, len(named) + 1)), "every event once, in order"
    state = httpx.get(f"{topology.base}/api/tasks/{task_id}", headers=topology.auth("bob"), timeout=10).json()
    assert (state["status"], state["progress"]) == ("succeeded", 100)


def test_static_files_come_from_nginx_not_from_a_worker(topology: Topology):
    collected = next(topology.static_root.glob("web/*.css"))
    url_path = f"/static/{collected.relative_to(topology.static_root)}"
    response = httpx.get(f"{topology.base}{url_path}", timeout=10)
    assert response.status_code == 200
    assert response.content == collected.read_bytes()
    assert response.headers["content-type"].startswith("text/css")
    assert not topology.workers_logging(url_path), "nginx served it itself"
    manifest = httpx.get(f"{topology.base}/static/web/manifest.webmanifest", timeout=10)
    assert manifest.status_code == 200
    assert manifest.headers["content-type"] == "application/manifest+json"
    assert manifest.json()["start_url"] == "/"


def test_a_client_supplied_x_forwarded_for_never_reaches_the_workers(topology: Topology):
    """daphne --proxy-headers takes the leftmost X-Forwarded-For as the client's address;
    nginx replaces whatever the client sent with the address it really came from."""
    probe = f"/healthz?probe={time.monotonic_ns()}"
    # Control: straight to a worker, the forged address is what daphne records as the client.
    assert (
        httpx.get(f"{topology.cluster.http(0)}{probe}-direct", headers={"X-Forwarded-For": FORGED}, timeout=10).status_code == 200
    )
    direct = [line for line in topology.cluster.access_entries(0) if f"{probe}-direct" in line]
    assert direct and FORGED in direct[0], direct
    # Through nginx, alone or in front of a chain, it never arrives.
    for forged in (FORGED, f"{FORGED}, 10.0.0.1"):
        assert httpx.get(f"{topology.base}{probe}", headers={"X-Forwarded-For": forged}, timeout=10).status_code == 200
    lines = [line for i in range(3) for line in topology.cluster.access_entries(i) if probe in line and "direct" not in line]
    assert len(lines) == 2, lines
    for line in lines:
        assert FORGED not in line and line.startswith("127.0.0.1"), line


@pytest.mark.asyncio
async def test_a_forged_address_on_a_websocket_handshake_is_replaced_too(topology: Topology):
    path = "/ws/rooms/topo-forged/"
    created = httpx.post(
        f"{topology.base}/api/rooms/", json={"slug": "topo-forged", "title": "F"}, headers=topology.auth("cy"), timeout=10
    )
    assert created.status_code == 201, created.text
    from websockets.asyncio.client import connect

    async with connect(
        topology.ws(path), additional_headers={**topology.auth("cy"), "X-Forwarded-For": FORGED}, open_timeout=10
    ) as connection:
        hello = json.loads(await asyncio.wait_for(connection.recv(), 10))
        assert hello["type"] == "hello"
    lines = [line for i in range(3) for line in topology.cluster.access_entries(i) if f"WSCONNECT {path}" in line]
    assert lines and all(FORGED not in line and line.startswith("127.0.0.1") for line in lines), lines


def test_a_session_login_form_posts_through_the_proxy(topology: Topology):
    """nginx passes the Host as the client sent it, port included: Django's CSRF check
    compares it with the browser's Origin (which has the port)."""
    topology.cluster.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; User.objects.create_user('walker', password='a-long-walk-9876')",
    )
    with httpx.Client(base_url=topology.base, timeout=10) as browser:
        form = browser.get("/accounts/login/")
        assert form.status_code == 200
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token is not None
        response = browser.post(
            "/accounts/login/",
            data={"username": "walker", "password": "a-long-walk-9876", "csrfmiddlewaretoken": token.group(1)},
            headers={"Origin": topology.base, "Referer": f"{topology.base}/accounts/login/"},
        )
        assert response.status_code == 302, response.text[:500]
        assert "sessionid" in browser.cookies


@pytest.mark.asyncio
async def test_a_session_socket_through_the_proxy_needs_the_pages_own_origin(topology: Topology):
    """nginx passes the Host with its port, so the WebSocket Origin check (docs/protocol.md, "Authentication and the handshake")
    recognises the page's own origin behind the proxy, and still refuses another port or
    scheme of the same host riding the same session cookie."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    topology.cluster.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; User.objects.create_user('rider', password='a-long-ride-9876')",
    )
    async with httpx.AsyncClient(base_url=topology.base, timeout=10) as browser:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', (await browser.get("/accounts/login/")).text)
        assert token is not None
        logged_in = await browser.post(
            "/accounts/login/",
            data={"username": "rider", "password": "a-long-ride-9876", "csrfmiddlewaretoken": token.group(1)},
            headers={"Origin": topology.base, "Referer": f"{topology.base}/accounts/login/"},
        )
        assert logged_in.status_code == 302, logged_in.text[:500]
        cookie = {"Cookie": f"sessionid={browser.cookies['sessionid']}"}
    created = httpx.post(
        f"{topology.base}/api/rooms/", json={"slug": "topo-origin", "title": "O"}, headers=topology.auth("ann"), timeout=10
    )
    assert created.status_code == 201, created.text
    url = topology.ws("/ws/rooms/topo-origin/")
    async with connect(url, additional_headers=cookie, origin=topology.base, open_timeout=10) as connection:  # type: ignore[arg-type]
        hello = json.loads(await asyncio.wait_for(connection.recv(), 10))
        assert hello["type"] == "hello" and hello["user"] == "rider"
    for other in (f"http://127.0.0.1:{free_port()}", f"https://127.0.0.1:{topology.nginx.port}"):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, additional_headers=cookie, origin=other, open_timeout=10):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403, other
