"""Screen readers and axe-core (issue 22, item 7): axe finds no serious or critical violation on
the login, rooms, room and assistant pages in either theme; the assistant announces a finished
reply once (not its tokens); the rooms list is not a live region and a poll that finds nothing
new changes nothing in it; opening a room puts the focus in its message box."""

from __future__ import annotations

import secrets
from typing import Literal

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import Site
from tests.support.processes import ROOT

pytestmark = pytest.mark.multiworker

Scheme = Literal["light", "dark"]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"

# axe's serious and critical violations, one line each (rule, impact, the first few targets).
AXE_RUN = """async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.slice(0, 4).map((n) => n.target.join(" ")).join(", ")}`);
}"""


def axe_violations(page: Page) -> list[str]:
    if not AXE.exists():
        raise RuntimeError(f"{AXE} is missing: run `make test`, which installs the npm devDependencies")
    page.add_script_tag(path=str(AXE))  # the context bypasses the page's CSP (script-src 'self')
    return page.evaluate(AXE_RUN)


def assert_no_serious_violations(page: Page, where: str) -> None:
    found = axe_violations(page)
    assert found == [], f"axe-core on {where}:\n" + "\n".join(found)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_serious_or_critical_violation_on_any_page(site: Site, scheme: Scheme):
    slug = f"accessible-{scheme}-{secrets.token_hex(3)}"  # private: the room page shows its members too
    created = site.api("POST", "/api/rooms/", "pages-alice", json={"slug": slug, "title": "Accessible", "private": True})
    assert created.status_code == 201, created.text
    assert site.api("POST", f"/api/rooms/{slug}/members", "pages-alice", json={"user": "pages-bob"}).status_code == 201
    for user, content in [
        ("pages-bob", "@pages-alice the `build` is green, see\n\n```\nmake test\n```"),
        ("pages-alice", "Thanks @pages-bob, *merging* now"),
    ]:
        posted = site.api("POST", f"/api/rooms/{slug}/messages", user, json={"content": content})
        assert posted.status_code == 201, posted.text

    anonymous = site.context(None, color_scheme=scheme, bypass_csp=True).new_page()
    anonymous.goto(site.url("/accounts/login/"))
    assert_no_serious_violations(anonymous, f"the login page ({scheme})")
    anonymous.context.close()

    page = site.context("pages-alice", color_scheme=scheme, bypass_csp=True).new_page()
    page.goto(site.url("/"))
    expect(page.locator(f'#rooms li[data-slug="{slug}"]')).to_be_visible()
    assert_no_serious_violations(page, f"the rooms page ({scheme})")

    page.goto(site.url(f"/rooms/{slug}/"))
    expect(page.locator("#state")).to_have_attribute("data-state", "live")
    expect(page.locator("#messages li.message")).to_have_count(2)
    expect(page.locator("#members > li")).to_have_count(2)
    assert_no_serious_violations(page, f"a room ({scheme})")

    page.goto(site.url("/assistant/"))
    box = page.get_by_role("textbox", name="Message")
    box.fill("hello there")
    box.press("Enter")
    expect(page.locator("#transcript li.assistant")).to_have_count(1)
    expect(page.locator("#state")).to_have_text("Ready")
    assert_no_serious_violations(page, f"the assistant ({scheme})")
    assert site.api("POST", "/api/notifications/read", "pages-alice", json={"up_to": 2**62}).status_code == 200
    page.context.close()


def test_the_assistant_announces_a_finished_reply_once_not_its_tokens(site: Site):
    page = site.context("pages-bob").new_page()
    page.goto(site.url("/assistant/"))
    region = page.locator("#announcer")
    expect(region).to_have_attribute("aria-live", "polite")
    expect(region).to_be_attached()
    # Every change the live region goes through while a reply streams in.
    page.evaluate("""() => {
      window.announced = [];
      const node = document.getElementById("announcer");
      new MutationObserver(() => window.announced.push(node.textContent))
        .observe(node, { childList: true, characterData: true, subtree: true });
    }""")
    box = page.get_by_role("textbox", name="Message")
    box.fill("one two three four five six seven eight")
    box.press("Enter")
    expect(page.locator("#state")).to_have_text("Ready")
    reply = page.locator("#transcript li.assistant .content").inner_text().strip()
    assert reply, "the echo model answered nothing"
    expect(region).to_contain_text(reply)
    announced = [text for text in page.evaluate("window.announced") if text.strip()]
    assert len(announced) == 1, announced  # the finished reply, once: no token by token
    assert announced[0].startswith("Assistant: ")
    page.context.close()


