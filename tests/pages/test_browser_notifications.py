"""Browser notifications (issue 22): with the person's permission, a mention or a direct message
that arrives while the tab is hidden shows as a system notification, once; while the tab is in
front the badge is enough. The page's own Notification is wrapped to record what it shows (what
Chromium headless would draw is not ours to test), and the tab's visibility is set by the test."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import Site

pytestmark = pytest.mark.multiworker

# Before any page script: record each Notification shown, and let the test hide the tab.
RECORD_NOTIFICATIONS = """
(() => {
  const Real = window.Notification;
  window.__shown = [];
  class Recorded extends Real {
    constructor(title, options) { super(title, options); window.__shown.push({ title, ...options }); }
  }
  window.Notification = Recorded;
  window.__visibility = "visible";
  Object.defineProperty(Document.prototype, "visibilityState", { get: () => window.__visibility, configurable: true });
  window.__setVisibility = (state) => { window.__visibility = state; document.dispatchEvent(new Event("visibilitychange")); };
})();
"""


def open_home(site: Site, user: str, *, granted: bool) -> Page:
    context = site.context(user)
    if granted:
        context.grant_permissions(["notifications"], origin=site.url(""))
    context.add_init_script(RECORD_NOTIFICATIONS)
    page = context.new_page()
    page.goto(site.url("/"))
    expect(page.locator("header .who")).to_have_text(user)
    return page


def shown(page: Page) -> list[dict]:
    return page.evaluate("window.__shown")


def mark_all_read(page: Page) -> None:
    # The cluster is shared: leave the person with nothing unread, as the other tests expect.
    page.locator("#notifications-button").click()
    page.get_by_role("button", name="Mark all read").click()
    expect(page.locator("#notifications-count")).to_be_hidden()


def test_a_mention_and_a_direct_message_alert_once_while_the_tab_is_hidden(site: Site):
    page = open_home(site, "pages-carol", granted=True)
    page.locator("#notifications-button").click()
    expect(page.get_by_text("Mentions and direct messages also alert this device")).to_be_visible()
    expect(page.get_by_role("button", name="Alert me on this device")).to_be_hidden()
    page.locator("#notifications-button").click()
    room = site.new_room("Alerts")

    # In front: the badge counts it, no system notification.
    site.api("POST", f"/api/rooms/{room}/messages", "pages-bob", json={"content": "@pages-carol seen in front"})
    expect(page.locator("#notifications-count")).to_have_text("1")
    assert shown(page) == []

    # In the background: one system notification per mention or message, saying who and what.
    page.evaluate("window.__setVisibility('hidden')")
    site.api("POST", f"/api/rooms/{room}/messages", "pages-bob", json={"content": "@pages-carol while away"})
    direct = site.api("POST", "/api/dms/", "pages-alice", json={"user": "pages-carol"})
    assert direct.status_code in (200, 201), direct.text
    slug = direct.json()["slug"]
    site.api("POST", f"/api/rooms/{slug}/messages", "pages-alice", json={"content": "lunch?"})
    expect(page.locator("#notifications-count")).to_have_text("3")
    page.wait_for_function("window.__shown.length >= 2", timeout=10_000)
    page.wait_for_timeout(300)  # nothing more is coming
    alerts = shown(page)
    assert [alert["title"] for alert in alerts] == ["You were mentioned", "New direct message"], alerts
    assert "pages-bob mentioned you" in alerts[0]["body"] and "while away" in alerts[0]["body"]
    assert "pages-alice wrote to you" in alerts[1]["body"] and "lunch?" in alerts[1]["body"]
    assert len({alert["tag"] for alert in alerts}) == 2, "each tagged with its own notification"
    mark_all_read(page)
    page.context.close()


def test_without_permission_the_panel_offers_to_ask_and_nothing_is_shown(site: Site):
    page = open_home(site, "pages-carol", granted=False)
    page.locator("#notifications-button").click()
    expect(page.get_by_role("button", name="Alert me on this device")).to_be_visible()
    page.locator("#notifications-button").click()
    page.evaluate("window.__setVisibility('hidden')")
    room = site.new_room("No alerts")
    site.api("POST", f"/api/rooms/{room}/messages", "pages-bob", json={"content": "@pages-carol quietly"})
    expect(page.locator("#notifications-count")).to_have_text("1")
    assert shown(page) == []
    page.evaluate("window.__setVisibility('visible')")
    mark_all_read(page)
    page.context.close()
