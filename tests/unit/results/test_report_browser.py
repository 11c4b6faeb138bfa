"""`grace results report` on the synthetic two-model campaign (the real worker's outputs,
synthetic_campaign.py), opened in Debian's headless chromium: what a reader sees, read from the DOM the
browser built.

- every panel states its n (rows and samples) in its legend;
- every Study 2 panel draws the chance line at 1/8 and names it in its legend;
- every mark has a legend entry: each series drawn, the error bars, the reference lines, the markers;
- a distribution below the coverage threshold (the toy model's Experiment 2 scores carry almost no mass) is
  not drawn as bars: its panels show the "not measurable" marker instead, and the same report built with
  no threshold draws those bars (so the check can fail);
- the count axis (rows by outcome) has whole-number ticks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from grace_infra.commands.results import subcommands
from grace_infra.commands.results.analysis import ANALYSIS_DIR
from grace_infra.commands.results.statistics import CHANCE
from grace_infra.commands.results.svg import NOT_MEASURABLE
from grace_infra.constants import RESULTS_MIN_COVERAGE
from tests.support.browser import measured

# Injected into a copy of the report: each figure's legend texts, bars per series, error bars, reference
# lines, not-measurable markers and tick labels, as the browser laid them out.
MEASURE = """
const figures = [...document.querySelectorAll('svg.plot')].map(svg => ({
  id: svg.id,
  title: svg.getAttribute('aria-label'),
  legend: [...svg.querySelectorAll('g.legend text')].map(t => t.textContent),
  bars: [...svg.querySelectorAll('rect.bar')].filter(b => b.getBBox().width > 0)
        .map(b => b.dataset.series),
  errorbars: svg.querySelectorAll('g.errorbar').length,
  references: [...svg.querySelectorAll('line.reference')].map(l => parseFloat(l.dataset.value)),
  not_measurable: [...svg.querySelectorAll('text.not-measurable')].map(t => t.dataset.series),
  no_rows: svg.querySelectorAll('text.no-rows').length,
  ticks: [...svg.querySelectorAll('text.tick')].map(t => t.textContent),
  height: svg.getBoundingClientRect().height,
}));
const out = document.createElement('pre'); out.id = 'measured';
out.textContent = JSON.stringify(figures); document.body.appendChild(out);
"""
N_LABEL = re.compile(r"\(n = \d+ rows(, \d+ samples)?\)")


def _figures(claim: Path, tmp_path: Path, *extra: str) -> list[dict[str, Any]]:
    report = tmp_path / "report.html"
    assert subcommands.main(["report", str(claim), "--out", str(report), *extra]) == 0
    return measured(report.read_text(encoding="utf-8"), MEASURE, tmp_path)


@pytest.fixture(scope="module")
def figures(synthetic_claim: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return _figures(synthetic_claim, tmp_path_factory.mktemp("report"))


def test_every_panel_states_its_n_and_every_mark_has_a_legend_entry(figures: list[dict[str, Any]]) -> None:
    assert len(figures) > 20
    for figure in figures:
        assert figure["height"] > 100, figure["id"]
        legend = " | ".join(figure["legend"])
        assert N_LABEL.search(legend) or N_LABEL.search(figure["title"]), figure["id"]
        for series in set(figure["bars"]) | set(figure["not_measurable"]):
            assert any(entry.startswith(series) for entry in figure["legend"]), (figure["id"], series)
        if figure["errorbars"]:
            assert any(entry.startswith("error bars") for entry in figure["legend"]), figure["id"]
        if figure["no_rows"]:
            assert any("no rows" in entry for entry in figure["legend"]), figure["id"]
        if figure["not_measurable"]:
            assert any(NOT_MEASURABLE in entry for entry in figure["legend"]), figure["id"]
    # The model panels name both models and their n in every legend.
    for figure in (f for f in figures if f["id"].startswith(("s1-", "s2-"))):
        for model in ("model-a", "model-b"):
            labelled = any(entry.startswith(f"{model} (n = ") for entry in figure["legend"])
            assert labelled, (figure["id"], model)


def test_every_study2_panel_draws_the_chance_line(figures: list[dict[str, Any]]) -> None:
    panels = [f for f in figures if f["id"].startswith("s2-")]
    assert len(panels) == 2 * 3 * 4  # two experiments x three goals x four states
    for panel in panels:
        assert panel["references"] == [pytest.approx(CHANCE, abs=1e-4)], panel["id"]
        assert any(entry.startswith("chance 1/8") for entry in panel["legend"]), panel["id"]


def test_a_low_coverage_distribution_is_not_drawn_as_bars(
    figures: list[dict[str, Any]], synthetic_claim: Path, tmp_path: Path
) -> None:
    items = pd.read_csv(synthetic_claim / ANALYSIS_DIR / "study1_exp2_items.csv")
    states = items[[f"coverage_state{k}" for k in range(4)]].stack()
    # The toy model's percentage and sentence scores carry almost no mass; its one-token yes/no more.
    assert states.median() < RESULTS_MIN_COVERAGE <= items["coverage_knowledge"].median()
    exp2 = [f for f in figures if re.match(r"s1-exp2-a\d|s2-exp2-", f["id"])]
    assert len(exp2) == 6 + 12
    for panel in exp2:
        assert panel["bars"] == [], panel["id"]
        assert set(panel["not_measurable"]) == {"model-a", "model-b"}, panel["id"]
    (knows,) = [f for f in figures if f["id"] == "s1-exp2-knows"]
    assert knows["bars"]
    assert not knows["not_measurable"]
    # Experiment 1 (coded answers) is drawn as bars in the same report.
    assert any(f["bars"] for f in figures if f["id"].startswith("s2-exp1-"))
    # With no threshold the same distributions are drawn: the check above is about coverage.
    unfiltered = _figures(synthetic_claim, tmp_path, "--min-coverage", "0")
    drawn = [f for f in unfiltered if f["id"].startswith("s2-exp2-")]
    assert all(f["bars"] and not f["not_measurable"] for f in drawn)


def test_the_count_axis_has_whole_number_ticks(figures: list[dict[str, Any]]) -> None:
    (outcomes,) = [f for f in figures if f["id"] == "outcomes"]
    assert len(outcomes["ticks"]) >= 2
    assert all(re.fullmatch(r"\d+", tick) for tick in outcomes["ticks"]), outcomes["ticks"]
