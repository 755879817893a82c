"""Installable (issue 22): a web app manifest and icons, so the rooms page can be added to a
phone's home screen. Chromium itself is the judge: it reads the manifest the page links and
says whether anything stands in the way of installing it."""

from __future__ import annotations

import struct
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Playwright

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, Site, log_in

pytestmark = pytest.mark.multiworker


def png_size(body: bytes) -> tuple[int, int]:
    assert body[:8] == b"\x89PNG\r\n\x1a\n", "a PNG file"
    width, height = struct.unpack(">II", body[16:24])  # the IHDR chunk comes first
    return width, height


def test_chromium_finds_the_rooms_page_installable(site: Site, playwright: Playwright, tmp_path: Path):
    # A profile on disk: Chromium never offers to install from an incognito one, which is what
    # the other tests' contexts are.
    context = playwright.chromium.launch_persistent_context(
        tmp_path / "profile", executable_path=CHROMIUM, args=CHROMIUM_ARGS, viewport={"width": 390, "height": 844}
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.pages[0] if context.pages else context.new_page()
    log_in(page, site.url("/accounts/login/"), "pages-alice")
    page.goto(site.url("/"))
    cdp = context.new_cdp_session(page)
    manifest = cdp.send("Page.getAppManifest")
    assert manifest["errors"] == [], manifest["errors"]
    assert manifest["url"].endswith("/static/web/manifest.webmanifest")
    assert cdp.send("Page.getInstallabilityErrors")["installabilityErrors"] == []
    assert page.locator('meta[name="theme-color"]').get_attribute("content") == "#1f2a44"
    context.close()


def test_every_icon_the_manifest_lists_is_served_at_its_size(site: Site):
    manifest = httpx.get(site.url("/static/web/manifest.webmanifest"), timeout=10)
    assert manifest.status_code == 200
    assert manifest.headers["content-type"].startswith("application/manifest+json")
    icons = manifest.json()["icons"]
    assert {icon["purpose"] for icon in icons} == {"any", "maskable"}
    for icon in icons:
        served = httpx.get(site.url(icon["src"]), timeout=10)
        assert served.status_code == 200, icon["src"]
        assert served.headers["content-type"] == icon["type"], icon["src"]
        if icon["type"] == "image/png":
            width, height = png_size(served.content)
            assert f"{width}x{height}" == icon["sizes"], icon["src"]
    touch = httpx.get(site.url("/static/web/icons/icon-180.png"), timeout=10)
    assert png_size(touch.content) == (180, 180), "the apple-touch-icon"
