"""`grace results check` on a sampled run: a complete output has input rows x samples rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from grace_infra.commands.results.check import State, check_outputs
from tests.support.fake_openai import FakeOpenAI
from worker.cli import main as worker_main

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def test_a_run_at_the_studys_five_samples_per_row_checks_complete(tmp_path: Path) -> None:
    source = tmp_path / "input" / "study1.csv"
    source.parent.mkdir()
    pd.read_csv(FIXTURES / "study1_small.csv", dtype=str, keep_default_na=False).head(2).to_csv(
        source, index=False
    )
    claim = tmp_path / "claim"
    output = claim / "exp1" / "tiny" / "study1_responses.csv"
    with FakeOpenAI() as server:
        code = worker_main([
            "query", "--input", str(source), "--output", str(output),
            "--model-endpoint", server.base_url, "--model-name", "tiny", "--study", "chat/study1",
            "--metrics-port", "0",
        ])  # fmt: skip
    assert code == 0
    (check,) = check_outputs(claim)
    assert (check.rows, check.expected_rows, check.state) == (10, 10, State.COMPLETE)
