"""Browser tests: Debian's chromium, driven by Playwright, against the shared cluster
(three daphne workers, one Redis). Never `playwright install`: it downloads a browser.

Every wait is bounded (the page and expect() time-outs below, pytest-timeout above them)."""

from __future__ import annotations

import itertools
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Dialog,
    Page,
    Playwright,
    StorageState,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.processes import ROOT, Cluster

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


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as started:
        yield started


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run `make test`, which installs Debian's chromium")
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
    yield launched
    launched.close()


@pytest.fixture(scope="package")
def site(cluster: Cluster, browser: Browser) -> Site:
    """Users with passwords (for the browser) and tokens (for set-up calls), made in one process."""
    code = (
        "import json\n"
        "from django.contrib.auth.models import User\n"
        "from accounts.services import token_create\n"
        f"names, staff, password = {[*USERS, STAFF]!r}, {STAFF!r}, {PASSWORD!r}\n"
        "tokens = {}\n"
        "for name in names:\n"
        "    user = User.objects.create_user(name, password=password, is_staff=name == staff)\n"
        "    tokens[name] = token_create(user=user)[1]\n"
        "print(json.dumps(tokens))"
    )
    tokens = json.loads(cluster.manage("shell", "-c", code).strip().splitlines()[-1])
    expect.set_options(timeout=TIMEOUT_MS)
    return Site(cluster=cluster, browser=browser, tokens=tokens)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach the workers' logs to the report."""
    report = yield
    if report.when == "call" and report.failed:
        site = item.funcargs.get("site")
        if isinstance(site, Site):
            report.sections.append(("cluster worker logs", site.cluster.logs()))
    return report
