"""The smaller things a user trips on (issue 22, item 8): a ban says why and until when, and a
user banned site-wide finds "Summarize this room" disabled instead of failing."""

from __future__ import annotations

import re
import secrets

import pytest
from playwright.sync_api import expect

from tests.support.browser import Site

pytestmark = pytest.mark.multiworker


def test_a_ban_says_its_reason_and_its_end(site: Site):
    slug = site.new_room("Ban reasons")
    bob = site.context("pages-bob", worker=1).new_page()
    bob.goto(site.url(f"/rooms/{slug}/", 1))
    expect(bob.locator("#state")).to_have_attribute("data-state", "live")
    ban = site.api(
        "POST",
        "/api/moderation/bans",
        "pages-mod",
        json={"user": "pages-bob", "room": slug, "minutes": 30, "reason": "spamming links"},
    )
    assert ban.status_code == 201, ban.text
    try:
        state = bob.locator("#state")
        expect(state).to_have_attribute("data-state", "closed")
        # its end as the reader's clock shows it ("14:05", or "11:43 PM" in en-US), not "until lifted";
        # a ban that ends tomorrow (30 minutes from 23:40) says the day too ("Dec 6 12:10 AM")
        until = re.compile(r"^You are banned from this room until (?:\S+ \S+ )?\d{1,2}:\d\d\b.*\. Reason: spamming links$")
        expect(state).to_have_text(until)
        bob.reload()  # and again on opening the room
        expect(state).to_have_text(re.compile(r"^You are banned from this room until .*\. Reason: spamming links$"))
    finally:
        assert site.api("DELETE", f"/api/moderation/bans/{ban.json()['id']}", "pages-mod").status_code == 204
    bob.context.close()


def test_summarize_is_disabled_for_a_user_banned_site_wide(site: Site):
    slug = site.new_room("Summaries")
    carol = site.context("pages-carol").new_page()
    carol.goto(site.url(f"/rooms/{slug}/"))
    expect(carol.get_by_role("button", name="Summarize this room")).to_be_enabled()
    ban = site.api("POST", "/api/moderation/bans", "pages-mod", json={"user": "pages-carol", "reason": "cool down"})
    assert ban.status_code == 201, ban.text
    try:
        # Live: the ban closes the socket and the page learns it is site-wide.
        expect(carol.locator("#state")).to_have_text(
            "You are banned from every room until a moderator lifts it. Reason: cool down"
        )
        expect(carol.get_by_role("button", name="Summarize this room")).to_be_disabled()
        carol.reload()
        summarize = carol.get_by_role("button", name="Summarize this room")
        expect(summarize).to_be_disabled()
        expect(summarize).to_have_accessible_description("You are banned site-wide: you can read, not start summaries.")
    finally:
        assert site.api("DELETE", f"/api/moderation/bans/{ban.json()['id']}", "pages-mod").status_code == 204
    carol.context.close()


def test_a_room_address_is_suggested_from_any_title_or_the_page_says_to_type_one(site: Site):
    page = site.context("pages-alice").new_page()
    page.goto(site.url("/"))
    title, address = page.get_by_label("Title"), page.get_by_label("Address")
    title.fill("Ünïcode Room!!")
    expect(address).to_have_value("unicode-room")  # accents dropped, not turned into dashes
    title.fill("東京の部屋")
    expect(address).to_have_value("")
    expect(address).to_have_accessible_description(re.compile("^No address can be made from this title: type one"))
    slug = f"tokyo-{secrets.token_hex(3)}"
    address.fill(slug)
    expect(address).to_have_accessible_description(re.compile("^Lower-case letters, digits and dashes"))
    page.get_by_role("button", name="Create room").click()
    expect(page).to_have_url(site.url(f"/rooms/{slug}/"))
    expect(page.get_by_role("heading", level=1)).to_have_text("東京の部屋")
    page.context.close()


def test_a_direct_conversation_has_the_same_name_on_its_page_and_in_the_list(site: Site):
    opened = site.api("POST", "/api/dms/", "pages-carol", json={"user": "pages-bob"})
    assert opened.status_code in (200, 201), opened.text
    slug = opened.json()["slug"]
    page = site.context("pages-carol").new_page()
    page.goto(site.url("/"))
    link = page.locator(f'#dms li[data-slug="{slug}"] a')
    expect(link).to_have_text("pages-bob")  # as the server draws the list
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")  # and after a poll
    page.wait_for_timeout(500)
    expect(link).to_have_text("pages-bob")
    link.click()
    expect(page.locator("#room-title")).to_have_text("pages-bob direct")
    expect(page).to_have_title(re.compile("^pages-bob · "))
    page.context.close()


def test_a_long_message_is_collapsed_with_show_more(site: Site):
    slug = site.new_room("Long messages")
    wall = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 4 for i in range(1, 27))
    assert 2900 < len(wall) <= 4000
    for content in (wall, "short and sweet"):
        posted = site.api("POST", f"/api/rooms/{slug}/messages", "pages-bob", json={"content": content})
        assert posted.status_code == 201, posted.text
    page = site.context("pages-alice").new_page()
    page.goto(site.url(f"/rooms/{slug}/"))
    expect(page.locator("#state")).to_have_attribute("data-state", "live")
    long, short = page.locator("#messages li.message").nth(0), page.locator("#messages li.message").nth(1)
    text = long.locator(":scope > .content")
    more = long.get_by_role("button", name="Show more")
    expect(more).to_have_attribute("aria-expanded", "false")
    assert text.evaluate("node => node.getBoundingClientRect().height") < 250
    expect(short.get_by_role("button", name="Show more")).to_have_count(0)
    more.click()
    less = long.get_by_role("button", name="Show less")
    expect(less).to_have_attribute("aria-expanded", "true")
    assert text.evaluate("node => node.getBoundingClientRect().height") > 600
    # An edit redraws the message, and it stays open.
    path = f"/api/rooms/{slug}/messages/{long.get_attribute('data-id')}"
    edited = site.api("PATCH", path, "pages-bob", json={"content": wall + " (fixed)"})
    assert edited.status_code == 200, edited.text
    expect(long.locator(".edited")).to_be_visible()
    expect(long.get_by_role("button", name="Show less")).to_be_visible()
    page.context.close()


def test_on_a_phone_the_headers_leave_the_room_most_of_the_screen(site: Site):
    slug = site.new_room("A room with a longer title on a phone")
    page = site.context("pages-alice", viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True).new_page()
    page.goto(site.url(f"/rooms/{slug}/"))
    expect(page.locator("#state")).to_have_attribute("data-state", "live")
    header = page.locator("header.site").evaluate("node => node.getBoundingClientRect().height")
    head = page.locator(".room-head").evaluate("node => node.getBoundingClientRect().height")
    # Nothing is pushed off the right edge (a title on one line must not widen the page).
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    send = page.get_by_role("button", name="Send")
    assert send.evaluate("node => node.getBoundingClientRect().right") <= 390
    assert header + head <= 844 * 0.15, f"the site header ({header:.0f} px) and the room's ({head:.0f} px)"
    # Everything is still there: the state, Summarize, the notifications button.
    for name in ("Summarize this room", "Notifications", "Dark theme"):
        expect(page.get_by_role("button", name=name)).to_be_visible()
    expect(page.locator("#state")).to_be_visible()
    page.context.close()
