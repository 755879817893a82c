"""The smaller things a user trips on (issue 22, item 8): a ban says why and until when, and a
user banned site-wide finds "Summarize this room" disabled instead of failing."""

from __future__ import annotations

import re

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
        # its end as the reader's clock shows it ("14:05", or "11:43 PM" in en-US), not "until lifted"
        until = re.compile(r"^You are banned from this room until \d{1,2}:\d\d\b.*\. Reason: spamming links$")
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
