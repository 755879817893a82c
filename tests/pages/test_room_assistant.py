"""The assistant in a room, in Chromium (issue 19; docs/protocol.md, "The assistant in a room"):
the owner turns it on from the page, two people on two workers watch the same reply grow, one
reloads in the middle and sees it go on from where it was, and the asker stops the next one."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import Site, open_room, screenshot, send

pytestmark = pytest.mark.multiworker

# The echo model answers with the question's words, one every 20 ms: about five seconds.
WORDS = 250
QUESTION = "@assistant " + " ".join(f"w{i}" for i in range(WORDS))
REPLY = "li.message[data-user=assistant]"


def reply_text(page: Page) -> str:
    return page.locator(f"{REPLY} .content").last.inner_text()


def test_two_people_on_two_workers_watch_one_reply_and_a_reload_picks_it_up_mid_way(site: Site):
    slug = site.new_room("Ask the assistant")
    owner = open_room(site, "pages-alice", slug, 0)
    toggle = owner.get_by_label("Assistant answers @assistant")
    expect(toggle).not_to_be_checked()
    toggle.check()
    expect(toggle).to_be_enabled()
    [room] = [r for r in site.api("GET", "/api/rooms/", "pages-alice").json()["rooms"] if r["slug"] == slug]
    assert (room["assistant"], room["assistant_model"]) == (True, "echo")
    member = open_room(site, "pages-bob", slug, 1)
    expect(member.get_by_label("Assistant answers @assistant")).to_have_count(0)  # not the owner's, nor staff

    send(owner, QUESTION)
    for page in (owner, member):
        expect(page.locator(f"{REPLY}.streaming")).to_have_count(1)
        expect(page.locator(f"{REPLY} .content").last).to_contain_text("w40")
    screenshot(owner, "room-assistant")
    member.reload()
    expect(member.locator("#state")).to_have_attribute("data-state", "live")
    expect(member.locator(f"{REPLY}.streaming")).to_have_count(1)  # still growing after the reload
    assert "w40" in reply_text(member), "the content so far, at once"
    for page in (owner, member):
        expect(page.locator(f"{REPLY}.streaming")).to_have_count(0, timeout=20_000)
        expect(page.locator(f"{REPLY} .content").last).to_contain_text(f"w{WORDS - 1}")
    assert reply_text(owner) == reply_text(member)
    assert reply_text(owner).split()[-WORDS:] == [f"w{i}" for i in range(WORDS)], "every word, once, in order"
    expect(owner.locator(f"{REPLY} .reply-state")).to_have_count(0)  # it simply finished

    # The asker stops the next reply from its Stop button; everyone sees it stopped.
    send(owner, QUESTION)
    expect(owner.locator(f"{REPLY}.streaming")).to_have_count(1)
    expect(member.locator(f"{REPLY}.streaming")).to_have_count(1)
    expect(member.locator(f"{REPLY}.streaming").get_by_role("button", name="Stop the reply")).to_have_count(0)
    owner.locator(f"{REPLY}.streaming").get_by_role("button", name="Stop the reply").click()
    for page in (owner, member):
        expect(page.locator(f"{REPLY}.streaming")).to_have_count(0)
        expect(page.locator(f"{REPLY} .reply-state").last).to_have_text("Stopped.")
    assert reply_text(owner) == reply_text(member)

    # A model that reasons: its reasoning is a collapsed "Thinking" above the reply, for everyone.
    send(owner, "/think @assistant " + " ".join(f"t{i}" for i in range(WORDS)))
    thinking = member.locator(f"{REPLY}.streaming details.thinking")
    expect(thinking).to_have_count(1)
    expect(thinking.locator(".thinking-text")).not_to_be_visible()
    thinking.locator("summary").click()
    expect(thinking.locator(".thinking-text")).to_contain_text("Echoing these words: @assistant t0")
    expect(member.locator(f"{REPLY}.streaming")).to_have_count(0, timeout=20_000)
    for page in (owner, member):
        page.context.close()
