"""Dark mode (issue 22, item 6): the pages follow prefers-color-scheme, a header toggle picks
a theme and is remembered, and every piece of text keeps a contrast of at least 4.5:1 with what
is behind it, in both themes (computed colours, with Playwright's color_scheme emulation)."""

from __future__ import annotations

from typing import Literal

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.support.browser import Site

pytestmark = pytest.mark.multiworker

Scheme = Literal["light", "dark"]

# The relative luminance (WCAG 2.2) of the colour behind the body.
PAGE_LUMINANCE = """() => {
  const [r, g, b] = getComputedStyle(document.body).backgroundColor.match(/[\\d.]+/g).slice(0, 3).map(Number)
    .map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}"""

# Every visible text on the page (text nodes, form fields' values and placeholders) whose
# colour, faded by its opacity, has less than 4.5:1 against the backgrounds behind it (composited
# up the tree onto the page's). Disabled controls are exempt (WCAG 1.4.3), as is hidden text.
LOW_CONTRAST = """() => {
  const parse = (text) => {
    const m = text.match(/^rgba?\\(([^)]+)\\)$/);
    if (!m) throw new Error(`a colour this check cannot read: ${text}`);
    const p = m[1].split(/[\\s,/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, bottom) => {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a)).concat(1);
  };
  const luminance = (c) => {
    const [r, g, b] = c.slice(0, 3).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const canvas = (() => {
    for (const node of [document.documentElement, document.body]) {
      const c = parse(getComputedStyle(node).backgroundColor);
      if (c[3] > 0) return over(c, [255, 255, 255, 1]);
    }
    return [255, 255, 255, 1];
  })();
  const background = (element) => {
    const layers = [];
    for (let node = element; node; node = node.parentElement) {
      const c = parse(getComputedStyle(node).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    return layers.reverse().reduce((below, layer) => over(layer, below), canvas);
  };
  const opacity = (element) => {
    let value = 1;
    for (let node = element; node; node = node.parentElement) value *= Number(getComputedStyle(node).opacity);
    return value;
  };
  const failures = [];
  const check = (element, colour, what) => {
    if (element.closest(":disabled, [aria-hidden=true]")) return;
    if (!element.checkVisibility({ opacityProperty: true, visibilityProperty: true })) return;
    const box = element.getBoundingClientRect();
    if (box.width <= 1 || box.height <= 1) return;  // visually hidden, for screen readers
    const behind = background(element);
    const fg = parse(colour);
    const text = over([fg[0], fg[1], fg[2], fg[3] * opacity(element)], behind);
    const [light, dark] = [luminance(text), luminance(behind)].sort((a, b) => b - a);
    const ratio = (light + 0.05) / (dark + 0.05);
    if (ratio < 4.5) {
      failures.push(`${ratio.toFixed(2)}:1 ${element.tagName.toLowerCase()}${element.id ? "#" + element.id : ""}`
        + `.${[...element.classList].join(".")} "${what.slice(0, 40)}" ${colour} on rgb(${behind.slice(0, 3).map(Math.round)})`);
    }
  };
  for (const element of document.body.querySelectorAll("*")) {
    if (element.matches("script, style, svg, svg *")) continue;
    if (element.matches("input, textarea")) {
      if (element.type === "hidden") continue;
      if (element.value) check(element, getComputedStyle(element).color, element.value);
      else if (element.placeholder) check(element, getComputedStyle(element, "::placeholder").color, element.placeholder);
      continue;
    }
    const own = [...element.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.textContent).join("").trim();
    if (own) check(element, getComputedStyle(element).color, own);
  }
  return failures;
}"""


def themed(site: Site, scheme: Scheme, user: str | None = "pages-alice") -> BrowserContext:
    return site.context(user, color_scheme=scheme)


