"""Whether the tests run under CI, where a missing tool environment must fail instead of skip."""

from __future__ import annotations

import os
import shutil

import pytest


def running_under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> None:
    """Skip with `reason` locally; fail under CI, where the tool must have been installed."""
    if running_under_ci():
        pytest.fail(f"CI is set, so this environment is required: {reason}", pytrace=False)
    pytest.skip(reason)


def required_tool(command: str, installer: str) -> str:
    """The path of `command`; skips (locally) or fails (under CI) naming the setup script that installs it."""
    path = shutil.which(command)
    if path is None:
        unavailable(f"{command} is not installed ({installer} installs it as root)")
    assert path is not None
    return path
