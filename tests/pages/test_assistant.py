"""/assistant/ in a real browser: a reply streams in token by token, Stop stops it (also after
a reload), a dropped stream resumes where it stopped, and past conversations are in the
sidebar; issue 18's list: replies as sanitised Markdown (marked + DOMPurify, vendored), a
collapsible "Thinking" section and one line per tool call from the stream's typed events, a
model picker filled from GET /v1/models, Copy and Regenerate.

The cluster's model is the echo backend: the reply is the words of the message, one per token,
20 ms apart, repeated until max_tokens. So it has no line breaks (no fenced code block) and no
reasoning: where a test needs those, it answers POST /api/assistant/stream itself with a stream
in the shape docs/protocol.md ("Token streams", "Events") gives, and says so; the tool-call
test also reads a real stream of the server's own `tool_call` events (the echo model's
`call <name>`)."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, Request, Route, expect

from tests.support.browser import Site, screenshot, watch_dialogs
from tests.support.processes import ROOT

pytestmark = pytest.mark.multiworker


def open_assistant(site: Site, user: str, worker: int = 0) -> Page:
    page = site.context(user, worker=worker).new_page()
    page.goto(site.url("/assistant/", worker))
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")
    return page


def ask(page: Page, message: str, max_tokens: int | None = None) -> None:
    if max_tokens is not None:
        page.get_by_text("Options").click()
        page.get_by_label("Max tokens").fill(str(max_tokens))
    box = page.get_by_role("textbox", name="Message")
    box.fill(message)
    box.press("Enter")


def reply_words(page: Page) -> list[str]:
    return page.locator("#transcript li.assistant .content").last.inner_text().split()


def wait_for_words(page: Page, count: int, timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        words = reply_words(page)
        if len(words) >= count:
            return words
        page.wait_for_timeout(50)
    raise AssertionError(f"fewer than {count} words after {timeout}s: {reply_words(page)}")


def watch_csp_violations(page: Page) -> list[str]:
    """Console errors the Content-Security-Policy reports (none: the page complies)."""
    seen: list[str] = []

    def record(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            seen.append(message.text)

    page.on("console", record)
    return seen


def test_a_reply_streams_in_and_the_conversation_is_in_the_sidebar(site: Site):
    page = open_assistant(site, "pages-carol")
    dialogs = watch_dialogs(page)
    message = "Hello there! Can you stream a reply, one word at a time?"
    ask(page, message)
    expect(page.locator("#state")).to_have_attribute("data-state", "streaming")
    reply = page.locator("#transcript li.assistant .content")
    expect(reply).to_have_text(message + " ", timeout=10_000)  # the echo model, rendered as text
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")

    conversation = page.locator("#conversations a").first
    expect(conversation).to_have_text(message)
    expect(conversation).to_have_attribute("aria-current", "page")
    second = "Is <b>markup</b> in a <script>alert(1)</script> reply shown as text?"
    ask(page, second)
    expect(page.locator("#transcript li.assistant .content").last).to_have_text(second + " ")
    expect(page.locator("#transcript li.turn")).to_have_count(4)
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")
    assert page.locator("#transcript b, #transcript script").count() == 0 and dialogs == []

    # A new page (another worker) finds the conversation in the sidebar and opens it.
    other = open_assistant(site, "pages-carol", worker=1)
    other.get_by_role("link", name=message).click()
    expect(other.locator("#transcript li.turn .content")).to_have_text([message, message + " ", second, second + " "])
    assert "c=" in other.url
    for opened in (page, other):
        opened.context.close()


def test_stop_stops_a_long_reply(site: Site):
    page = open_assistant(site, "pages-carol", worker=1)
    ask(page, "one two three four five", max_tokens=5000)  # 100 s of tokens if nobody stops it
    wait_for_words(page, 10)
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")
    expect(page.locator("#transcript li.assistant .note").last).to_have_text("Stopped.")
    stopped = reply_words(page)
    assert 10 <= len(stopped) < 1000
    page.wait_for_timeout(500)
    assert reply_words(page) == stopped, "nothing arrives after the stop"
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    page.context.close()


def test_a_dropped_stream_resumes_where_it_stopped(site: Site):
    page = open_assistant(site, "pages-carol", worker=2)
    resumes: list[Request] = []
    page.on("request", lambda request: resumes.append(request) if "/api/streams/" in request.url else None)
    base = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    total = 250  # 5 s of tokens
    ask(page, " ".join(base), max_tokens=total)
    wait_for_words(page, 15)

    page.context.set_offline(True)
    expect(page.locator("#state")).to_have_attribute("data-state", "reconnecting")
    page.wait_for_timeout(1000)  # the generation runs on meanwhile
    offline_words = reply_words(page)
    page.context.set_offline(False)

    expected = [base[i % len(base)] for i in range(total)]
    seen_after = []
    deadline = time.monotonic() + 15
    while page.locator("#state").get_attribute("data-state") != "idle":
        assert time.monotonic() < deadline, "the reply did not finish"
        words = reply_words(page)
        assert words == expected[: len(words)], f"not a clean prefix (a word twice or lost): {words}"
        seen_after.append(len(words))
        page.wait_for_timeout(30)
    assert reply_words(page) == expected
    assert any(count > len(offline_words) for count in seen_after), "the text grew after the drop, live"
    expect(page.locator("#transcript li.assistant .note")).to_have_text("Cut off at the token limit.")
    resumed = [r for r in resumes if r.url.endswith("/events")]
    assert resumed, "resumed from /api/streams/<id>/events"
    last_event_id = resumed[0].headers.get("last-event-id", "")
    assert last_event_id.split(":")[1].isdigit() and int(last_event_id.split(":")[1]) >= 15
    page.context.close()


USER = "pages-bob"  # the tests below; those above are pages-carol's. Each starts its own conversation.
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


Events = list[tuple[str, dict[str, Any]]]


def sse(stream_id: str, events: Events) -> str:
    """Events as /api/assistant/stream sends them: ``id: <stream>:<seq>``, the event, its JSON."""
    return "".join(
        f"id: {stream_id}:{seq}\nevent: {name}\ndata: {json.dumps(data)}\n\n" for seq, (name, data) in enumerate(events)
    )


def answer_once(page: Page, body: str, stream_id: str) -> None:
    """The next POST /api/assistant/stream gets ``body`` (an event stream) instead of the server's."""

    def fulfil(route: Route) -> None:
        route.fulfill(
            status=200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Stream-Id": stream_id},
            body=body,
        )

    page.route("**/api/assistant/stream", fulfil, times=1)


