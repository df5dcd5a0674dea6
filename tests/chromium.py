"""Debian's Chromium for the browser tests (test_browser.py,
test_browser_client.py), driven by Playwright for Python; Playwright's own
browser downloads are never used.

``CHROMIUM`` is /usr/bin/chromium, or $WSHUB_CHROMIUM; a test module calls
``require_chromium()`` at import to skip itself when either the playwright
package or the binary is missing.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

CHROMIUM = os.environ.get("WSHUB_CHROMIUM", "/usr/bin/chromium")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",  # everything is on loopback
]


def require_chromium() -> Any:
    """The ``playwright.sync_api`` module; skips the calling module when
    Playwright or Chromium is not installed."""
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="playwright (Python package) not installed (requirements-examples.txt)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium, "
                    "or set WSHUB_CHROMIUM)", allow_module_level=True)
    return sync_api


def launch(playwright: Any) -> Any:
    """A headless Chromium browser."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000)
