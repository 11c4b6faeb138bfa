"""Debian's headless chromium for the report tests: the page's DOM after an injected measuring script ran.

scripts/setup-browser.sh installs chromium (as root); without it a test skips locally and fails under CI.
"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.support.ci import required_tool

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
BROWSER_TIMEOUT_S = 120  # a hung browser fails the test instead of hanging it


def chromium() -> str:
    return required_tool("chromium", "scripts/setup-browser.sh")


def measured(html: str, script: str, folder: Path) -> Any:
    """Open a copy of the report with `script` (which writes JSON into <pre id="measured">) allowed to run
    by its policy; the JSON it wrote."""
    page = folder / "measured.html"
    # The report's policy forbids scripts; the measuring copy allows its own inline one only.
    page.write_text(
        html.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';").replace(
            "</body>", f"<script>{script}</script></body>"
        ),
        encoding="utf-8",
    )
    profile = tempfile.mkdtemp(prefix="grace-chromium-")
    try:
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000"]
        dom = subprocess.run(
            [chromium(), *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
            timeout=BROWSER_TIMEOUT_S, check=True, env={**os.environ, "HOME": profile},
        ).stdout  # fmt: skip
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    match = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.DOTALL)
    assert match, "the measuring script did not run"
    return json.loads(html_lib.unescape(match.group(1)))
