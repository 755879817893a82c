"""Renders the app's icon (web/static/web/icons/icon.svg) to the PNG sizes the web app manifest
lists: `.venv/bin/python -m web.render_icons` after changing the drawing, then commit the PNGs.

Why PNGs beside the SVG: Android's home screen and iOS's "Add to Home Screen" take PNG icons
(192 and 512 px are what Chromium's installability check asks for; 180 px is Apple's touch icon).
Drawn by Debian's Chromium through Playwright (both already test dependencies) rather than an
image library we would add only for this."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import sync_playwright

ICONS = Path(__file__).resolve().parent / "static" / "web" / "icons"
SIZES = (180, 192, 512)
CHROMIUM = "/usr/bin/chromium"


def main() -> None:
    drawing = (ICONS / "icon.svg").read_text()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"])
        try:
            for size in SIZES:
                page = browser.new_page(viewport={"width": size, "height": size})
                page.set_content("<style>html,body{margin:0}svg{display:block;width:100vw;height:100vh}</style>" + drawing)
                page.screenshot(path=str(ICONS / f"icon-{size}.png"), omit_background=True)
                page.close()
        finally:
            browser.close()


if __name__ == "__main__":
    main()
