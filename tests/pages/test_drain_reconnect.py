"""A rolling restart as the room page sees it (issue 20, "Graceful drain"): two daphne workers
behind nginx, the page's socket on worker A, A gets SIGTERM and drains (close 1012 spread over
DRAIN_SECONDS). The page must reconnect through nginx to worker B without ever showing an
error, be live again within a bounded time, and show a message posted after the drain once.

The assistant page has no socket (it reads a fetch() stream, resumed on its own), so only the
room page is driven here. Every wait is bounded; the cluster and nginx are stopped at the end."""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.support.browser import DESKTOP, PASSWORD, TIMEOUT_MS, log_in
from tests.support.processes import Cluster, NginxServer, RedisServer, free_port

pytestmark = pytest.mark.multiworker

DRAIN_SECONDS = 2
RECONNECT_BOUND_S = DRAIN_SECONDS + 5.0  # the drain's spread, then a jittered (<= 250 ms) reconnect
USERS = ("drain-alice", "drain-bob")


@dataclass
class Proxied:
    cluster: Cluster
    nginx: NginxServer
    tokens: dict[str, str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.nginx.port}"


def nginx_site(port: int, primary: int, backup: int) -> str:
    """Both workers upstream; B is nginx's `backup`, so that the page lands on A (the worker this
    test drains) and reaches B only once A stops accepting: deterministic, unlike round-robin."""
    return f"""
upstream drain_web {{
    server 127.0.0.1:{primary};
    server 127.0.0.1:{backup} backup;
}}
map $http_upgrade $drain_connection_upgrade {{
    default upgrade;
    ''      close;
}}
server {{
    listen 127.0.0.1:{port};
    location / {{
        proxy_pass http://drain_web;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $drain_connection_upgrade;
        proxy_set_header Host $http_host;
        proxy_read_timeout 3600s;
        proxy_buffering off;
        proxy_connect_timeout 2s;
    }}
}}
"""


@pytest.fixture
def proxied() -> Iterator[Proxied]:
    with contextlib.ExitStack() as stack:
        redis = RedisServer()
        stack.callback(redis.stop)
        cluster = Cluster(redis, workers=2, env={"DRAIN_SECONDS": str(DRAIN_SECONDS)})
        stack.callback(cluster.stop)
        code = (
            "import json\n"
            "from django.contrib.auth.models import User\n"
            "from accounts.services import token_create\n"
            f"names, password = {list(USERS)!r}, {PASSWORD!r}\n"
            "tokens = {}\n"
            "for name in names:\n"
            "    user = User.objects.create_user(name, password=password)\n"
            "    tokens[name] = token_create(user=user)[1]\n"
            "print(json.dumps(tokens))"
        )
        tokens = json.loads(cluster.manage("shell", "-c", code).strip().splitlines()[-1])
        port = free_port()
        nginx = NginxServer(nginx_site(port, cluster.ports[0], cluster.ports[1]), port=port)
        stack.callback(nginx.stop)
        yield Proxied(cluster=cluster, nginx=nginx, tokens=tokens)


# Records every change of the connection state and every text the error box shows, with
# performance.now() times, from a MutationObserver (nothing between two polls is missed).
OBSERVE = """() => {
  window.__drain = { states: [], errors: [] };
  const state = document.getElementById("state");
  const error = document.getElementById("error");
  const note = () => {
    const s = state.dataset.state, list = window.__drain.states;
    if (!list.length || list[list.length - 1].state !== s) list.push({ state: s, text: state.textContent, t: performance.now() });
    if (error.textContent.trim()) window.__drain.errors.push(error.textContent.trim());
  };
  new MutationObserver(note).observe(state, { attributes: true, childList: true, characterData: true, subtree: true });
  new MutationObserver(note).observe(error, { attributes: true, childList: true, characterData: true, subtree: true });
  note();
}"""


