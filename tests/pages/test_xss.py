"""XSS in a real browser (docs/security.md): every place a page shows text another user
chose (room titles, mentions, conversation titles, task titles) shows it as text, and the
Content-Security-Policy would stop a script that got into the page anyway.

Messages in a room are covered by tests/pages/test_rooms.py::test_markup_in_a_message_is_shown_as_text_and_never_runs
(raw HTML is text) and, for Markdown, by test_markdown_renders_and_nothing_in_it_runs below."""

from __future__ import annotations

import re

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


# Each line a way Markdown has been used to run script or load something: a javascript: link
# (plain, entity-encoded, as an autolink and a reference), data: and vbscript: links, images with
# onerror, raw <script>, <iframe> and <a href=javascript:>, and HTML inside code.
MARKDOWN_ATTACKS = [
    "[plain](javascript:window.pwned=1)",
    "[encoded](&#106;avascript:window.pwned=2)",
    "<javascript:window.pwned=3>",
    "[ref][evil]\n\n[evil]: javascript:window.pwned=4",
    "[data](data:text/html,<script>window.parent.pwned=5</script>)",
    "[vb](vbscript:msgbox(1))",
    '![x](x" onerror="window.pwned=6)',
    "![remote](https://example.invalid/pixel.png)",
    '<img src=x onerror="window.pwned=7">',
    "<script>window.pwned=8</script>",
    '<iframe src="javascript:window.parent.pwned=9"></iframe>',
    '<a href="javascript:window.pwned=10">raw link</a>',
    "```html\n<img src=x onerror=window.pwned=11><script>window.pwned=12</script>\n```",
    "`<b onmouseover=window.pwned=13>inline</b>`",
]


def test_markdown_renders_and_nothing_in_it_runs(site: Site):
    slug = site.new_room("Markdown")
    context = site.context("pages-alice")
    page = context.new_page()
    dialogs, violations = watch_dialogs(page), watch_csp_violations(page)
    page.goto(site.url(f"/rooms/{slug}/"))
    expect(page.locator("#state")).to_have_attribute("data-state", "live")

    blocks = ["**bold** _italic_ ~~gone~~ `code` and https://example.org/docs", "- one\n- two", "> quoted"]
    friendly = "\n\n".join([*blocks, "```\nline 1\n  line 2\n```"])
    for text in [friendly, *MARKDOWN_ATTACKS]:
        sent = site.api("POST", f"/api/rooms/{slug}/messages", "pages-bob", json={"content": text})
        assert sent.status_code == 201, sent.text
    contents = page.locator("#messages li.message .content")
    expect(contents).to_have_count(1 + len(MARKDOWN_ATTACKS))

    # What Markdown is for renders.
    first = contents.first
    expect(first.locator("strong")).to_have_text("bold")
    expect(first.locator("em")).to_have_text("italic")
    expect(first.locator("del")).to_have_text("gone")
    expect(first.locator("p > code")).to_have_text("code")
    expect(first.locator("li")).to_have_text(["one", "two"])
    expect(first.locator("blockquote")).to_have_text("quoted")
    expect(first.locator("pre code")).to_have_text("line 1\n  line 2")
    link = first.get_by_role("link", name="https://example.org/docs")
    expect(link).to_have_attribute("href", "https://example.org/docs")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")

    # None of the rest can run or load anything; HTML is shown as the text it is.
    def check() -> None:
        messages = page.locator("#messages")
        assert messages.locator("img, script, iframe, object, embed, svg, style, form, input").count() == 0
        assert messages.locator("[onerror], [onclick], [onmouseover], [style]").count() == 0
        for anchor in messages.locator("a[href]").all():
            assert (anchor.get_attribute("href") or "").startswith("https://"), anchor.get_attribute("href")
            assert anchor.get_attribute("target") == "_blank"
            assert anchor.get_attribute("rel") == "noopener noreferrer nofollow"
        assert page.evaluate("window.pwned") is None

    check()
    # A link to a forbidden scheme keeps its text and loses its target.
    for n, text in enumerate(["plain", "encoded", "javascript:window.pwned=3", "ref", "data", "vb"], start=1):
        expect(contents.nth(n).locator("a")).to_have_text(text)
        expect(contents.nth(n).locator("a")).not_to_have_attribute("href", re.compile(".*"))
    expect(contents.nth(7)).to_have_text('![x](x" onerror="window.pwned=6)')  # not an image at all
    expect(contents.nth(8).get_by_role("link", name="remote")).to_have_attribute("href", "https://example.invalid/pixel.png")
    for n in range(9, 13):  # raw HTML is the text it is
        expect(contents.nth(n)).to_have_text(MARKDOWN_ATTACKS[n - 1])
    code_block = "<img src=x onerror=window.pwned=11><script>window.pwned=12</script>"
    expect(contents.nth(13).locator("pre code")).to_have_text(code_block)
    expect(contents.nth(14).locator("code")).to_have_text("<b onmouseover=window.pwned=13>inline</b>")
    for anchor in page.locator("#messages a:not([href])").all():  # what lost its target does nothing when clicked
        anchor.click()
    check()
    page.reload()  # the backlog renders the same way
    expect(page.locator("#state")).to_have_attribute("data-state", "live")
    expect(contents).to_have_count(1 + len(MARKDOWN_ATTACKS))
    check()
    assert dialogs == [] and violations == []
    context.close()