def test_the_rooms_list_changes_only_what_changed_and_is_not_a_live_region(site: Site):
    slug = site.new_room("Quiet list")
    page = site.context("pages-carol").new_page()
    # Count the list's polls (answered), from before the page's own scripts run.
    page.add_init_script("""(() => {
      window.polls = 0;
      const original = window.fetch;
      window.fetch = async (...args) => {
        const response = await original(...args);
        if (String(args[0]) === "/api/rooms/") setTimeout(() => { window.polls += 1; }, 100);
        return response;
      };
    })()""")
    page.goto(site.url("/"))
    row = page.locator(f'#rooms li[data-slug="{slug}"]')
    expect(row).to_be_visible()
    for list_id in ("#rooms", "#dms"):
        expect(page.locator(list_id)).not_to_have_attribute("aria-live", "polite")
    page.wait_for_function("() => window.polls >= 1", timeout=5_000)  # the first poll (it may redraw the server's rows)
    page.evaluate("""() => {
      window.polls = 0;
      window.mutations = [];
      for (const id of ["rooms", "dms"]) {
        new MutationObserver((records) => window.mutations.push(...records.map((r) => `${id}: ${r.type} ${r.target.nodeName}`)))
          .observe(document.getElementById(id), { childList: true, characterData: true, subtree: true, attributes: true });
      }
    }""")
    # Two polls that find the list as it was change nothing in it.
    for expected in (1, 2):
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
        page.wait_for_function(f"() => window.polls >= {expected}", timeout=5_000)
    assert page.evaluate("window.mutations") == []

    # A new message elsewhere changes that row only: its badge, nothing else in the list.
    other = site.new_room("Another quiet one")
    posted = site.api("POST", f"/api/rooms/{slug}/messages", "pages-bob", json={"content": "hello carol"})
    assert posted.status_code == 201, posted.text
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    expect(row.locator(".badge")).to_have_text("1")
    expect(page.locator(f'#rooms li[data-slug="{other}"]')).to_be_visible()
    first_slug = page.locator("#rooms > li").first.get_attribute("data-slug")
    page.evaluate("() => { document.querySelector('#rooms > li').dataset.marker = 'kept'; }")
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    page.wait_for_timeout(500)
    # An unchanged row is the same element after a poll (nothing is rebuilt).
    expect(page.locator(f'#rooms li[data-slug="{first_slug}"]')).to_have_attribute("data-marker", "kept")
    # A row redrawn while its link has the keyboard focus keeps it.
    row.get_by_role("link").focus()
    again = site.api("POST", f"/api/rooms/{slug}/messages", "pages-bob", json={"content": "and again"})
    assert again.status_code == 201, again.text
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    expect(row.locator(".badge")).to_have_text("2")
    expect(row.get_by_role("link")).to_be_focused()
    assert site.api("POST", f"/api/rooms/{slug}/read", "pages-carol", json={"id": again.json()["id"]}).status_code == 204
    page.context.close()


def test_opening_a_room_focuses_its_message_box(site: Site):
    slug = site.new_room("Focus")
    page = site.context("pages-bob").new_page()
    page.goto(site.url("/"))
    page.locator(f'#rooms li[data-slug="{slug}"] a').click()
    expect(page.locator("#state")).to_have_attribute("data-state", "live")
    expect(page.get_by_role("textbox", name="Message")).to_be_focused()
    page.keyboard.type("typed at once")
    expect(page.get_by_role("textbox", name="Message")).to_have_value("typed at once")
    page.context.close()


# Each message added to the list, with what the list's live region was when it went in.
RECORD_LIVE = """() => {
  window.liveAtInsert = [];
  const list = document.getElementById("messages");
  new MutationObserver((records) => {
    for (const record of records) for (const node of record.addedNodes) {
      if (!node.matches?.("li.message[data-id]")) continue;
      const text = node.querySelector(":scope > .content").textContent.trim();
      window.liveAtInsert.push([text, list.getAttribute("aria-live")]);
    }
  }).observe(list, { childList: true });
}"""


def test_new_messages_are_announced_but_a_backlog_or_older_history_is_not(site: Site):
    slug = site.new_room("Announcements")
    for i in range(1, 61):
        posted = site.api("POST", f"/api/rooms/{slug}/messages", "pages-carol", json={"content": f"old {i}"})
        assert posted.status_code == 201, posted.text
    page = site.context("pages-alice").new_page()
    page.add_init_script(f"document.addEventListener('DOMContentLoaded', {RECORD_LIVE})")
    page.goto(site.url(f"/rooms/{slug}/"))
    expect(page.locator("#state")).to_have_attribute("data-state", "live")
    expect(page.locator("#messages li.message")).to_have_count(50)
    expect(page.locator("#messages")).to_have_attribute("aria-live", "polite")  # on again after the backlog
    posted = site.api("POST", f"/api/rooms/{slug}/messages", "pages-bob", json={"content": "brand new"})
    assert posted.status_code == 201, posted.text
    expect(page.locator("#messages li.message")).to_have_count(51)
    page.locator("#messages").evaluate("list => { list.scrollTop = 0; }")
    expect(page.locator("#messages li.message")).to_have_count(61)
    seen = page.evaluate("window.liveAtInsert")
    assert len(seen) == 61, seen
    live = {text: region for text, region in seen}
    assert live["brand new"] == "polite"
    assert {live[f"old {i}"] for i in range(11, 61)} == {"off"}  # the backlog
    assert {live[f"old {i}"] for i in range(1, 11)} == {"off"}  # older history
    page.context.close()
