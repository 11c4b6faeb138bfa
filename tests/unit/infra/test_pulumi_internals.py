"""A canary for the private Pulumi internals the offline render relies on (grace_infra/commands/offline.py).

The render runs the program under Pulumi's public mocks API but needs four things that API does not
offer: `run_pulumi_func` and `_sync_await` to run the program to completion in-process, the settings'
`rpc_manager`/`outputs` to reset between renders, and `MockMonitor.RegisterResource` to see resource
options. They were read from pulumi 3.272.0, the version requirements.txt pins; a new pin must come with
this test passing, or offline.py adapted.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version
from pathlib import Path

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

REQUIREMENTS = Path(__file__).resolve().parents[3] / "requirements.txt"


def _pinned(package: str) -> str:
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        name, _, pin = line.partition("==")
        if name.strip() == package:
            return pin.split("#")[0].strip()
    raise AssertionError(f"{package} is not pinned in requirements.txt")


def test_the_installed_pulumi_is_the_pinned_one() -> None:
    assert version("pulumi") == _pinned("pulumi")


def test_the_private_functions_offline_calls_take_what_it_passes() -> None:
    assert list(inspect.signature(run_pulumi_func).parameters) == ["func"]
    assert list(inspect.signature(_sync_await).parameters) == ["awaitable"]


def test_the_settings_offline_resets_exist() -> None:
    settings = pulumi.runtime.settings.SETTINGS
    assert callable(settings.rpc_manager.clear)
    assert callable(settings.outputs.clear)


def test_the_mock_monitor_still_receives_register_resource_requests() -> None:
    assert "request" in inspect.signature(pulumi_mocks.MockMonitor.RegisterResource).parameters
