"""Headless Chromium (Debian package ``chromium``) for the QC page tests: screenshot and DOM of a file.

Every call uses a fresh profile folder, no sandbox (the tests may run as root in a container) and a
time limit, so a hung browser fails the test instead of stopping the suite.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

TIMEOUT_S = 90


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


def require_chromium() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium, done by .ci/setup-debian.sh)")
    return path


def _run(args: list[str]) -> subprocess.CompletedProcess:
    exe = require_chromium()
    with tempfile.TemporaryDirectory(prefix="limbseg-chromium-") as profile:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--metrics-recording-only",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *args,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)


def dump_dom(page: Path, *, extra: list[str] | None = None) -> str:
    """The DOM after load, serialised by the browser."""
    proc = _run([*(extra or []), "--virtual-time-budget=3000", "--dump-dom", Path(page).resolve().as_uri()])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def screenshot(page: Path, out: Path, *, width: int = 1280, height: int = 4000) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` screenshot of the page at the given window size."""
    from PIL import Image

    proc = _run(
        [
            f"--window-size={width},{height}",
            "--virtual-time-budget=3000",
            f"--screenshot={out}",
            Path(page).resolve().as_uri(),
        ]
    )
    assert proc.returncode == 0 and Path(out).is_file(), proc.stderr[-2000:]
    return np.asarray(Image.open(out).convert("RGB"))
