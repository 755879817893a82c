"""/tasks/<id>/ in a real browser: a room's summary started from the room page, followed on
its task page to 100 %, and the notification badge that says it finished."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.support.browser import Site, screenshot
from tests.support.processes import Cluster

pytestmark = pytest.mark.multiworker


@pytest.fixture(scope="module")
def with_taskworker(site: Site) -> Iterator[Site]:
    """The shared cluster with a task worker running, stopped again at the end."""
    cluster: Cluster = site.cluster
    worker = cluster.start_taskworker()
    yield site
    worker.terminate()
    worker.wait(10)
    cluster.taskworkers.remove(worker)


def test_a_room_summary_runs_to_100_percent_on_its_task_page(with_taskworker: Site):
    site = with_taskworker
    slug = site.new_room("Release planning", owner="pages-bob")
    for content in ("Shall we ship on Friday?", "Only if the migration is tested", "I will test it on Thursday"):
        assert site.api("POST", f"/api/rooms/{slug}/messages", "pages-bob", json={"content": content}).status_code == 201
    # Whatever other page tests left carol (an invitation, a mention) is read: this test
    # counts the one notification the summary brings.
    assert site.api("POST", "/api/notifications/read", "pages-carol", json={"up_to": 2**62}).status_code == 200
    page = site.context("pages-carol", worker=1).new_page()
    page.goto(site.url(f"/rooms/{slug}/", 1))
    expect(page.locator("#messages li.message")).to_have_count(3)
    expect(page.locator("#notifications-count")).to_be_hidden()

    page.get_by_role("button", name="Summarize this room").click()
    expect(page).to_have_url(re.compile(r"/tasks/\d+/$"))
    expect(page.get_by_role("heading", name="Summary of Release planning")).to_be_visible()
    progress = page.get_by_role("progressbar", name="Progress")
    expect(progress).to_have_attribute("aria-valuenow", "100", timeout=20_000)
    expect(page.locator("#status")).to_have_text("Done")
    summary = page.locator("#result .summary")
    expect(summary).to_contain_text("Shall we ship on Friday?")  # the echo model repeats the transcript
    expect(page.locator("#result")).to_contain_text("From 3 messages.")
    expect(page.get_by_role("button", name="Cancel task")).to_be_hidden()

    # The finished task is a notification: the badge in the header updates live.
    badge = page.locator("#notifications-count")
    expect(badge).to_have_text("1")
    expect(page.get_by_role("button", name="Notifications, 1 unread")).to_be_visible()
    screenshot(page, "task")
    page.get_by_role("button", name="Notifications, 1 unread").click()
    expect(page.locator("#notifications-list li")).to_have_text([f"Task {page.url.split('/')[-2]} (summarize_room): succeeded"])
    page.get_by_role("button", name="Mark all read").click()
    expect(badge).to_be_hidden()
    page.reload()
    expect(page.get_by_role("progressbar", name="Progress")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#notifications-count")).to_be_hidden()
    page.context.close()


def test_a_countdown_reports_progress_step_by_step_and_can_be_cancelled(with_taskworker: Site):
    site = with_taskworker
    page = site.context("pages-bob", worker=2).new_page()
    started = page.request.post(
        site.url("/api/tasks/", 2),
        data={"kind": "countdown", "steps": 50, "interval_ms": 200},
        headers={"X-CSRFToken": next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")},
    )
    assert started.status == 202, started.text()
    task_id = started.json()["id"]
    page.goto(site.url(f"/tasks/{task_id}/", 2))
    progress = page.get_by_role("progressbar", name="Progress")
    expect(page.locator("#status")).to_have_text("Running")
    expect(progress).not_to_have_attribute("aria-valuenow", "0")
    expect(page.locator("#step")).to_contain_text("step")
    page.get_by_role("button", name="Cancel task").click()
    expect(page.locator("#status")).to_have_text("Cancelled")
    value = int(progress.get_attribute("aria-valuenow") or "0")
    assert 0 < value < 100
    expect(page.get_by_role("alert")).to_have_text("The task was cancelled.")
    page.context.close()
