"""The notifications panel in a real browser (issue 22, item 1): readable, and inside the
screen on a phone."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import Site

pytestmark = pytest.mark.multiworker

CONTRAST = """(element) => {
  const rgb = (color) => color.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const luminance = (color) => {
    const [r, g, b] = rgb(color).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  let node = element, background = "rgba(0, 0, 0, 0)";
  while (node && (background === "rgba(0, 0, 0, 0)" || background === "transparent")) {
    background = getComputedStyle(node).backgroundColor; node = node.parentElement;
  }
  const [light, dark] = [luminance(getComputedStyle(element).color), luminance(background)].sort((a, b) => b - a);
  return (light + 0.05) / (dark + 0.05);
}"""


def open_panel(site: Site, viewport: dict[str, int]) -> Page:
    room = site.new_room("Notified")
    posted = site.api("POST", f"/api/rooms/{room}/messages", "pages-bob", json={"content": "@pages-carol have a look"})
    assert posted.status_code == 201, posted.text
    page = site.context("pages-carol", viewport=viewport).new_page()
    page.goto(site.url("/"))
    expect(page.locator("#notifications-count")).to_be_visible()
    page.locator("#notifications-button").click()
    expect(page.locator("#notifications-panel")).to_be_visible()
    return page


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 800}, {"width": 390, "height": 844}], ids=["desktop", "phone"])
def test_the_panel_is_readable_and_inside_the_screen(site: Site, viewport: dict[str, int]):
    page = open_panel(site, viewport)
    link = page.locator("#notifications-list a").first
    expect(link).to_be_visible()
    assert link.evaluate(CONTRAST) >= 4.5, "the panel's links stand out from the panel (WCAG AA)"
    box = page.locator("#notifications-panel").bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"], f"the panel leaves the screen: {box}"
    button = page.locator("#notifications-button").bounding_box()
    assert button is not None and box["y"] >= button["y"] + button["height"], "the panel does not cover its button"
    # The cluster is shared: leave pages-carol with nothing unread, as the other tests expect.
    page.get_by_role("button", name="Mark all read").click()
    expect(page.locator("#notifications-count")).to_be_hidden()
    page.context.close()
