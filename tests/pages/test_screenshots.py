"""The README's screenshots of a room, light and dark, desktop and phone (issue 22: visual
regression). One scene, drawn four ways from the same messages, each checked for what a person
would see (the theme's background, every message, the composer on screen) before it is saved
over docs/screenshots/<name>.png. The other screenshots come from the tests of their pages."""

from __future__ import annotations

from typing import Literal

import pytest
from playwright.sync_api import expect

from tests.support.browser import DESKTOP, Site, screenshot

pytestmark = pytest.mark.multiworker

PHONE = {"width": 390, "height": 780}
CONVERSATION = [
    ("pages-alice", "Anyone up for a hike on Saturday?"),
    ("pages-bob", "Yes! Which trail?"),
    ("pages-alice", "The ridge loop, about **12 km**. Route file:\n```\nridge-loop.gpx\n```"),
    ("pages-carol", "@pages-alice count me in, I'll bring snacks"),
    ("pages-bob", "Saturday at 9, meet at the station"),
]
BODY_LUMINANCE = """() => {
  const [r, g, b] = getComputedStyle(document.body).backgroundColor.match(/[\\d.]+/g).slice(0, 3).map(Number)
    .map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}"""


@pytest.fixture(scope="module")
def scene(site: Site) -> str:
    slug = site.new_room("Weekend plans")
    for author, content in CONVERSATION:
        posted = site.api("POST", f"/api/rooms/{slug}/messages", author, json={"content": content})
        assert posted.status_code == 201, posted.text
    return slug


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_a_room_in_each_theme_on_desktop_and_phone(site: Site, scene: str, scheme: Literal["light", "dark"], device: str):
    options = {"viewport": DESKTOP} if device == "desktop" else {"viewport": PHONE, "is_mobile": True, "has_touch": True}
    page = site.context("pages-alice", color_scheme=scheme, **options).new_page()
    page.goto(site.url(f"/rooms/{scene}/", worker=1))
    expect(page.locator("#state")).to_have_attribute("data-state", "live")
    expect(page.locator("#messages li.message")).to_have_count(len(CONVERSATION))
    expect(page.locator("#messages li.message pre code")).to_have_text("ridge-loop.gpx")
    expect(page.get_by_role("button", name="Send")).to_be_in_viewport()
    luminance = page.evaluate(BODY_LUMINANCE)
    assert (luminance < 0.05) if scheme == "dark" else (luminance > 0.8), f"{scheme}: body luminance {luminance:.3f}"
    name = "room" + ("-phone" if device == "phone" else "") + ("-dark" if scheme == "dark" else "")
    page.get_by_role("textbox", name="Message").blur()  # no focus ring in the picture
    screenshot(page, name)
    page.context.close()
