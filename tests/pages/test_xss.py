"""XSS in a real browser (docs/security.md): every place a page shows text another user
chose (room titles, mentions, conversation titles, task titles) shows it as text, and the
Content-Security-Policy would stop a script that got into the page anyway.

Messages in a room are covered by tests/pages/test_rooms.py::test_markup_in_a_message_is_shown_as_text_and_never_runs."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from tests.support.browser import Site, watch_dialogs

pytestmark = pytest.mark.multiworker

HOSTILE = '<script>window.pwned = 1; alert("script")</script><img src=x onerror="window.pwned = 2; alert(1)">'


def watch_csp_violations(page: Page) -> list[str]:
    """Console errors the Content-Security-Policy reports (none: the pages comply)."""
    seen: list[str] = []

    def record(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            seen.append(message.text)

    page.on("console", record)
    return seen


def assert_inert(page: Page, region: str) -> None:
    assert page.locator(f"{region} img, {region} script").count() == 0
    assert page.evaluate("window.pwned") is None


def test_room_titles_and_mentions_are_text_on_every_page(site: Site):
    slug = site.new_room(HOSTILE, owner="pages-bob")
    context = site.context("pages-alice")
    page = context.new_page()
    dialogs, violations = watch_dialogs(page), watch_csp_violations(page)

    # The room list: rendered by the server, then refreshed by rooms.js.
    page.goto(site.url("/"))
    link = page.locator(f'#rooms li[data-slug="{slug}"] a')
    expect(link).to_have_text(HOSTILE)
    assert_inert(page, "#rooms")

    # The room page: its heading and the document title.
    page.goto(site.url(f"/rooms/{slug}/"))
    expect(page.locator("#state")).to_have_attribute("data-state", "live")
    expect(page.locator("#room-title")).to_contain_text(HOSTILE)
    assert HOSTILE in page.title()
    assert_inert(page, "#room-title")

    # A mention: the notification panel shows who, where and what, as text.
    sent = site.api("POST", f"/api/rooms/{slug}/messages", "pages-bob", json={"content": f"@pages-alice {HOSTILE}"})
    assert sent.status_code == 201, sent.text
    expect(page.locator("#notifications-count")).to_be_visible()
    page.locator("#notifications-button").click()
    expect(page.locator("#notifications-list li").first).to_contain_text(f"@pages-alice {HOSTILE}")
    assert_inert(page, "#notifications-list")
    # The mention's own message, live in the room.
    expect(page.locator("#messages li.message .content").last).to_have_text(f"@pages-alice {HOSTILE}")
    assert_inert(page, "#messages")
    assert dialogs == [] and violations == []
    context.close()


def test_conversation_and_task_titles_are_text(site: Site):
    # A conversation whose first message (its title) is markup, started by a script.
    started = site.api("POST", "/api/assistant/stream", "pages-carol", json={"message": HOSTILE, "max_tokens": 1})
    assert started.status_code == 200, started.text
    # A summary task names its room in the page title; it need not run for that.
    slug = site.new_room(HOSTILE, owner="pages-carol")
    task = site.api("POST", "/api/tasks/", "pages-carol", json={"kind": "summarize_room", "room": slug})
    assert task.status_code == 202, task.text

    context = site.context("pages-carol")
    page = context.new_page()
    dialogs, violations = watch_dialogs(page), watch_csp_violations(page)
    page.goto(site.url("/assistant/"))
    expect(page.locator("#conversations a").first).to_have_text(HOSTILE)
    assert_inert(page, "#conversations")
    page.goto(site.url(f"/tasks/{task.json()['id']}/"))
    expect(page.locator("#task-title")).to_have_text(f"Summary of {HOSTILE}")
    assert_inert(page, "#task")
    assert dialogs == [] and violations == []
    context.close()


def test_the_content_security_policy_is_sent_and_enforced(site: Site):
    """Every page carries the policy and still works under it (the room goes live over its
    WebSocket, the task page draws its bar); a script injected into the DOM does not run."""
    for path in ("/", "/accounts/login/", "/admin/login/"):
        policy = httpx.get(site.url(path), timeout=10).headers.get("content-security-policy", "")
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy, (path, policy)
    assert "content-security-policy" not in httpx.get(site.url("/healthz"), timeout=10).headers

    slug = site.new_room("Policy")
    context = site.context("pages-alice")
    page = context.new_page()
    violations = watch_csp_violations(page)
    page.goto(site.url(f"/rooms/{slug}/"))
    expect(page.locator("#state")).to_have_attribute("data-state", "live")
    assert violations == [], "the page itself complies with the policy"

    page.evaluate(
        """() => {
            const script = document.createElement("script");
            script.textContent = "window.injected = 1";
            document.body.append(script);
            const img = document.createElement("img");
            img.src = "x";
            img.setAttribute("onerror", "window.injected = 2");
            document.body.append(img);
        }"""
    )
    page.wait_for_timeout(300)
    assert page.evaluate("window.injected") is None
    assert violations, "the browser reported the blocked inline script"

    # The staff admin under the same policy: it loads its own files only.
    admin = site.context("pages-mod").new_page()
    admin_violations = watch_csp_violations(admin)
    admin.goto(site.url("/admin/"))
    expect(admin.locator("#site-name")).to_be_visible()
    assert admin_violations == []
    admin.context.close()
    context.close()
