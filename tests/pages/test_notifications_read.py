"""Notifications clear when what they are about is read (issue 22, item 2): opening a direct
conversation marks its notifications read, a mention is read once its message is on screen,
and the badge drops at once on every page of that person, on any worker."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import Site

pytestmark = pytest.mark.multiworker

READER = "pages-carol"


def post(site: Site, room: str, user: str, content: str) -> int:
    response = site.api("POST", f"/api/rooms/{room}/messages", user, json={"content": content})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def badge(page: Page):
    return page.locator("#notifications-count")


def test_reading_a_direct_message_and_seeing_a_mention_clear_them_everywhere(site: Site):
    # The cluster is shared: start from nothing unread.
    cleared = site.api("POST", "/api/notifications/read", READER, json={"up_to": 2**62})
    assert cleared.status_code == 200, cleared.text

    room = site.new_room("Read on sight")
    mention_id = post(site, room, "pages-bob", f"@{READER} can you check the figures?")
    for i in range(40):  # enough below the mention that a fresh page shows the end, not it
        post(site, room, "pages-bob", f"filler {i}")
    opened = site.api("POST", "/api/dms/", "pages-bob", json={"user": READER})
    assert opened.status_code in (200, 201), opened.text
    dm = opened.json()["slug"]
    post(site, dm, "pages-bob", "lunch?")
    post(site, dm, "pages-bob", "12:30 at the usual place")

    lobby = site.context(READER, worker=1).new_page()  # another device, on another worker
    lobby.goto(site.url("/", 1))
    expect(badge(lobby)).to_have_text("3")
    reader = site.context(READER, worker=0).new_page()

    # Opening the conversation reads both of its messages: 3 -> 1, here and on the other page.
    reader.goto(site.url(f"/rooms/{dm}/"))
    expect(reader.locator("#messages li.message .content")).to_have_text(["lunch?", "12:30 at the usual place"])
    expect(badge(reader)).to_have_text("1")
    expect(badge(lobby)).to_have_text("1")

    # In the room, the mention is far above what a fresh page shows: not read yet.
    reader.goto(site.url(f"/rooms/{room}/"))
    expect(reader.locator("#state")).to_have_attribute("data-state", "live")
    mention = reader.locator(f'#messages li.message[data-id="{mention_id}"]')
    expect(mention).not_to_be_in_viewport()
    reader.wait_for_timeout(1500)  # the page reports what it shows within 400 ms
    expect(badge(reader)).to_have_text("1")
    expect(badge(lobby)).to_have_text("1")

    # Scrolled to it, it is read, on both pages; none is left unread on the server either.
    mention.scroll_into_view_if_needed()
    expect(mention).to_be_in_viewport()
    expect(badge(reader)).to_be_hidden()
    expect(badge(lobby)).to_be_hidden()
    unread = site.api("GET", "/api/notifications/", READER)
    assert unread.status_code == 200 and unread.json()["notifications"] == [], unread.text
    for page in (lobby, reader):
        page.context.close()
