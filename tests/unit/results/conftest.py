"""The synthetic two-model campaign (synthetic_campaign.py), written once per session and tidied."""

from __future__ import annotations

from pathlib import Path

import pytest

from grace_infra.commands.results import subcommands
from tests.unit.results.synthetic_campaign import write_campaign


@pytest.fixture(scope="session")
def synthetic_claim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both models' Experiment 1 and 2 outputs, after `grace results tidy`."""
    root = write_campaign(tmp_path_factory.mktemp("claim"), tmp_path_factory.mktemp("inputs"))
    assert subcommands.main(["tidy", str(root)]) == 0
    return root
