"""Keyboard alone (issue 22): log in, open a room from the list, say something, go to the
assistant and ask it something, with Tab, typing and Enter only; whatever has the focus
shows it (WCAG 2.4.7)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import PASSWORD, Site

pytestmark = pytest.mark.multiworker

# Enough Tabs to cross any of our pages; a page that needs more is a finding in itself.
MAX_TABS = 60

FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const style = getComputedStyle(el);
  const shown = (style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0) || style.boxShadow !== "none";
  return {
    tag: el.tagName.toLowerCase(),
    label: (el.getAttribute("aria-label") || el.labels?.[0]?.textContent || el.textContent || "").trim(),
    href: el.getAttribute("href"),
    name: el.getAttribute("name"),
    shown,
  };
}"""


def tab_to(page: Page, matches, what: str) -> dict:
    """Press Tab until the focused element ``matches``; it must show that it has the focus."""
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED)
        if focused is not None and matches(focused):
            assert focused["shown"], f"{what} has the focus but does not show it: {focused}"
            return focused
    raise AssertionError(f"{MAX_TABS} Tabs and {what} never had the focus")


def test_login_a_room_and_the_assistant_by_keyboard_alone(site: Site):
    slug = site.new_room("Keyboard club")
    context = site.context()
    page = context.new_page()
    page.goto(site.url("/accounts/login/"))
    tab_to(page, lambda f: f["name"] == "username", "the username field")
    page.keyboard.type("pages-carol")
    tab_to(page, lambda f: f["name"] == "password", "the password field")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.locator("header .who")).to_have_text("pages-carol")

    expect(page.locator(f'#rooms li[data-slug="{slug}"]')).to_be_visible()
    tab_to(page, lambda f: f["tag"] == "a" and (f["href"] or "").rstrip("/").endswith(f"/rooms/{slug}"), "the room's link")
    page.keyboard.press("Enter")
    expect(page.locator("#state")).to_have_attribute("data-state", "live")
    focused = page.evaluate(FOCUSED)
    assert focused is not None and focused["tag"] in ("textarea", "input"), (
        f"opening a room puts the focus in its message box: {focused}"
    )
    page.keyboard.type("typed without a mouse")
    page.keyboard.press("Enter")
    expect(page.locator("#messages li.message").filter(has_text="typed without a mouse")).to_have_count(1)

    page.keyboard.press("Shift+Tab")  # out of the message box, then on to the header's link
    tab_to(page, lambda f: f["tag"] == "a" and (f["href"] or "").rstrip("/").endswith("/assistant"), "the assistant link")
    page.keyboard.press("Enter")
    expect(page).to_have_url(site.url("/assistant/"))
    tab_to(page, lambda f: f["tag"] in ("textarea", "input") and f["label"].startswith("Message"), "the assistant's box")
    page.keyboard.type("hello by keyboard")
    page.keyboard.press("Enter")
    expect(page.locator("#transcript li.assistant")).to_have_count(1)
    expect(page.locator("#state")).to_have_text("Ready")
    context.close()
