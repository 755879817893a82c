"""The browser as the page tests drive it: Debian's chromium under Playwright, users signed
in through the real login form, screenshots for the docs. Every wait is bounded."""

from __future__ import annotations

import itertools
import os
import secrets
from dataclasses import dataclass, field

import httpx
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Dialog,
    Page,
    StorageState,
    ViewportSize,
    expect,
)

from tests.support.processes import ROOT, Cluster

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "docs" / "screenshots"
TIMEOUT_MS = 10_000
DESKTOP: ViewportSize = {"width": 1100, "height": 720}
PASSWORD = "a-long-Passphrase-for-pages-9"

# Users of these tests only (the cluster is shared with the other multi-worker tests).
USERS = ("pages-alice", "pages-bob", "pages-carol")
STAFF = "pages-mod"

_room_numbers = itertools.count(1)


@dataclass
class Site:
    """The cluster as the browser tests see it: its workers, users, their tokens and sessions."""

    cluster: Cluster
    browser: Browser
    tokens: dict[str, str]
    sessions: dict[str, StorageState] = field(default_factory=dict)  # username -> Playwright storage state

    def url(self, path: str, worker: int = 0) -> str:
        return f"{self.cluster.http(worker)}{path}"

    def api(self, method: str, path: str, user: str, worker: int = 2, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        return httpx.request(method, self.url(path, worker), headers=headers, timeout=10, **kwargs)

    def new_room(self, title: str, owner: str = "pages-alice") -> str:
        slug = f"pg-{next(_room_numbers)}-{secrets.token_hex(3)}"
        response = self.api("POST", "/api/rooms/", owner, json={"slug": slug, "title": title})
        assert response.status_code == 201, response.text
        return slug

    def context(self, user: str | None = None, *, worker: int = 0, **options) -> BrowserContext:
        """A fresh browser profile, signed in as ``user`` (a real form login, done once per user)."""
        options.setdefault("viewport", DESKTOP)
        if user is not None and user not in self.sessions:
            self.sessions[user] = self._log_in(user, worker)
        context = self.browser.new_context(storage_state=self.sessions[user] if user else None, **options)
        context.set_default_timeout(TIMEOUT_MS)
        return context

    def _log_in(self, user: str, worker: int) -> StorageState:
        context = self.browser.new_context(viewport=DESKTOP)
        context.set_default_timeout(TIMEOUT_MS)
        try:
            page = context.new_page()
            log_in(page, self.url("/accounts/login/", worker), user)
            return context.storage_state()
        finally:
            context.close()


def log_in(page: Page, login_url: str, user: str, password: str = PASSWORD) -> None:
    page.goto(login_url)
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("header .who")).to_have_text(user)


def watch_dialogs(page: Page) -> list[str]:
    """Every alert/confirm/prompt the page opens (dismissed), to assert that none did."""
    opened: list[str] = []

    def record(dialog: Dialog) -> None:
        opened.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", record)
    return opened


def screenshot(page: Page, name: str) -> None:
    """docs/screenshots/<name>.png, overwritten each run (shown in the README)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), animations="disabled", caret="hide")


def open_room(site: Site, user: str, slug: str, worker: int) -> Page:
    """The room's page for ``user`` on ``worker``, once its socket is live."""
    page = site.context(user, worker=worker).new_page()
    page.goto(site.url(f"/rooms/{slug}/", worker))
    expect(page.locator("#state")).to_have_attribute("data-state", "live")
    return page


def send(page: Page, text: str) -> None:
    """Type a message in the room page's box and send it with Enter."""
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")
