"""The outbox (issue 22, item 5): a message written while the room is not connected waits,
shown as pending with its nonce, and is sent once when the room is back; a message the room
refuses stays in the list with its reason and Retry; no "Not connected" error outlives the
connection's return."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Page, WebSocket, expect

from tests.support.browser import Site

pytestmark = pytest.mark.multiworker


def open_room(site: Site, user: str, slug: str, worker: int, sent: list[dict] | None = None) -> Page:
    """The room page; with ``sent``, every message frame the page sends on any of its sockets."""
    page = site.context(user, worker=worker).new_page()
    if sent is not None:

        def watch(ws: WebSocket) -> None:
            def record(payload: str | bytes) -> None:
                frame = json.loads(payload)
                if frame.get("type") == "message":
                    sent.append(frame)

            ws.on("framesent", record)

        page.on("websocket", watch)
    page.goto(site.url(f"/rooms/{slug}/", worker))
    expect(page.locator("#state")).to_have_attribute("data-state", "live")
    return page


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def delivered(page: Page):
    return page.locator("#messages li.message:not(.pending):not(.failed) .content")


def test_messages_written_offline_are_queued_and_sent_once_when_back(site: Site):
    slug = site.new_room("Outbox")
    sent: list[dict] = []
    alice = open_room(site, "pages-alice", slug, worker=0, sent=sent)
    bob = open_room(site, "pages-bob", slug, worker=1)
    send(alice, "before the drop")
    expect(delivered(bob)).to_have_text(["before the drop"])

    alice.context.set_offline(True)
    expect(alice.locator("#state")).not_to_have_attribute("data-state", "live")
    send(alice, "written offline 1")
    send(alice, "written offline 2")
    queued = alice.locator("#messages li.message.pending.queued")
    expect(queued.locator(".content")).to_have_text(["written offline 1", "written offline 2"])
    expect(queued.locator(".sending")).to_have_text(["waiting for the connection…"] * 2)
    nonces = queued.evaluate_all("items => items.map((item) => item.dataset.nonce)")
    assert len(set(nonces)) == 2 and all(nonces), nonces
    expect(alice.get_by_role("textbox", name="Message")).to_have_value("")  # taken by the outbox
    expect(alice.locator("#error")).to_be_empty()  # nothing to apologise for: it will be sent

    alice.context.set_offline(False)
    expect(alice.locator("#state")).to_have_attribute("data-state", "live")
    expected = ["before the drop", "written offline 1", "written offline 2"]
    for page in (alice, bob):
        expect(delivered(page)).to_have_text(expected)
    expect(alice.locator("#messages li.pending")).to_have_count(0)
    expect(alice.locator("#error")).to_be_empty()
    alice.wait_for_timeout(1000)  # a second copy would have come by now
    expect(delivered(bob)).to_have_text(expected)
    offline_frames = [frame for frame in sent if frame["content"].startswith("written offline")]
    assert [(f["content"], f["nonce"]) for f in offline_frames] == list(
        zip(["written offline 1", "written offline 2"], nonces, strict=True)
    ), "each queued message sent once, with its nonce, in order"

    # Refused when it is finally sent (the room was locked meanwhile): it stays, with Retry.
    alice.context.set_offline(True)
    expect(alice.locator("#state")).not_to_have_attribute("data-state", "live")
    locked = site.api("POST", f"/api/rooms/{slug}/lock", "pages-mod", json={"locked": True})
    assert locked.status_code == 200, locked.text
    send(alice, "written while locked")
    expect(alice.locator("#messages li.queued .content")).to_have_text(["written while locked"])
    alice.context.set_offline(False)
    failed = alice.locator("#messages li.message.failed")
    expect(failed.locator(".content")).to_have_text(["written while locked"])
    expect(failed.locator(".sending")).to_contain_text("not sent: This room is locked")
    assert site.api("POST", f"/api/rooms/{slug}/lock", "pages-mod", json={"locked": False}).status_code == 200
    expect(alice.locator("#locked")).to_be_hidden()
    failed.get_by_role("button", name="Retry").click()
    for page in (alice, bob):
        expect(delivered(page)).to_have_text([*expected, "written while locked"])
    expect(alice.locator("#messages li.failed, #messages li.pending")).to_have_count(0)
    expect(alice.locator("#state")).to_have_text("Connected")
    expect(alice.locator("#error")).to_be_empty()
    for page in (alice, bob):
        page.context.close()
