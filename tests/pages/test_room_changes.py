"""Room changes in a real browser (issue 17; docs/protocol.md, "Room changes"): two people on
two workers edit, react, reply and remove; the one whose connection drops in the middle comes
back to exactly the other's room. Up-arrow edits, older history pages in as you scroll up, the
"new messages" divider and the rooms list's unread badges follow the read marker, and
@mentions complete from the keyboard."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.support.browser import Site, open_room, screenshot, send, watch_dialogs

pytestmark = pytest.mark.multiworker

# Each message as a page shows it, ids included, everything but what depends on who is looking
# (which reactions are "mine"): two pages that agree on this show the same room.
SNAPSHOT = """list => [...list.querySelectorAll(":scope > li.message:not(.pending)")].map(item => ({
    id: Number(item.dataset.id),
    user: item.dataset.user,
    removed: item.classList.contains("removed"),
    content: item.querySelector(":scope > .content")?.innerText ?? null,
    edited: Boolean(item.querySelector(":scope > .meta .edited")),
    quote: item.querySelector(":scope > .quote")?.innerText ?? null,
    reactions: [...item.querySelectorAll(":scope > .reactions > .reaction")].map(chip => [chip.dataset.emoji, chip.title]),
}))"""


def message(page: Page, text: str) -> Locator:
    """The message whose whole text is ``text``."""
    exactly = page.locator(".content", has_text=re.compile(rf"^\s*{re.escape(text)}\s*$"))
    return page.locator("#messages li.message:not(.pending)", has=exactly)


def snapshot(page: Page) -> list[dict[str, Any]]:
    return page.locator("#messages").evaluate(SNAPSHOT)


def edit(page: Page, text: str, new_text: str) -> None:
    message(page, text).get_by_role("button", name="Edit").click()
    editor = page.get_by_role("textbox", name="Edit message")
    expect(editor).to_be_focused()
    editor.fill(new_text)
    editor.press("Enter")


def react(page: Page, text: str, emoji: str) -> None:
    item = message(page, text)
    item.get_by_role("button", name="Add reaction").click()
    item.get_by_role("button", name=f"React with {emoji}").click()


def remove(page: Page, text: str) -> None:
    item = message(page, text)
    item.get_by_role("button", name="Delete").click()
    item.get_by_role("button", name="Yes, delete").click()


def reply(page: Page, text: str, answer: str) -> None:
    message(page, text).get_by_role("button", name="Reply").click()
    expect(page.locator("#replying")).to_contain_text("Replying to")
    send(page, answer)


def test_two_people_see_every_change_and_converge_after_a_dropped_connection(site: Site):
    slug = site.new_room("Changes")
    alice = open_room(site, "pages-alice", slug, worker=0)
    bob = open_room(site, "pages-bob", slug, worker=1)
    dialogs = watch_dialogs(alice) + watch_dialogs(bob)
    bob_sockets: list[str] = []
    bob.on("websocket", lambda ws: bob_sockets.append(ws.url))
    for text in ("first", "second", "oops", "third"):
        send(alice, text)
    for page in (alice, bob):
        expect(page.locator("#messages li.message .content")).to_have_text(["first", "second", "oops", "third"])

    # Live, each change reaches the other worker's page.
    edit(alice, "first", "first, **edited**")
    expect(message(bob, "first, edited").locator(".edited")).to_have_text("(edited)")
    expect(message(bob, "first, edited").locator(".content strong")).to_have_text("edited")

    react(alice, "second", "👍")
    react(bob, "second", "🎉")
    for page in (alice, bob):
        expect(message(page, "second").locator(".reaction")).to_have_text(["👍 1", "🎉 1"])
    thumbs = message(bob, "second").locator('.reaction[data-emoji="👍"]')
    expect(thumbs).to_have_attribute("aria-pressed", "false")  # alice's, not bob's
    expect(thumbs).to_have_attribute("title", "pages-alice")
    expect(message(alice, "second").locator('.reaction[data-emoji="👍"]')).to_have_attribute("aria-pressed", "true")
    thumbs.click()  # bob joins in: a chip toggles his reaction
    expect(message(alice, "second").locator('.reaction[data-emoji="👍"]')).to_have_text("👍 2")
    expect(message(alice, "second").locator('.reaction[data-emoji="👍"]')).to_have_attribute("title", "pages-alice, pages-bob")

    reply(alice, "first, edited", "re: first")
    reply(bob, "second", "re: second")
    for page in (alice, bob):
        expect(message(page, "re: first").locator(".quote")).to_contain_text("pages-alice first, edited")
        expect(message(page, "re: second").locator(".quote")).to_contain_text("pages-alice second")

    remove(alice, "oops")
    for page in (alice, bob):  # the author sees the placeholder too
        expect(page.locator("#messages li.message.removed .content")).to_have_text(["Message removed"])
    oops_id = alice.locator("#messages li.message.removed").get_attribute("data-id")
    expect(alice.get_by_role("textbox", name="Message")).to_be_focused()

    # Bob's connection drops; alice and a moderator change the room meanwhile.
    bob.context.set_offline(True)
    expect(bob.locator("#state")).not_to_have_attribute("data-state", "live")
    edit(alice, "third", "third, edited offline")
    remove(alice, "first, edited")
    react(alice, "second", "❤️")
    react(alice, "second", "👍")  # taken back
    send(alice, "while you were away")
    restored = site.api("POST", f"/api/rooms/{slug}/messages/{oops_id}/restore", "pages-mod")
    assert restored.status_code == 200, restored.text
    expect(message(alice, "oops")).to_be_visible()
    expect(message(alice, "re: first").locator(".quote")).to_have_text("In reply to a removed message")
    expect(message(alice, "second").locator(".reaction")).to_have_text(["👍 1", "❤️ 1", "🎉 1"])
    expect(alice.locator("#messages li.message .content")).to_have_count(7)
    bob.wait_for_timeout(300)
    expect(message(bob, "third")).not_to_contain_text("offline")  # nothing reached bob

    bob.context.set_offline(False)
    expect(bob.locator("#state")).to_have_attribute("data-state", "live")
    expected = [
        "Message removed",
        "second",
        "oops",
        "third, edited offline",
        "re: first",
        "re: second",
        "while you were away",
    ]
    for page in (alice, bob):
        expect(page.locator("#messages li.message .content")).to_have_text(expected)
    expect(message(bob, "re: first").locator(".quote")).to_have_class(re.compile(r"\bremoved\b"))
    expect(message(bob, "second").locator(".reaction")).to_have_text(["👍 1", "❤️ 1", "🎉 1"])
    assert snapshot(bob) == snapshot(alice), "after the drop bob's room is exactly alice's"
    ids = [item["id"] for item in snapshot(bob)]
    assert ids == sorted(set(ids)), "each message once, in id order"
    assert any(re.search(r"\?last_seq=[1-9]\d*&last_id=[1-9]\d*$", url) for url in bob_sockets), bob_sockets
    bob.mouse.move(900, 700)  # no message hovered: their controls hide
    bob.locator("#messages").evaluate("list => { list.scrollTop = 0; }")  # the start: nothing older to load
    expect(bob.locator("#history-start")).to_be_visible()
    screenshot(bob, "room-changes")

    # The next change after the resume is live again, on both.
    send(bob, "back")
    for page in (alice, bob):
        expect(page.locator("#messages li.message .content").last).to_have_text("back")
    assert dialogs == []
    for page in (alice, bob):
        page.context.close()


def test_up_arrow_edits_your_last_message(site: Site):
    slug = site.new_room("Up arrow")
    alice = open_room(site, "pages-alice", slug, worker=0)
    bob = open_room(site, "pages-bob", slug, worker=2)
    box = alice.get_by_role("textbox", name="Message")
    # Each message committed before the next is sent, so the room's order is the order
    # the test expects (sent at once from two workers, either may commit first).
    send(alice, "my first")
    expect(alice.locator("#messages li.message:not(.pending) .content")).to_have_count(1)
    send(bob, "bob's")
    expect(alice.locator("#messages li.message:not(.pending) .content")).to_have_count(2)
    send(alice, "my lsat")  # a typo to fix
    expect(alice.locator("#messages li.message:not(.pending) .content")).to_have_count(3)
    expect(box).to_be_focused()  # sending keeps the focus in the composer

    box.press("ArrowUp")
    editor = alice.get_by_role("textbox", name="Edit message")
    expect(editor).to_be_focused()
    expect(editor).to_have_value("my lsat")
    editor.fill("my last")
    editor.press("Enter")
    expect(box).to_be_focused()
    for page in (alice, bob):
        expect(page.locator("#messages li.message .content")).to_have_text(["my first", "bob's", "my last"])
        expect(message(page, "my last").locator(".edited")).to_be_visible()

    # Escape cancels; Shift+Enter is a new line in the edit; up-arrow in a box with text moves the caret only.
    box.press("ArrowUp")
    editor.fill("never saved")
    editor.press("Escape")
    expect(editor).to_have_count(0)
    expect(box).to_be_focused()
    expect(message(alice, "my last")).to_be_visible()
    box.fill("draft")
    box.press("ArrowUp")
    expect(editor).to_have_count(0)
    # Bob's messages have no Edit control for alice, and only their own for bob.
    expect(message(alice, "bob's").get_by_role("button", name="Edit")).to_have_count(0)
    expect(message(alice, "bob's").get_by_role("button", name="Delete")).to_have_count(0)
    expect(message(bob, "bob's").get_by_role("button", name="Edit")).to_have_count(1)
    for page in (alice, bob):
        page.context.close()


def test_scrolling_to_the_top_loads_older_history_in_place(site: Site):
    slug = site.new_room("Long history")
    for i in range(1, 121):
        posted = site.api("POST", f"/api/rooms/{slug}/messages", "pages-carol", json={"content": f"history {i}"})
        assert posted.status_code == 201, posted.text
    page = open_room(site, "pages-alice", slug, worker=1)
    texts = page.locator("#messages li.message .content")
    expect(texts).to_have_count(50)  # the newest page
    expect(texts.first).to_have_text("history 71")
    expect(page.locator("#history-start")).to_be_hidden()

    anchor = message(page, "history 71")
    page.locator("#messages").evaluate("list => { list.scrollTop = 0; }")
    expect(texts).to_have_count(100)
    expect(texts.first).to_have_text("history 21")
    # What was at the top stays where it was: the older page went in above it.
    assert page.locator("#messages").evaluate("list => list.scrollTop") > 500
    top = page.locator("#messages").evaluate("list => list.getBoundingClientRect().top")
    assert abs(anchor.evaluate("item => item.getBoundingClientRect().top") - top) < 120

    page.locator("#messages").evaluate("list => { list.scrollTop = 0; }")
    expect(texts).to_have_count(120)
    expect(page.locator("#history-start")).to_have_text("This is the start of the room.")
    expect(page.get_by_role("button", name="Load older messages")).to_be_hidden()
    assert texts.all_inner_texts() == [f"history {i}" for i in range(1, 121)]
    page.context.close()


def test_unread_badges_and_the_new_messages_divider_follow_the_read_marker(site: Site):
    slug = site.new_room("Unread")
    post = lambda text: site.api("POST", f"/api/rooms/{slug}/messages", "pages-alice", json={"content": text})  # noqa: E731
    assert post("one").status_code == 201
    bob = open_room(site, "pages-bob", slug, worker=1)  # reading "one" moves his marker there
    expect(bob.locator("#messages li.message .content")).to_have_text(["one"])
    expect(bob.locator("#messages li.divider")).to_have_count(0)  # nothing unread
    bob.wait_for_timeout(500)  # the page says at once how far he has read
    bob.goto(site.url("/", 1))
    row = bob.locator(f'#rooms li[data-slug="{slug}"]')
    expect(row.get_by_role("link", name="Unread")).to_be_visible()
    expect(row.locator(".badge")).to_have_count(0)

    ids = [post(text).json()["id"] for text in ("two", "three")]
    expect(row.locator(".badge")).to_have_text("2", timeout=15_000)  # the list polls
    row.get_by_role("link", name="Unread").click()
    expect(bob.locator("#state")).to_have_attribute("data-state", "live")
    expect(bob.locator("#messages > li:not(.history)")).to_have_count(4)
    expect(bob.locator("#messages li.divider")).to_have_text("New messages")
    assert bob.locator("#messages > li.message, #messages > li.divider").evaluate_all(
        "items => items.map(i => i.classList.contains('divider') ? '--' : i.querySelector('.content').innerText)"
    )[:4] == ["one", "--", "two", "three"]
    bob.wait_for_timeout(1000)  # the page says how far he has read
    bob.go_back()
    expect(bob.locator(f'#rooms li[data-slug="{slug}"] .badge')).to_have_count(0, timeout=15_000)

    # Read on another device: the divider of a tab in the background follows the marker.
    four = post("four").json()["id"]
    background = site.context("pages-bob", worker=2).new_page()
    background.add_init_script("document.hasFocus = () => false")  # a tab nobody looks at reads nothing
    background.goto(site.url(f"/rooms/{slug}/", 2))
    expect(background.locator("#state")).to_have_attribute("data-state", "live")
    expect(background.locator("#messages li.divider + li.message .content")).to_have_text("four")
    assert site.api("POST", f"/api/rooms/{slug}/read", "pages-bob", json={"id": four}).status_code == 204  # his phone
    expect(background.locator("#messages li.divider")).to_have_count(0)
    assert ids[-1] < four
    background.context.close()
    bob.context.close()


def test_mentions_complete_from_the_keyboard(site: Site):
    slug = site.new_room("Mentions")
    bob = open_room(site, "pages-bob", slug, worker=1)
    alice = open_room(site, "pages-alice", slug, worker=0)
    expect(alice.locator("#presence li")).to_have_count(2)
    box = alice.get_by_role("textbox", name="Message")
    box.press_sequentially("lunch? @pages-", delay=10)
    options = alice.get_by_role("listbox", name="People to mention").get_by_role("option")
    expect(options).to_have_text(["@pages-bob"])  # online; never yourself
    expect(box).to_have_attribute("aria-activedescendant", "mention-list-0")
    box.press("Escape")
    expect(options).to_have_count(0)
    box.press_sequentially("b", delay=10)
    expect(options).to_have_text(["@pages-bob"])
    box.press("Tab")
    expect(box).to_have_value("lunch? @pages-bob ")
    expect(box).to_be_focused()
    box.press_sequentially("at noon", delay=10)
    box.press("Enter")
    item = message(bob, "lunch? @pages-bob at noon")
    expect(item.locator(".mention")).to_have_text("@pages-bob")
    expect(item).to_have_class(re.compile(r"\bmentions-me\b"))
    for page in (alice, bob):
        page.context.close()
