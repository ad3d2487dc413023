"""Headless Chromium for the pages: the system browser (Debian's `chromium`, installed by `make browser`) driven by
Playwright, which downloads no browser of its own. The page tests and scripts/readme_screenshots.py open it here."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

CHROMIUM = os.environ.get("PAR_CHROMIUM", "/usr/bin/chromium")
# Chromium's own background traffic off: a closed network refuses it, and a page's requests are what tests check
CHROMIUM_FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


@contextlib.contextmanager
def headless_chromium() -> Iterator[Any]:
    """A Playwright Browser on the system Chromium (`PAR_CHROMIUM` to use another binary)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        raise FileNotFoundError(f"{CHROMIUM} missing: run `make browser` (Debian's chromium) or set PAR_CHROMIUM")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
        try:
            yield browser
        finally:
            browser.close()