def conversation_of(page: Page) -> str:
    return page.evaluate("new URLSearchParams(location.search).get('c')")


def last_reply(page: Page):
    return page.locator("#transcript li.assistant").last


# What appears in the transcript, in order: a tool-call line, the Thinking section, and a
# reply that stops streaming ("done"), so a test can tell that the first two came as their
# events did, before the reply's end (whose done event also carries them).
WATCH_ORDER = """() => {
  window.order = [];
  new MutationObserver((records) => {
    for (const r of records) {
      if (r.type === "childList") {
        for (const node of r.addedNodes) if (node.parentElement?.matches(".tool-calls")) window.order.push("tool_call");
      } else if (r.attributeName === "hidden" && r.target.matches("details.thinking") && !r.target.hidden) {
        window.order.push("thinking");
      } else if (r.attributeName === "class" && r.target.matches("li.assistant")
                 && (r.oldValue || "").includes("streaming") && !r.target.classList.contains("streaming")) {
        window.order.push("done");
      }
    }
  }).observe(document.getElementById("transcript"), {subtree: true, childList: true, attributes: true,
    attributeOldValue: true, attributeFilter: ["class", "hidden"]});
}"""


def test_replies_are_markdown_and_sanitised(site: Site):
    page = open_assistant(site, USER)
    dialogs, violations = watch_dialogs(page), watch_csp_violations(page)
    # The echo model sends this back word by word, so the page renders the server's tokens.
    ask(page, "Some **bold** and `code` <img src=x onerror=window.pwned=1> [link](javascript:window.pwned=2) end")
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")
    reply = last_reply(page).locator(".content")
    expect(reply.locator("strong")).to_have_text("bold")
    expect(reply.locator("code")).to_have_text("code")
    expect(reply).to_contain_text("<img src=x onerror=window.pwned=1>")  # raw HTML is shown as text
    expect(reply.locator("a")).to_have_text("link")
    assert reply.locator("a").get_attribute("href") is None, "a javascript: link loses its href"

    # A reply with a fenced code block (which the echo model cannot produce: it has no line
    # breaks), streamed in pieces in the protocol's shape, an <img onerror> inside and out.
    text = "Run this:\n\n```python\nprint('<img src=x onerror=window.pwned=3>')\n```\n\n<img src=x onerror=window.pwned=4>\n"
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
    stream_id = secrets.token_hex(16)
    events: Events = [("start", {"stream_id": stream_id, "conversation_id": conversation_of(page)})]
    events += [("token", {"index": i, "token": piece}) for i, piece in enumerate(pieces)]
    events.append(("done", {"finish_reason": "stop", "content": text, "usage": {"completion_tokens": len(pieces)}}))
    answer_once(page, sse(stream_id, events), stream_id)
    ask(page, "Show me some code")
    code = last_reply(page).locator(".content pre > code")
    expect(code).to_have_text("print('<img src=x onerror=window.pwned=3>')\n")
    expect(last_reply(page).locator(".content")).to_contain_text("<img src=x onerror=window.pwned=4>")
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")

    page.wait_for_timeout(300)  # an <img src=x> would have failed to load by now
    assert page.locator("#transcript img, #transcript [onerror], #transcript script").count() == 0
    assert page.evaluate("window.pwned") is None, "no script ran"
    assert dialogs == [] and violations == [], "and the policy had nothing to block"
    page.context.close()


