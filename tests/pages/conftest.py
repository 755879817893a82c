"""Browser tests: Debian's chromium, driven by Playwright, against the shared cluster
(three daphne workers, one Redis). Never `playwright install`: it downloads a browser.

Every wait is bounded (the page and expect() time-outs below, pytest-timeout above them)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, expect, sync_playwright

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, PASSWORD, STAFF, TIMEOUT_MS, USERS, Site
from tests.support.processes import Cluster


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
