"""Private rooms managed from the pages (issue 22, item 4; docs/protocol.md, "Other endpoints"):
create one from the rooms page, see its members, invite someone, remove them (their open page
is closed live, on another worker), and leave."""

from __future__ import annotations

import re
import secrets

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import Site

pytestmark = pytest.mark.multiworker


def members(page: Page) -> list[str]:
    return page.locator("#members > li").evaluate_all("items => items.map((item) => item.dataset.user)")


def test_a_private_room_is_created_and_its_members_managed_from_the_pages(site: Site):
    alice = site.context("pages-alice", worker=0).new_page()
    alice.goto(site.url("/"))
    slug = f"secret-{secrets.token_hex(3)}"
    alice.get_by_label("Title").fill("Secret plans")
    alice.get_by_label("Address").fill(slug)
    alice.get_by_label(re.compile("^Private")).check()
    alice.get_by_role("button", name="Create room").click()
    expect(alice).to_have_url(site.url(f"/rooms/{slug}/"))
    expect(alice.locator("#room-title .tag")).to_have_text("private")
    members_list = alice.locator("#members")
    expect(members_list.locator("li")).to_have_count(1)
    expect(members_list.locator("li")).to_contain_text(["pages-alice (you)owner"])
    # Nobody else can see it yet.
    assert site.api("GET", f"/api/rooms/{slug}/messages", "pages-bob").status_code == 404

    invite = alice.get_by_role("textbox", name="Invite someone")
    invite.fill("nobody-called-this")
    invite.press("Enter")
    expect(alice.locator("#members-error")).to_have_text("There is nobody called nobody-called-this.")
    invite.fill("pages-bob")
    alice.get_by_role("button", name="Invite", exact=True).click()
    expect(alice.locator("#members-status")).to_have_text("pages-bob is a member now.")
    expect(members_list.locator("li")).to_have_count(2)
    assert members(alice) == ["pages-alice", "pages-bob"]

    # Bob finds it in his list (another worker), opens it and sees who is in it.
    bob = site.context("pages-bob", worker=1).new_page()
    bob.goto(site.url("/", 1))
    row = bob.locator(f'#rooms li[data-slug="{slug}"]')
    expect(row.locator(".tag")).to_have_text("private")
    row.get_by_role("link", name="Secret plans").click()
    expect(bob.locator("#state")).to_have_attribute("data-state", "live")
    expect(bob.locator("#members > li")).to_have_count(2)
    # Bob is not the owner: he may invite, not remove.
    expect(bob.locator("#members").get_by_role("button")).to_have_count(0)
    # Someone invited elsewhere shows up in his list by itself (it refreshes every 10 s).
    assert site.api("POST", f"/api/rooms/{slug}/members", "pages-alice", json={"user": "pages-mod"}).status_code == 201
    expect(bob.locator("#members > li")).to_have_count(3, timeout=15_000)
    assert site.api("DELETE", f"/api/rooms/{slug}/members/pages-mod", "pages-alice").status_code == 204
    expect(alice.locator("#members > li")).to_have_count(2, timeout=15_000)

    # The owner removes bob: his open page closes at once.
    alice.get_by_role("button", name="Remove pages-bob").click()
    expect(alice.locator("#members-status")).to_have_text("pages-bob was removed from the room.")
    expect(alice.locator("#members > li")).to_have_count(1)
    expect(bob.locator("#state")).to_have_text("You are no longer a member of this room (removed, or banned).")
    assert site.api("GET", f"/api/rooms/{slug}/messages", "pages-bob").status_code == 404

    # Carol is invited, then leaves by herself (a second press confirms).
    invite.fill("pages-carol")
    invite.press("Enter")
    expect(alice.locator("#members > li")).to_have_count(2)
    carol = site.context("pages-carol", worker=2).new_page()
    carol.goto(site.url(f"/rooms/{slug}/", 2))
    expect(carol.locator("#state")).to_have_attribute("data-state", "live")
    leave = carol.locator("#leave")
    leave.click()
    expect(leave).to_have_text(re.compile("^Leave\\? "))
    leave.click()
    expect(carol).to_have_url(site.url("/", 2))
    expect(carol.locator("#rooms > li").first).to_be_visible()
    expect(carol.locator(f'#rooms li[data-slug="{slug}"]')).to_have_count(0)
    alice.evaluate("document.dispatchEvent(new Event('visibilitychange'))")  # the list refreshes when looked at
    expect(alice.locator("#members > li")).to_have_count(1)
    for page in (alice, bob, carol):
        page.context.close()


def test_staff_who_are_members_may_remove_anyone(site: Site):
    slug = f"staffed-{secrets.token_hex(3)}"
    created = site.api("POST", "/api/rooms/", "pages-alice", json={"slug": slug, "title": "Staffed", "private": True})
    assert created.status_code == 201, created.text
    for user in ("pages-mod", "pages-bob"):
        added = site.api("POST", f"/api/rooms/{slug}/members", "pages-alice", json={"user": user})
        assert added.status_code == 201, added.text
    mod = site.context("pages-mod").new_page()
    mod.goto(site.url(f"/rooms/{slug}/"))
    expect(mod.locator("#members > li")).to_have_count(3)
    mod.get_by_role("button", name="Remove pages-bob").click()
    expect(mod.locator("#members > li")).to_have_count(2)
    assert [m["username"] for m in site.api("GET", f"/api/rooms/{slug}/members", "pages-alice").json()["members"]] == [
        "pages-alice",
        "pages-mod",
    ]
    mod.context.close()