def test_thinking_and_tool_calls_show_as_they_come(site: Site):
    page = open_assistant(site, USER, worker=1)
    dialogs = watch_dialogs(page)
    ask(page, "What is **Markdown**, in one word?")
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")

    # Reasoning, two tool calls and a Markdown answer, in the shape of docs/protocol.md's
    # "Events" (the echo model streams no reasoning): the page shows each as it comes.
    stream_id = secrets.token_hex(16)
    answer = 'Sunny in **Paris**, rain in Oslo:\n\n```json\n{"Paris": "sunny", "Oslo": "rain"}\n```\n'
    events: Events = [("start", {"stream_id": stream_id, "conversation_id": conversation_of(page)})]
    for text in ("The user wants the weather. ", "I should <b>call</b> the tool for each city."):
        events.append(("reasoning", {"text": text}))
    for index, (call_id, city) in enumerate((("call_a", "Paris"), ("call_b", "Oslo"))):
        events.append(("tool_call", {"index": index, "id": call_id, "name": "get_weather", "arguments": ""}))
        events.append(("tool_call", {"index": index, "id": None, "name": None, "arguments": '{"city": '}))
        events.append(("tool_call", {"index": index, "id": None, "name": None, "arguments": f'"{city}"}}'}))
    # Their results and the sources (for the screenshot: "Events" in docs/protocol.md).
    for call_id, sky in (("call_a", "sunny"), ("call_b", "rain")):
        events.append(("tool_result", {"tool_call_id": call_id, "name": "get_weather", "content": f'{{"sky": "{sky}"}}'}))
    forecasts = [
        {"title": f"{city} forecast", "url": f"https://example.com/weather/{city.lower()}"} for city in ("Paris", "Oslo")
    ]
    events.append(("sources", {"sources": forecasts}))
    first_token = len(events) - 1
    for i, word in enumerate(answer.split(" ")):
        events.append(("token", {"index": first_token + i, "token": word if i == 0 else " " + word}))
    events.append(("done", {"finish_reason": "stop", "content": answer, "usage": {"completion_tokens": 30}}))
    answer_once(page, sse(stream_id, events), stream_id)
    page.evaluate(WATCH_ORDER)
    ask(page, "The weather in Paris and Oslo?")
    reply = last_reply(page)
    thinking = reply.locator("details.thinking")
    expect(thinking).to_be_visible()
    expect(thinking.locator("summary")).to_have_text("Thinking")
    assert thinking.get_attribute("open") is None, "collapsed at first"
    expect(thinking.locator(".thinking-text")).to_be_hidden()
    thinking.locator("summary").click()
    expect(thinking.locator(".thinking-text")).to_have_text(
        "The user wants the weather. I should <b>call</b> the tool for each city."
    )
    expect(reply.locator(".tool-calls li")).to_have_text(
        ['Tool call get_weather {"city": "Paris"}', 'Tool call get_weather {"city": "Oslo"}']
    )
    expect(reply.locator(".tool-results li")).to_have_text(
        ['Result of get_weather {"sky": "sunny"}', 'Result of get_weather {"sky": "rain"}']
    )
    expect(reply.locator(".sources a")).to_have_text(["Paris forecast", "Oslo forecast"])
    expect(reply.locator(".content strong")).to_have_text("Paris")
    expect(reply.locator(".content pre code")).to_contain_text('"Oslo": "rain"')
    assert page.locator("#transcript b").count() == 0, "reasoning is text"
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")
    assert page.evaluate("window.order") == ["thinking", "tool_call", "tool_call", "done"], "each as its event came"
    page.locator("#transcript").evaluate("list => { list.scrollTop = list.scrollHeight; }")
    screenshot(page, "assistant")

    # The server's own tool_call events, live: a /v1 stream of the echo model's tool call
    # (same user), which the page reads from /api/streams/<id>/events after a first response
    # that breaks off after `start`, as a dropped connection would.
    with httpx.stream(
        "POST",
        site.url("/v1/chat/completions", 2),
        headers={"Authorization": f"Bearer {site.tokens[USER]}"},
        json={
            "model": "echo",
            "stream": True,
            "messages": [{"role": "user", "content": "call get_weather"}],
            "tools": [WEATHER_TOOL],
        },
        timeout=10,
    ) as started:
        assert started.status_code == 200
        real_id = started.headers["X-Stream-Id"]
        started.read()
    start = [("start", {"stream_id": real_id, "conversation_id": conversation_of(page)})]
    answer_once(page, sse(real_id, start), real_id)
    resumed = []
    page.on("request", lambda r: resumed.append(r.headers.get("last-event-id")) if "/events" in r.url else None)
    ask(page, "call get_weather")
    expect(last_reply(page).locator(".tool-calls li")).to_have_text(["Tool call get_weather {}"])
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")
    # What the page read: the server's typed events, tool_call pieces before done.
    read = site.api("GET", f"/api/streams/{real_id}/events", USER).text
    assert read.count("event: tool_call") == 2 and read.index("event: tool_call") < read.index("event: done"), read
    assert resumed == [f"{real_id}:0"], resumed
    assert dialogs == []
    page.context.close()


