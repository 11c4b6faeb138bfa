"""The report a researcher sees after the demo, read from the DOM a real headless chromium builds.

The demo's steps (scripts/demo.sh: worker query, probs and extract for both studies in the default
design, the researchers') run against the real vLLM CPU server on the first rows of the study files, laid
out as on the output claim; then `grace results tidy` and `report`. The checks are the reader's:
- every panel states its n (rows and samples);
- every Study 2 panel draws the chance line at 1/8 and names it in its legend;
- a distribution whose coverage is under the report's threshold is not drawn as bars (the tiny random
  model's scores of the researchers' percentages and sentences carry almost no probability) but marked
  "not measurable", and each panel's series are either drawn or marked, never both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from grace_infra.commands.results import subcommands
from grace_infra.commands.results.analysis import ANALYSIS_DIR
from grace_infra.commands.results.statistics import CHANCE
from grace_infra.constants import RESULTS_MIN_COVERAGE
from tests.support.browser import measured
from tests.support.study_inputs import first_rows
from tests.unit.results.test_report_browser import MEASURE, N_LABEL
from worker.cli import main as worker_main

pytestmark = pytest.mark.vllm

ROWS = 3
MODEL = "tiny"



@pytest.fixture(scope="module")
def demo_claim(vllm_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, inputs = tmp_path_factory.mktemp("claim"), tmp_path_factory.mktemp("input")
    common = ["--model-endpoint", vllm_server.base_url, "--model-name", MODEL, "--metrics-port", "0"]
    for study in ("study1", "study2"):
        exp1 = root / "exp1" / MODEL / f"{study}_responses.csv"
        steps = [
            # The study's own sampling (5 samples at 0.3), as the demo runs it.
            ["query", "--input", str(first_rows(study, ROWS, inputs)), "--output", str(exp1)],
            ["probs", "--input", str(inputs / f"{study}.csv"),
             "--output", str(root / "exp2" / MODEL / f"{study}_probabilities.csv")],
            ["extract", "--input", str(exp1),
             "--output", str(root / "structured" / MODEL / f"{study}_structured.csv")],
        ]  # fmt: skip
        for step in steps:
            # A bare study name: the default design, the researchers'.
            assert worker_main([*step, "--study", study, *common]) in (0, 3), step
    assert subcommands.main(["tidy", str(root)]) == 0
    return root


@pytest.fixture(scope="module")
def figures(demo_claim: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("report")
    report = folder / "report.html"
    assert subcommands.main(["report", str(demo_claim), "--out", str(report)]) == 0
    return measured(report.read_text(encoding="utf-8"), MEASURE, folder)


def test_every_panel_of_the_demo_report_states_its_n(figures: list[dict[str, Any]]) -> None:
    assert len(figures) > 10
    for figure in figures:
        legend = " | ".join(figure["legend"])
        assert N_LABEL.search(legend) or N_LABEL.search(figure["title"]), figure["id"]


def test_every_study2_panel_of_the_demo_report_draws_the_chance_line(figures: list[dict[str, Any]]) -> None:
    panels = [f for f in figures if f["id"].startswith("s2-")]
    assert panels
    for panel in panels:
        assert panel["references"] == [pytest.approx(CHANCE, abs=1e-4)], panel["id"]
        assert any(entry.startswith("chance 1/8") for entry in panel["legend"]), panel["id"]


def test_the_demo_reports_low_coverage_scores_as_not_measurable(
    demo_claim: Path, figures: list[dict[str, Any]]
) -> None:
    items = pd.read_csv(demo_claim / ANALYSIS_DIR / "study1_exp2_items.csv")
    coverage = items[[f"coverage_state{k}" for k in range(4)]].stack()
    assert coverage.median() < RESULTS_MIN_COVERAGE  # the random model puts almost nothing on "0%".."100%"
    states = [f for f in figures if f["id"].startswith("s1-exp2-a")]
    assert states
    for panel in states:
        assert panel["bars"] == [], panel["id"]
        assert set(panel["not_measurable"]) == {MODEL}, panel["id"]
    for panel in figures:
        assert not set(panel["bars"]) & set(panel["not_measurable"]), panel["id"]
