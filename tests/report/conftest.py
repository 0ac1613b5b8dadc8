"""The headless browser the HTML report tests share (Debian's Chromium driven by playwright)."""
from __future__ import annotations

import shutil

import pytest


@pytest.fixture
def browser_page():
    """``open(path) -> (page, errors)``: the page loaded in headless Chromium, and a list that collects
    its console errors and uncaught exceptions. Skips with the reason when no browser is available."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no Chromium on this machine (scripts/bootstrap.sh installs Debian's chromium where "
                    "apt-get runs as root)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make install adds it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            def open_page(file):
                page = browser.new_page()
                errors: list[str] = []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(file.as_uri())
                page.wait_for_load_state("load")
                return page, errors

            yield open_page
        finally:
            browser.close()