def assert_theme(page: Page, theme: Scheme) -> None:
    luminance = page.evaluate(PAGE_LUMINANCE)
    if theme == "dark":
        assert luminance < 0.05, f"the page is not dark (background luminance {luminance:.3f})"
    else:
        assert luminance > 0.8, f"the page is not light (background luminance {luminance:.3f})"
    expect(page.get_by_role("button", name="Dark theme")).to_have_attribute("aria-pressed", str(theme == "dark").lower())


def assert_readable(page: Page, where: str) -> None:
    failures = page.evaluate(LOW_CONTRAST)
    assert failures == [], f"text below 4.5:1 on {where}:\n" + "\n".join(failures)


@pytest.mark.parametrize("system", ["light", "dark"])
def test_the_theme_follows_the_system_until_the_toggle_picks_one_which_is_remembered(site: Site, system: Scheme):
    other: Scheme = "light" if system == "dark" else "dark"
    context = themed(site, system)
    page = context.new_page()
    page.goto(site.url("/"))
    assert_theme(page, system)

    page.get_by_role("button", name="Dark theme").click()
    assert_theme(page, other)
    assert page.evaluate("localStorage.getItem('theme')") == other
    page.reload()
    assert_theme(page, other)  # remembered
    second = context.new_page()  # another tab (same origin): the same choice, and it follows a change live
    second.goto(site.url("/assistant/"))
    assert_theme(second, other)
    page.get_by_role("button", name="Dark theme").click()
    assert_theme(page, system)
    assert_theme(second, system)
    context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_has_a_contrast_of_at_least_4_5_in_both_themes(site: Site, scheme: Scheme):
    slug = site.new_room("Contrast")
    for user, content in [
        ("pages-bob", "@pages-alice the `build` is green, see\n\n```\nmake test\n```"),
        ("pages-alice", "Thanks @pages-bob, *merging* now"),
        ("pages-carol", "> quoting the plan\n\n- one\n- two"),
    ]:
        posted = site.api("POST", f"/api/rooms/{slug}/messages", user, json={"content": content})
        assert posted.status_code == 201, posted.text
    anonymous = themed(site, scheme, user=None).new_page()
    anonymous.goto(site.url("/accounts/login/"))
    assert_theme(anonymous, scheme)
    assert_readable(anonymous, "the login page")
    anonymous.context.close()

    context = themed(site, scheme)
    page = context.new_page()
    page.goto(site.url(f"/rooms/{slug}/"))
    assert_theme(page, scheme)
    expect(page.locator("#state")).to_have_attribute("data-state", "live")
    expect(page.locator("#messages li.message")).to_have_count(3)
    notice = site.api("POST", f"/api/rooms/{slug}/notice", "pages-mod", json={"content": "Be kind"})  # live only
    assert notice.status_code == 202, notice.text
    expect(page.locator("#messages li.notice")).to_have_count(1)
    expect(page.locator("#messages li.mentions-me")).to_have_count(1)
    page.get_by_role("textbox", name="Message").fill("a draft")
    assert_readable(page, "a room")
    # The check sees what it should: the title in its panel's own colour is caught.
    page.locator("#room-title").evaluate("(t) => { t.style.color = getComputedStyle(t.closest('.chat')).backgroundColor; }")
    caught = page.evaluate(LOW_CONTRAST)
    assert len(caught) == 1 and caught[0].startswith("1.00:1 h1#room-title"), caught
    page.locator("#room-title").evaluate("(t) => { t.style.color = ''; }")
    page.locator("#messages li.message").first.hover()  # its actions show
    assert_readable(page, "a room's message actions")
    page.locator("#notifications-button").click()
    expect(page.locator("#notifications-panel")).to_be_visible()
    assert_readable(page, "the notifications panel")

    for path in ("/", "/assistant/"):
        page.goto(site.url(path))
        assert_theme(page, scheme)
        assert_readable(page, path)
    # The cluster is shared: leave pages-alice with nothing unread.
    assert site.api("POST", "/api/notifications/read", "pages-alice", json={"up_to": 2**62}).status_code == 200
    context.close()
