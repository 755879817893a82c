"""/assistant/ in a real browser: a reply streams in token by token, Stop stops it, a dropped
stream resumes where it stopped, and past conversations are in the sidebar.

The cluster's model is the echo backend: the reply is the words of the message, one per token,
20 ms apart, repeated until max_tokens."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page, Request, expect

from tests.support.browser import Site, watch_dialogs

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