# When the status line shows, the sources list shows and the first word of the reply
# appears, and when the reply stops streaming: the order the page showed them in.
WATCH_STATUS_AND_SOURCES = """() => {
  window.order = [];
  const note = (what) => { if (window.order.at(-1) !== what) window.order.push(what); };
  new MutationObserver((records) => {
    for (const r of records) {
      const target = r.target.nodeType === 1 ? r.target : r.target.parentElement;
      if (r.type === "attributes" && r.attributeName === "hidden" && !target.hidden) {
        if (target.matches(".reply-status")) note("status");
        if (target.matches(".sources")) note("sources");
      } else if (r.type === "attributes" && r.attributeName === "class" && target.matches("li.assistant")
                 && (r.oldValue || "").includes("streaming") && !target.classList.contains("streaming")) {
        note("done");
      } else if (target?.closest?.("li.assistant .content") && target.closest(".content").textContent.trim()) {
        note("text");
      }
    }
  }).observe(document.getElementById("transcript"), {subtree: true, childList: true, characterData: true,
    attributes: true, attributeOldValue: true, attributeFilter: ["class", "hidden"]});
}"""


def test_status_sources_and_tool_results_show_as_they_come(site: Site):
    """docs/protocol.md, "Events": the echo model's "/sources" streams a ``thinking`` status,
    then the sources, then its words; the page shows the status while the reply streams, the
    sources as a list of links (http(s) only), and one line per tool result."""
    page = open_assistant(site, USER, worker=2)
    dialogs = watch_dialogs(page)
    page.evaluate(WATCH_STATUS_AND_SOURCES)
    ask(page, "/sources /think tea cake")
    reply = last_reply(page)
    expect(reply.locator(".reply-status")).to_have_text("Thinking…")
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")
    expect(reply.locator(".content")).to_have_text("tea cake ")
    expect(reply.locator(".reply-status")).to_be_hidden()
    links = reply.locator(".sources a")
    expect(links).to_have_text(["Results for tea", "Results for cake"])
    assert [links.nth(i).get_attribute("href") for i in range(2)] == [
        "https://example.com/search?q=tea",
        "https://example.com/search?q=cake",
    ]
    expect(reply.locator(".sources")).to_have_accessible_name("Sources")
    assert page.evaluate("window.order") == ["status", "sources", "text", "done"], "each as its event came"
    reply.locator("details.thinking summary").click()
    expect(reply.locator(".thinking-text")).to_have_text("Echoing these words: tea cake ")

    # Tool results, a source that is not a web link and markup in every field, in the
    # shape of "Events" (the echo model logs a tool result only for /v1 tool messages).
    stream_id = secrets.token_hex(16)
    events: Events = [
        ("start", {"stream_id": stream_id, "conversation_id": conversation_of(page)}),
        ("status", {"status": "searching"}),
        ("tool_call", {"index": 0, "id": "call_a", "name": "search", "arguments": '{"q": "tea"}'}),
        ("tool_result", {"tool_call_id": "call_a", "name": "search", "content": "<b>3 hits</b>\nline two"}),
        ("tool_result", {"tool_call_id": "call_b", "name": None, "content": "no name"}),
        ("sources", {"sources": [{"title": "<i>Tea</i>", "url": "javascript:window.pwned=1"}]}),
        ("token", {"index": 6, "token": "Done."}),
        ("done", {"finish_reason": "stop", "content": "Done.", "usage": {"completion_tokens": 2}}),
    ]
    answer_once(page, sse(stream_id, events), stream_id)
    ask(page, "Search for tea")
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")
    reply = last_reply(page)
    expect(reply.locator(".tool-results li")).to_have_text(["Result of search <b>3 hits</b> line two", "Result no name"])
    expect(reply.locator(".sources li")).to_have_text(["<i>Tea</i>"])
    assert reply.locator(".sources a").count() == 0, "a source that is not an http(s) URL is no link"
    assert page.locator("#transcript b, #transcript i").count() == 0 and dialogs == []
    assert page.evaluate("window.pwned") is None
    page.context.close()