def test_room_page_rides_out_a_drain_without_an_error(proxied: Proxied, browser: Browser):
    cluster = proxied.cluster
    api = httpx.Client(base_url=cluster.http(1), timeout=10)
    slug = f"drain-{secrets.token_hex(3)}"
    alice = {"Authorization": f"Bearer {proxied.tokens['drain-alice']}"}
    bob = {"Authorization": f"Bearer {proxied.tokens['drain-bob']}"}
    assert api.post("/api/rooms/", headers=alice, json={"slug": slug, "title": "Drain"}).status_code == 201

    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        log_in(page, f"{proxied.base}/accounts/login/", "drain-alice")
        page.goto(f"{proxied.base}/rooms/{slug}/")
        state = page.locator("#state")
        error = page.locator("#error")
        expect(state).to_have_attribute("data-state", "live")
        before = api.post(f"/api/rooms/{slug}/messages", headers=bob, json={"content": "before the drain"})
        assert before.status_code == 201, before.text
        expect(page.locator("#messages li.message .content", has_text="before the drain")).to_have_count(1)
        page.evaluate(OBSERVE)

        worker_a = cluster.processes[0]
        assert worker_a is not None
        signalled = time.monotonic()
        worker_a.send_signal(signal.SIGTERM)
        # Poll the page through the whole drain (and a second after A is gone): never an error.
        seen_states: list[str] = []
        exited_at: float | None = None
        while time.monotonic() - signalled < DRAIN_SECONDS + 8:
            if exited_at is None and worker_a.poll() is not None:
                exited_at = time.monotonic()
            if exited_at is not None and time.monotonic() - exited_at > 1.0:
                break
            current = state.get_attribute("data-state") or ""
            if not seen_states or seen_states[-1] != current:
                seen_states.append(current)
            text = error.text_content() or ""
            assert not text.strip(), f"the page showed an error during the drain: {text!r}"
            assert "Not connected" not in (page.locator("body").text_content() or "")
            time.sleep(0.05)
        assert exited_at is not None, "worker A did not exit within the drain"
        cluster.processes[0] = None

        expect(state).to_have_attribute("data-state", "live", timeout=int(RECONNECT_BOUND_S * 1000))
        record = page.evaluate("() => window.__drain")
        assert not record["errors"], f"the page showed an error: {record['errors']}"
        states = [entry["state"] for entry in record["states"]]
        assert "waiting" not in states and "closed" not in states, record["states"]
        assert states[0] == "live" and states[-1] == "live" and len(states) >= 3, record["states"]
        left = next(entry["t"] for entry in record["states"] if entry["state"] != "live")
        back = record["states"][-1]["t"]
        reconnect_ms = back - left
        print(f"\nreconnect after a 1012 drain: {reconnect_ms:.0f} ms (states {states}, polled {seen_states})")
        assert reconnect_ms < RECONNECT_BOUND_S * 1000

        after = api.post(f"/api/rooms/{slug}/messages", headers=bob, json={"content": "after the drain"})
        assert after.status_code == 201, after.text
        expect(page.locator("#messages li.message .content", has_text="after the drain")).to_have_count(1)
        time.sleep(1.0)  # a duplicate would come from a replay on the new socket: give it time
        expect(page.locator("#messages li.message .content", has_text="after the drain")).to_have_count(1)
        expect(page.locator("#messages li.message .content", has_text="before the drain")).to_have_count(1)
        expect(error).to_have_text("")
    finally:
        context.close()
        api.close()
    # nginx logs a socket when it ends: the first went to A (drained), the second to B.
    upstreams: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        upstreams = [line.rsplit("upstream=", 1)[-1] for line in proxied.nginx.access_entries() if f"/ws/rooms/{slug}/" in line]
        if len(upstreams) >= 2:
            break
        time.sleep(0.1)
    assert upstreams[:1] == [f"127.0.0.1:{cluster.ports[0]}"], upstreams
    assert upstreams[-1].endswith(f"127.0.0.1:{cluster.ports[1]}"), upstreams
