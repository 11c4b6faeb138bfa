"""`grace results check | tidy | report` on outputs the REAL worker writes against the real vLLM server,
laid out as on the output claim (exp1/<model>/..., exp2/<model>/..., structured/<model>/...), and the
report opened in a real headless chromium.

Inputs: the first rows of the real study files (../shared/data) when present, else the project's
fixtures, written as small input files so that a complete run is a complete campaign.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from grace_infra.commands.results import subcommands
from grace_infra.commands.results.check import State, check_outputs
from grace_infra.commands.results.outputs import read_output
from grace_infra.commands.results.tidy import TIDY_COLUMNS, tidy_probabilities
from tests.support.browser import BROWSER_TIMEOUT_S, CHROMIUM_FLAGS, chromium, measured
from tests.support.study_inputs import first_rows
from worker.cli import main as worker_main

pytestmark = pytest.mark.vllm

ROWS = 4
MODEL = "tiny"
# Injected into a copy of the report: measures every figure as the browser laid it out and drew it.
MEASURE = """
const figures = [...document.querySelectorAll('svg.plot')].map(svg => {
  const box = svg.getBoundingClientRect();
  const bars = [...svg.querySelectorAll('rect.bar')];
  const content = svg.getBBox();
  return {id: svg.id, width: box.width, height: box.height,
          content_width: content.width, content_height: content.height, bars: bars.length,
          not_measurable: svg.querySelectorAll('text.not-measurable').length,
          drawn: bars.filter(b => b.getBBox().height > 0).length,
          misdrawn: bars.filter(b => Math.abs(b.getBBox().height - b.height.baseVal.value) > 0.5).length};
});
const out = document.createElement('pre'); out.id = 'measured';
out.textContent = JSON.stringify(figures); document.body.appendChild(out);
"""



@pytest.fixture(scope="module")
def campaign(vllm_server: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("claim")
    inputs = tmp_path_factory.mktemp("input")
    endpoint = vllm_server.base_url  # type: ignore[attr-defined]
    # One greedy answer per row (the studies sample 5 at 0.3): the checks below count rows, and a sampled
    # three-turn conversation can outgrow the tiny model's 512-token context.
    common = ["--model-endpoint", endpoint, "--model-name", MODEL, "--metrics-port", "0"]
    common += ["--samples", "1", "--temperature", "0"]
    for study in ("study1", "study2"):
        exp1 = root / "exp1" / MODEL / f"{study}_responses.csv"
        steps = [
            ["query", "--input", str(first_rows(study, ROWS, inputs)), "--output", str(exp1)],
            ["probs", "--input", str(inputs / f"{study}.csv"),
             "--output", str(root / "exp2" / MODEL / f"{study}_probabilities.csv")],
            ["extract", "--input", str(exp1),
             "--output", str(root / "structured" / MODEL / f"{study}_structured.csv")],
        ]  # fmt: skip
        for step in steps:
            # The chat design: its probability questions sum surface variants, which the tidy table reads.
            assert worker_main([*step, "--study", f"chat/{study}", *common]) in (0, 3), step
    return root


def test_a_complete_campaign_checks_complete_and_exits_0(
    campaign: Path, capsys: pytest.CaptureFixture
) -> None:
    assert subcommands.main(["check", str(campaign)]) == 0
    out = capsys.readouterr().out
    assert "campaign complete: 6 of 6 outputs" in out
    checks = check_outputs(campaign)
    assert {c.state for c in checks} == {State.COMPLETE}
    assert all(c.rows == c.expected_rows == ROWS for c in checks)


def test_a_missing_output_or_a_short_one_is_incomplete(
    campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    copy = tmp_path / "claim"
    shutil.copytree(campaign, copy)
    (copy / "exp2" / MODEL / "study2_probabilities.csv").unlink()  # checkpoint and meta stay: in progress
    responses = copy / "exp1" / MODEL / "study1_responses.csv"
    frame = pd.read_csv(responses, dtype=str, keep_default_na=False)
    frame.head(ROWS - 1).to_csv(responses, index=False)
    assert subcommands.main(["check", str(copy)]) == 1
    states = {c.relative_path: c.state for c in check_outputs(copy)}
    assert states["exp2/tiny/study2_probabilities.csv"] is State.IN_PROGRESS
    assert states["exp1/tiny/study1_responses.csv"] is State.SHORT
    assert "campaign INCOMPLETE: 4 of 6" in capsys.readouterr().out


def test_check_against_the_stack_lists_every_planned_output(
    campaign: Path, capsys: pytest.CaptureFixture
) -> None:
    assert subcommands.main(["check", str(campaign), "--stack", "nrp"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"exp2/gemma-2-2b/study1_probabilities.csv +missing", out)
    assert "exp1/tiny/study1_responses.csv" in out  # outputs beyond the plan are listed too


def test_the_tidy_table_matches_the_wide_columns(campaign: Path) -> None:
    for study in ("study1", "study2"):
        output = read_output(campaign / "exp2" / MODEL / f"{study}_probabilities.csv")
        tidy = tidy_probabilities(output)
        assert set(TIDY_COLUMNS) <= set(tidy.columns)
        questions = output.parameters["questions"]
        assert len(tidy) == ROWS * sum(len(q["options"]) for q in questions)
        ok = tidy[tidy["error"] == ""]
        sums = ok.groupby(["row", "question"])["probability"].sum()
        assert sums.between(1 - 1e-9, 1 + 1e-9).all()
        # Each tidy probability is the wide file's prob_* cell for that row and option.
        wide = output.frame
        assert wide is not None
        # The options' columns; prob_joint_* are the joint's marginals (a consistency check), not options.
        prob_columns = [c for c in wide.columns if re.search(r"prob_", c) and not c.startswith("prob_joint_")]
        wide_values = sorted(float(v) for c in prob_columns for v in wide[c] if v != "")
        assert sorted(ok["probability"]) == pytest.approx(wide_values, rel=1e-9, abs=1e-300)


def test_the_report_renders_every_figure_in_a_real_browser(campaign: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    assert subcommands.main(["tidy", str(campaign)]) == 0
    assert subcommands.main(["report", str(campaign), "--out", str(report)]) == 0
    html = report.read_text(encoding="utf-8")
    # Self-contained: nothing is fetched (no src/href to anywhere, and a policy that forbids it).
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html)
    assert "url(" not in html
    assert "default-src 'none'" in html
    figures = html.count('<svg class="plot"')
    assert figures >= 4
    for heading in ("Study 1: knowledge attribution", "Study 2: polite speech", "P(knows exactly = yes)"):
        assert heading in html
    # The CSV's Utterance is a stimulus column, not a human answer: never plotted as a series.
    assert not re.search(r'data-series="[^"]*(human|Utterance)', html)
    measured_figures = measured(html, MEASURE, tmp_path)
    profile = tempfile.mkdtemp(prefix="grace-chromium-")
    try:
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000"]
        shot = tmp_path / "report.png"
        subprocess.run(
            [chromium(), *flags, f"--screenshot={shot}", report.as_uri()],
            capture_output=True, timeout=BROWSER_TIMEOUT_S, check=True, env={**os.environ, "HOME": profile},
        )  # fmt: skip
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert len(measured_figures) == figures
    for figure in measured_figures:
        assert figure["width"] > 100, figure
        assert figure["height"] > 100, figure
        assert figure["content_width"] > 50, figure  # axes, labels and bars were laid out
        assert figure["bars"] + figure["not_measurable"] > 0, figure  # bars, or the reason there are none
        assert figure["misdrawn"] == 0, figure
    assert sum(figure["drawn"] for figure in measured_figures) > 0
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG")
    assert len(png) > 20_000  # a blank page compresses to a few KB
    keep = os.environ.get("GRACE_KEEP_REPORT")
    if keep:  # look at it: GRACE_KEEP_REPORT=/tmp/x pytest ...
        shutil.copy(report, Path(keep) / "report.html")
        shutil.copy(shot, Path(keep) / "report.png")