AXE_SERIOUS = """async () => (await axe.run(document, { resultTypes: ["violations"] })).violations
  .filter((v) => v.impact === "serious" || v.impact === "critical")
  .map((v) => `${v.id}: ${v.help} at ${v.nodes.slice(0, 4).map((n) => n.target.join(" ")).join(", ")}`)"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_new_parts_pass_axe(site: Site, scheme):
    """axe-core (npm, injected; the context bypasses the policy for it) on a reply with its
    Thinking open, tool calls and results, sources, code, Copy and Regenerate, and the model picker."""
    axe = ROOT / "node_modules" / "axe-core" / "axe.min.js"
    if not axe.exists():
        pytest.skip("node_modules/ is not installed (make test runs npm ci)")
    page = site.context(USER, color_scheme=scheme, bypass_csp=True).new_page()
    page.goto(site.url("/assistant/"))
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")
    stream_id = secrets.token_hex(16)
    answer = "See `code`:\n\n```\nmake test\n```\n"
    events: Events = [
        ("start", {"stream_id": stream_id, "conversation_id": None}),
        ("reasoning", {"text": "Thinking it over."}),
        ("tool_call", {"index": 0, "id": "call_a", "name": "get_weather", "arguments": '{"city": "Oslo"}'}),
        ("tool_result", {"tool_call_id": "call_a", "name": "get_weather", "content": '{"sky": "rain"}'}),
        ("sources", {"sources": [{"title": "Oslo weather", "url": "https://example.com/oslo"}]}),
        ("token", {"index": 4, "token": answer}),
        ("done", {"finish_reason": "stop", "content": answer, "usage": {"completion_tokens": 9}}),
    ]
    answer_once(page, sse(stream_id, events), stream_id)
    ask(page, "Check me")
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")
    last_reply(page).locator("details.thinking summary").click()
    expect(last_reply(page).locator(".thinking-text")).to_be_visible()
    expect(last_reply(page).locator(".sources a")).to_have_text("Oslo weather")
    expect(last_reply(page).locator(".tool-results li")).to_have_count(1)
    page.add_script_tag(path=str(axe))
    found = page.evaluate(AXE_SERIOUS)
    assert found == [], f"axe-core on the assistant ({scheme}):\n" + "\n".join(found)
    page.context.close()


def test_the_model_picker_lists_v1_models_and_sends_the_choice(site: Site):
    page = open_assistant(site, USER, worker=2)
    listed = [model["id"] for model in site.api("GET", "/v1/models", USER).json()["data"]]
    assert listed, "GET /v1/models lists at least the default model"
    picker = page.get_by_label("Model")
    expect(picker.locator("option")).to_have_text(listed)
    session = page.request.get(site.url("/v1/models", 2))  # the page's own session is enough
    assert session.status == 200 and [m["id"] for m in session.json()["data"]] == listed

    picker.select_option(listed[-1])
    with page.expect_request(lambda r: r.url.endswith("/api/assistant/stream")) as sent:
        ask(page, "Which model answers?")
    body = sent.value.post_data_json or {}
    assert body["model"] == listed[-1] and body["message"] == "Which model answers?"
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")

    page.reload()  # the choice is remembered
    expect(page.get_by_label("Model")).to_have_value(listed[-1])
    page.context.close()


def test_copy_and_regenerate(site: Site):
    page = open_assistant(site, USER)
    # The clipboard as the page calls it: recorded, then passed on to the browser's own.
    page.add_init_script(
        "window.copied = [];"
        "const write = navigator.clipboard.writeText.bind(navigator.clipboard);"
        "navigator.clipboard.writeText = (text) => { window.copied.push(text); return write(text).catch(() => {}); };"
    )
    page.reload()
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")
    ask(page, "Copy **this** reply")
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")
    reply = last_reply(page)
    reply.get_by_role("button", name="Copy").click()
    expect(reply.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("window.copied") == ["Copy **this** reply "], "the reply's Markdown source"

    requests = []
    page.on("request", lambda r: requests.append(r.post_data_json) if r.url.endswith("/api/assistant/stream") else None)
    reply.get_by_role("button", name="Regenerate").click()
    expect(page.locator("#transcript li.turn")).to_have_count(4)
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")
    expect(page.locator("#transcript li.user .content")).to_have_text(["Copy **this** reply", "Copy **this** reply"])
    assert [r["message"] for r in requests] == ["Copy **this** reply"]
    assert requests[0]["conversation_id"] == conversation_of(page), "asked again in the same conversation"
    # Only the last reply offers Regenerate; every reply offers Copy.
    expect(page.locator("#transcript li.assistant button.regenerate:visible")).to_have_count(1)
    expect(page.locator("#transcript li.assistant").get_by_role("button", name="Copy")).to_have_count(2)
    last_reply(page).get_by_role("button", name="Copy").click()
    assert page.evaluate("window.copied")[-1] == "Copy **this** reply "
    page.context.close()


def test_stop_works_after_a_reload(site: Site):
    page = open_assistant(site, USER, worker=1)
    ask(page, "one two three four five", max_tokens=5000)  # 100 s of tokens if nobody stops it
    wait_for_words(page, 10)
    page.reload()
    # The reply goes on after the reload, from the stream's log (every word once, in order).
    before = len(wait_for_words(page, 20))
    later = wait_for_words(page, before + 10)
    words = ["one", "two", "three", "four", "five"]
    assert later == [words[i % 5] for i in range(len(later))]
    expect(page.locator("#state")).to_have_attribute("data-state", "streaming")
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_enabled()
    stop.click()
    expect(page.locator("#state")).to_have_attribute("data-state", "idle")
    expect(last_reply(page).locator(".note")).to_have_text("Stopped.")
    stopped = reply_words(page)
    assert len(stopped) < 1000
    page.wait_for_timeout(500)
    assert reply_words(page) == stopped, "nothing arrives after the stop"
    # And the stored conversation says so too.
    page.reload()
    expect(last_reply(page).locator(".note")).to_have_text("Stopped.")
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    page.context.close()


def test_the_vendored_libraries_are_the_pinned_npm_packages():
    """web/static/web/vendor/ holds the files of package.json's exact pins (npm run vendor)."""
    package = json.loads((ROOT / "package.json").read_text())["devDependencies"]
    vendor = ROOT / "web/static/web/vendor"
    pairs = {"marked": ("lib/marked.esm.js", "marked.esm.js"), "dompurify": ("dist/purify.min.js", "purify.min.js")}
    for name, (source, copy) in pairs.items():
        version = package[name]
        assert version[0].isdigit(), f"{name} is pinned exactly ({version})"
        assert f"| {version} |" in (vendor / "README.md").read_text(), f"vendor/README.md lists {name} {version}"
        installed = ROOT / "node_modules" / name
        if not installed.exists():
            pytest.skip("node_modules/ is not installed (make test runs npm ci)")
        assert json.loads((installed / "package.json").read_text())["version"] == version
        digest = hashlib.sha256((installed / source).read_bytes()).hexdigest()
        assert digest == hashlib.sha256((vendor / copy).read_bytes()).hexdigest(), f"{copy} is {name}'s {source}"
        assert digest in (vendor / "README.md").read_text()
