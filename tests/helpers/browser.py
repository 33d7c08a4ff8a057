"""A headless Chromium for the console's browser tests, `make screenshots` and the bench.

Playwright drives it. Playwright's own browser download needs the internet, so the system's
Chromium is used when there is one (Debian's `chromium`, which `.ci/run` installs as root):
`APIXO_CHROMIUM` names a binary explicitly; else Playwright's own build if it was installed;
else the first of the usual system paths.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Quiet and fast in a sandbox: no GPU, no background traffic to Google's services, no QUIC.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
]
SYSTEM_BINARIES = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome")
# Set by .ci/run: a missing browser then fails the tests instead of skipping them.
REQUIRED_ENV = "APIXO_BROWSER_TESTS"


def find_chromium() -> str | None:
    """The Chromium binary to drive, or None when there is none (or no Playwright)."""
    explicit = os.environ.get("APIXO_CHROMIUM")
    if explicit:
        return explicit
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    for name in SYSTEM_BINARIES:
        found = shutil.which(name)
        if found:
            return found
    # Playwright's own download, where `python -m playwright install chromium` worked.
    with sync_playwright() as p:
        own = p.chromium.executable_path
    return own if own and Path(own).exists() else None


def browser_required() -> bool:
    return os.environ.get(REQUIRED_ENV, "") == "required"
