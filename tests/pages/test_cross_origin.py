"""A front end on another origin calls /api/ and /v1/ with a bearer token, SSE included
(CORS_ALLOWED_ORIGINS, django-cors-headers), in Debian's Chromium; an origin not listed
is refused by the browser."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser, Page

from tests.support.browser import TIMEOUT_MS
from tests.support.processes import Cluster, RedisServer, free_port


@dataclass
class Origins:
    cluster: Cluster
    token: str
    allowed: str  # a front end's origin listed in CORS_ALLOWED_ORIGINS
    other: str  # an origin that is not


class _FrontEnd(http.server.BaseHTTPRequestHandler):
    """The separate front end: one empty page; the test runs its scripts in it."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>front end</title><p>front end</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def origins() -> Iterator[Origins]:
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _FrontEnd) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    allowed, other = (f"http://127.0.0.1:{server.server_address[1]}" for server in servers)
    redis = RedisServer()
    cluster = Cluster(redis, workers=1, env={"CORS_ALLOWED_ORIGINS": allowed})
    token = cluster.mint_tokens("frontend-user")["frontend-user"]
    yield Origins(cluster, token, allowed, other)
    cluster.stop()
    redis.stop()
    for server in servers:
        server.shutdown()
        server.server_close()


# Runs in the front end's page: every call the contract offers a script, from the browser.
SCRIPT = """
async ({api, token}) => {
  const auth = {Authorization: `Bearer ${token}`};
  const json = {...auth, "Content-Type": "application/json"};
  async function sse(response, stopAfterTokens) {
    // EventSource cannot send Authorization: a fetch body read as it arrives, as
    // front ends calling a bearer-token API do.
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let text = "";
    const events = [];
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      text += decoder.decode(value, {stream: true});
      const blocks = text.split("\\n\\n");
      text = blocks.pop();
      for (const block of blocks) {
        const event = {};
        for (const line of block.split("\\n")) {
          if (line.startsWith("id: ")) event.id = line.slice(4);
          if (line.startsWith("event: ")) event.event = line.slice(7);
          if (line.startsWith("data: ")) event.data = line.slice(6);
        }
        if (event.event || event.data) events.push(event);
      }
      const tokens = events.filter((e) => e.event === "token").length;
      if (events.some((e) => e.event === "done") || (stopAfterTokens && tokens >= stopAfterTokens)) {
        await reader.cancel();
        break;
      }
    }
    return events;
  }
  const slug = `cors-${Date.now()}`;
  const post = (path, body) => fetch(`${api}${path}`, {method: "POST", headers: json, body: JSON.stringify(body)});
  const created = await post("/api/rooms/", {slug, title: "From afar"});
  const posted = await post(`/api/rooms/${slug}/messages`, {content: "hello across origins"});
  const history = await (await fetch(`${api}/api/rooms/${slug}/messages?after=0`, {headers: auth})).json();
  const missing = await fetch(`${api}/api/rooms/no-such-room/messages`, {headers: auth});

  const started = await post("/api/assistant/stream", {message: "one two three", max_tokens: 9});
  const streamId = started.headers.get("X-Stream-Id");
  const first = await sse(started, 3);
  const lastId = first.filter((e) => e.event === "token").pop().id;
  const resumed = await fetch(`${api}/api/streams/${streamId}/events`, {headers: {...auth, "Last-Event-ID": lastId}});
  const rest = await sse(resumed, 0);

  const completion = await post("/v1/chat/completions", {
    model: "echo", stream: true, max_tokens: 2, messages: [{role: "user", content: "hi there"}],
  });
  const chunks = (await completion.text()).split("\\n\\n")
    .filter((b) => b.startsWith("data: {")).map((b) => JSON.parse(b.slice(6)));
  const completionText = chunks.map((c) => c.choices[0]?.delta?.content || "").join("");
  return {
    created: created.status,
    posted: posted.status,
    contents: history.messages.map((m) => m.content),
    missing: [missing.status, (await missing.json()).error !== undefined],
    streamId,
    firstTokens: first.filter((e) => e.event === "token").map((e) => JSON.parse(e.data).index),
    restTokens: rest.filter((e) => e.event === "token").map((e) => JSON.parse(e.data).index),
    restLast: rest[rest.length - 1].event,
    completion: [completion.status, completion.headers.get("X-Stream-Id") !== null, completionText],
  };
}
"""


def front_end_page(browser: Browser, origin: str) -> Page:
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(origin + "/")
    return page


def test_a_front_end_on_an_allowed_origin_uses_the_api_and_streams(origins: Origins, browser: Browser):
    page = front_end_page(browser, origins.allowed)
    try:
        result = page.evaluate(SCRIPT, {"api": origins.cluster.http(0), "token": origins.token})
    finally:
        page.close()
    assert result["created"] == 201 and result["posted"] == 201
    assert result["contents"] == ["hello across origins"]
    assert result["missing"] == [404, True], "errors are readable across origins too"
    assert result["streamId"], "X-Stream-Id is exposed to the page"
    assert result["firstTokens"] + result["restTokens"] == list(range(9)), "resumed with Last-Event-ID, nothing twice"
    assert result["restLast"] == "done"
    assert result["completion"] == [200, True, "hi there "]


def test_a_front_end_on_another_origin_is_refused_by_the_browser(origins: Origins, browser: Browser):
    page = front_end_page(browser, origins.other)
    try:
        outcome = page.evaluate(
            """async ({api, token}) => {
                 try {
                   await fetch(`${api}/api/rooms/`, {headers: {Authorization: `Bearer ${token}`}});
                   return "read";
                 } catch (error) {
                   return error.name;
                 }
               }""",
            {"api": origins.cluster.http(0), "token": origins.token},
        )
    finally:
        page.close()
    assert outcome == "TypeError", "no CORS headers for an origin not listed: the page cannot read the answer"
