"""The room pages in a real browser, the way people use them: sign up, log in, list and
create rooms, chat live across workers, ride out a dropped connection, see moderation live."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, WebSocketRoute, expect

from tests.support.browser import PASSWORD, Site, log_in, open_room, screenshot, send, watch_dialogs

pytestmark = pytest.mark.multiworker


def message_texts(page: Page) -> list[str]:
    return page.locator("#messages li.message:not(.pending) .content").all_inner_texts()


def test_sign_up_log_out_and_log_in_again(site: Site):
    context = site.context()
    page = context.new_page()
    page.goto(site.url("/"))
    expect(page.get_by_role("link", name="Sign up").first).to_be_visible()
    page.goto(site.url("/accounts/login/"))
    screenshot(page, "login")

    page.goto(site.url("/accounts/signup/"))
    page.get_by_label("Username").fill("pages-newcomer")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page).to_have_url(site.url("/"))
    expect(page.locator("header .who")).to_have_text("pages-newcomer")

    page.get_by_role("button", name="Log out").click()
    expect(page.locator("header .who")).to_have_count(0)
    page.goto(site.url("/accounts/login/"))
    page.get_by_label("Username").fill("pages-newcomer")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("correct username and password")
    log_in(page, site.url("/accounts/login/", 1), "pages-newcomer")
    context.close()


def test_room_list_shows_live_counts_and_creates_a_room(site: Site):
    lobby = site.new_room("Lobby")
    site.new_room("Book club")
    watcher = open_room(site, "pages-bob", lobby, worker=2)
    page = site.context("pages-alice").new_page()
    page.goto(site.url("/"))
    row = page.locator(f'#rooms li[data-slug="{lobby}"]')
    expect(row.get_by_role("link", name="Lobby")).to_be_visible()
    expect(row.locator(".online")).to_have_text("1 online")  # bob, on another worker
    watcher.context.close()
    expect(row.locator(".online")).to_have_text("0 online", timeout=15_000)  # polled, not reloaded

    page.get_by_label("Title").fill("Design review")
    expect(page.get_by_label("Address")).to_have_value("design-review")
    page.get_by_role("button", name="Create room").click()
    expect(page).to_have_url(site.url("/rooms/design-review/"))
    expect(page.get_by_role("heading", name="Design review")).to_be_visible()
    expect(page.locator("#state")).to_have_attribute("data-state", "live")

    page.goto(site.url("/"))
    page.get_by_label("Title").fill("Design review")
    page.get_by_role("button", name="Create room").click()
    expect(page.locator("#create-error")).to_have_text("A room at /rooms/design-review/ exists already.")
    expect(page.locator('#rooms li[data-slug="design-review"] .online')).to_have_text("0 online")
    page.context.close()


def test_a_direct_message_opened_from_the_room_list(site: Site):
    bob = site.context("pages-bob", worker=1).new_page()
    bob.goto(site.url("/", 1))
    alice = site.context("pages-alice").new_page()
    alice.goto(site.url("/"))
    alice.get_by_label("Username").fill("pages-bob")
    alice.get_by_role("button", name="Open conversation").click()
    expect(alice).to_have_url(re.compile(r"/rooms/dm-[0-9a-f]+/$"))
    expect(alice.get_by_role("heading", name="pages-bob direct")).to_be_visible()  # named as in the list
    expect(alice.locator("#state")).to_have_attribute("data-state", "live")
    send(alice, "psst, lunch at noon?")

    dm = bob.locator("#dms li", has_text="pages-alice")
    expect(dm.locator(".badge")).to_have_text("1", timeout=15_000)  # the list polls
    expect(bob.locator("#notifications-count")).to_be_visible()  # a dm notification, live
    screenshot(bob, "rooms")
    dm.get_by_role("link", name="pages-alice").click()
    expect(bob.locator("#messages li.message .content")).to_have_text(["psst, lunch at noon?"])
    bob.wait_for_timeout(1500)  # the page reports how far it has read
    bob.go_back()
    expect(bob.locator("#dms li", has_text="pages-alice")).to_be_visible()
    expect(bob.locator("#dms li", has_text="pages-alice").locator(".badge")).to_have_count(0)
    for page in (alice, bob):
        page.context.close()


def test_two_people_chat_live_on_two_workers(site: Site):
    slug = site.new_room("Weekend plans")
    alice = open_room(site, "pages-alice", slug, worker=0)
    bob = open_room(site, "pages-bob", slug, worker=1)
    for page in (alice, bob):
        expect(page.locator("#presence li")).to_have_text(
            ["pages-alice" + (" (you)" if page is alice else ""), "pages-bob" + (" (you)" if page is bob else "")]
        )

    box = alice.get_by_role("textbox", name="Message")
    box.press_sequentially("Anyone up for a hike", delay=20)
    expect(bob.locator("#typing")).to_have_text("pages-alice is typing…")
    box.press("Enter")
    expect(box).to_have_value("")
    for page in (alice, bob):
        expect(page.locator("#messages li.message .content")).to_have_text(["Anyone up for a hike"])
        expect(page.locator("#messages li.message .author")).to_have_text(["pages-alice"])
    expect(bob.locator("#typing")).to_have_text("")

    # Shift+Enter is a new line in the same message; Enter sends.
    reply = bob.get_by_role("textbox", name="Message")
    reply.press_sequentially("Yes!", delay=10)
    reply.press("Shift+Enter")
    reply.press_sequentially("Saturday morning?", delay=10)
    reply.press("Enter")
    expected = ["Anyone up for a hike", "Yes!\nSaturday morning?", "Saturday at 9, meet at the station"]
    # Alice answers what she has read: sent at once, hers could be committed first (on a
    # busy machine), and both pages would rightly show it first.
    expect(alice.locator("#messages li.message .content")).to_have_text(expected[:2])
    send(alice, "Saturday at 9, meet at the station")
    for page in (alice, bob):
        expect(page.locator("#messages li.message .content")).to_have_text(expected)
        expect(page.locator("#messages li.message time")).to_have_count(3)
    send(bob, "Sounds good, see you there")
    expect(alice.locator("#messages li.message .content")).to_have_count(4)

    # A third page, a phone on the third worker, reads the same four (its screenshots, light and
    # dark, come from tests/pages/test_screenshots.py).
    phone = site.context("pages-alice", viewport={"width": 390, "height": 780}, is_mobile=True, has_touch=True).new_page()
    phone.goto(site.url(f"/rooms/{slug}/", 2))
    expect(phone.locator("#messages li.message")).to_have_count(4)
    expect(phone.get_by_role("button", name="Send")).to_be_in_viewport()
    for page in (alice, bob, phone):
        page.context.close()


def test_missed_messages_appear_once_and_in_order_after_going_offline(site: Site):
    slug = site.new_room("Offline")
    alice = open_room(site, "pages-alice", slug, worker=0)
    bob = open_room(site, "pages-bob", slug, worker=1)
    sockets: list[str] = []
    bob.on("websocket", lambda ws: sockets.append(ws.url))
    send(alice, "before the drop")
    expect(bob.locator("#messages li.message .content")).to_have_text(["before the drop"])

    bob.context.set_offline(True)
    expect(bob.locator("#state")).not_to_have_attribute("data-state", "live")
    for i in range(1, 6):
        send(alice, f"missed {i}")
    expect(alice.locator("#messages li.message:not(.pending)")).to_have_count(6)
    bob.wait_for_timeout(300)
    assert message_texts(bob) == ["before the drop"]

    bob.context.set_offline(False)
    expected = ["before the drop", *(f"missed {i}" for i in range(1, 6))]
    expect(bob.locator("#state")).to_have_attribute("data-state", "live")
    expect(bob.locator("#messages li.message .content")).to_have_text(expected)
    send(alice, "after")
    expect(bob.locator("#messages li.message .content")).to_have_text([*expected, "after"])
    ids = [int(i) for i in bob.locator("#messages li.message").evaluate_all("items => items.map(i => i.dataset.id)")]
    assert ids == sorted(set(ids)), "each message once, in id order"
    resumed = r"\?last_seq=[1-9]\d*&last_id=[1-9]\d*$"  # the change counter, and last_id for older servers
    assert sockets and all(re.search(resumed, url) for url in sockets), f"resumed with last_seq and last_id: {sockets}"
    for page in (alice, bob):
        page.context.close()


def test_a_removed_message_becomes_a_placeholder_live_and_a_moderator_restores_it(site: Site):
    slug = site.new_room("Moderated")
    alice = open_room(site, "pages-alice", slug, worker=0)
    bob = open_room(site, "pages-bob", slug, worker=1)
    send(alice, "keep this")
    send(alice, "buy cheap watches at spam.example")
    send(alice, "and this")
    for page in (alice, bob):
        expect(page.locator("#messages li.message .content")).to_have_count(3)
    spam = bob.locator("#messages li.message", has_text="cheap watches")
    message_id = spam.get_attribute("data-id")

    response = site.api("DELETE", f"/api/rooms/{slug}/messages/{message_id}", "pages-mod", worker=2)
    assert response.status_code == 204, response.text
    for page in (alice, bob):  # its author sees the placeholder too
        expect(page.locator("#messages li.message .content")).to_have_text(["keep this", "Message removed", "and this"])
        expect(page.locator(f'#messages li.message[data-id="{message_id}"]')).to_have_class(re.compile(r"\bremoved\b"))
        assert page.get_by_text("cheap watches").count() == 0
    expect(alice.locator(f'#messages li.message[data-id="{message_id}"]').get_by_role("button", name="Restore")).to_have_count(0)

    # Restored by a moderator (over REST, then with the page's own Delete and Restore), it is
    # back for everyone, on a page that never had it too.
    moderator = open_room(site, "pages-mod", slug, worker=2)
    expect(moderator.locator("#messages li.message .content")).to_have_text(["keep this", "and this"])  # a fresh page
    restored = site.api("POST", f"/api/rooms/{slug}/messages/{message_id}/restore", "pages-mod")
    assert restored.status_code == 200, restored.text
    for page in (alice, bob, moderator):
        expect(page.locator("#messages li.message .content")).to_have_text(
            ["keep this", "buy cheap watches at spam.example", "and this"]
        )
    moderator.locator("#messages li.message", has_text="cheap watches").get_by_role("button", name="Delete").click()
    moderator.get_by_role("button", name="Yes, delete").click()
    for page in (alice, bob, moderator):
        expect(page.locator("#messages li.message .content")).to_have_text(["keep this", "Message removed", "and this"])
    moderator.locator("#messages li.removed").get_by_role("button", name="Restore").click()
    for page in (alice, bob):
        expect(page.locator("#messages li.message .content")).to_have_text(
            ["keep this", "buy cheap watches at spam.example", "and this"]
        )
    moderator.context.close()

    # A notice and a lock arrive live too; the locked room says so and disables the composer.
    assert site.api("POST", f"/api/rooms/{slug}/notice", "pages-mod", json={"content": "Be kind"}).status_code == 202
    expect(bob.locator("#messages li.notice")).to_have_text("Notice: Be kind")
    assert site.api("POST", f"/api/rooms/{slug}/lock", "pages-mod", json={"locked": True}).status_code == 200
    expect(bob.locator("#locked")).to_be_visible()
    expect(bob.get_by_role("button", name="Send")).to_be_disabled()
    assert site.api("POST", f"/api/rooms/{slug}/lock", "pages-mod", json={"locked": False}).status_code == 200
    expect(bob.locator("#locked")).to_be_hidden()
    send(bob, "unlocked")
    expect(alice.locator("#messages li.message .content")).to_have_text(
        ["keep this", "buy cheap watches at spam.example", "and this", "unlocked"]
    )
    for page in (alice, bob):
        page.context.close()


def test_a_rate_limit_says_when_sending_works_again(site: Site):
    """The cluster's limit is set high for the other tests, so the server's answer is played
    here by a route in front of the socket: every frame passes through except these."""
    slug = site.new_room("Rate limited")

    def relay(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_page(text: str | bytes) -> None:
            frame = json.loads(text)
            if frame.get("type") == "message" and frame["content"].startswith("too fast"):
                limited = {"type": "error", "code": "rate_limited", "detail": "too many messages", "nonce": frame["nonce"]}
                ws.send(json.dumps({**limited, "retry_after": 2.5}))
            else:
                server.send(text)

        ws.on_message(from_page)

    page = site.context("pages-alice").new_page()
    page.route_web_socket(re.compile(r"/ws/rooms/"), relay)
    page.goto(site.url(f"/rooms/{slug}/"))
    expect(page.locator("#state")).to_have_attribute("data-state", "live")
    send(page, "too fast, surely")
    expect(page.get_by_role("alert")).to_contain_text(re.compile(r"You can send again in [1-3] s"))
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    expect(page.get_by_role("textbox", name="Message")).to_have_value("too fast, surely")  # given back, not lost
    expect(page.locator("#messages li.message")).to_have_count(0)
    expect(page.get_by_role("alert")).to_have_text("You can send again now.", timeout=5000)
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    send(page, "fine now")
    expect(page.locator("#messages li.message:not(.pending) .content")).to_have_text(["fine now"])
    page.context.close()


def test_markup_in_a_message_is_shown_as_text_and_never_runs(site: Site):
    slug = site.new_room("Markup")
    alice = open_room(site, "pages-alice", slug, worker=0)
    bob = open_room(site, "pages-bob", slug, worker=2)
    alice_dialogs, bob_dialogs = watch_dialogs(alice), watch_dialogs(bob)
    hostile = (
        '<script>window.pwned = 1; alert("script")</script><img src=x onerror="window.pwned = 2; alert(\'img\')"> <b>bold</b>'
    )
    send(alice, hostile)
    for page in (alice, bob):
        expect(page.locator("#messages li.message .content")).to_have_text([hostile])
        expect(page.get_by_text('<img src=x onerror="window.pwned')).to_be_visible()
        assert page.locator("#messages img, #messages script, #messages b").count() == 0
        assert page.evaluate("window.pwned") is None
    # The backlog (a reload) renders it as text too.
    bob.reload()
    expect(bob.locator("#messages li.message .content")).to_have_text([hostile])
    assert bob.locator("#messages img").count() == 0 and bob.evaluate("window.pwned") is None
    assert alice_dialogs == [] and bob_dialogs == []
    for page in (alice, bob):
        page.context.close()
