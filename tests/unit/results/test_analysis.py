"""`grace results tidy` writes the researchers' tables (all models, and one row per item) from a synthetic
campaign of two models that the real worker wrote (synthetic_campaign.py), and the report's statistics
equal R's own `aov`, `t.test` and `binom.test` run on those tables by researchers_statistics.R (base R,
reading the item tables as Study1.R and Study2.R read theirs)."""

from __future__ import annotations

import math
import re
import subprocess
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest

from grace_infra.commands.results import subcommands
from grace_infra.commands.results.analysis import ANALYSIS_DIR
from tests.support.ci import required_tool
from tests.unit.results.synthetic_campaign import MODELS, SAMPLES, study1_input, study2_input

HERE = Path(__file__).resolve().parent
R_SCRIPT = HERE / "researchers_statistics.R"
R_TIMEOUT_S = 120  # a hung R fails the test instead of hanging it
STEMS = ("study1_exp1", "study1_exp2", "study2_exp1", "study2_exp2")
INPUT_ROWS = {"study1": len(study1_input()), "study2": len(study2_input())}
OUTPUT_NAMES = {"exp1": "responses", "exp2": "probabilities"}


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _output(claim: Path, stem: str, model: str) -> pd.DataFrame:
    study, experiment = stem.split("_")
    return _read(claim / experiment / model / f"{study}_{OUTPUT_NAMES[experiment]}.csv")


@pytest.mark.parametrize("stem", STEMS)
def test_tidy_writes_one_all_models_table_and_one_item_table(synthetic_claim: Path, stem: str) -> None:
    study = stem.split("_", maxsplit=1)[0]
    all_models = _read(synthetic_claim / ANALYSIS_DIR / f"{stem}_all_models.csv")
    items = _read(synthetic_claim / ANALYSIS_DIR / f"{stem}_items.csv")
    assert sorted(set(all_models["model_name"])) == list(MODELS)
    # Every output row of every model, each once, with its sample and input row.
    outputs = {model: _output(synthetic_claim, stem, model) for model in MODELS}
    assert len(all_models) == sum(len(frame) for frame in outputs.values())
    assert not all_models.duplicated(["model_name", "row", "sample"]).any()
    assert {"model_name", "row", "sample", "outcome"} <= set(all_models.columns)
    # One item per model and input row; the samples of each counted once.
    assert len(items) == INPUT_ROWS[study] * len(MODELS)
    assert not items.duplicated(["model_name", "row"]).any()
    assert items["n_samples"].astype(int).sum() == len(all_models)


def test_the_tables_carry_the_researchers_column_names(synthetic_claim: Path) -> None:
    def columns(name: str) -> set[str]:
        return set(_read(synthetic_claim / ANALYSIS_DIR / name).columns)

    assert {"participant_id", "access", "observe", "response_quantity", "response_knowledge"} <= columns(
        "study1_exp1_all_models.csv"
    )
    assert {"Participant_ID", "State", "Goal", "response", "Goal_simplified", "Was/Wasn't", "Assessment"} <= (
        columns("study2_exp1_all_models.csv")
    )
    study1_exp2 = columns("study1_exp2_all_models.csv")
    assert {f"state{k}_{s}" for k in range(4) for s in ("mean", "std", "entropy")} <= study1_exp2
    assert {"state3_prob_100", "prob_knowledge_yes", "prob_knowledge_no", "entropy_knowledge"} <= study1_exp2
    assert {"prob_wasn't_amazing", "prob_was", "prob_wasnt", "prob_good", "entropy_response"} <= columns(
        "study2_exp2_all_models.csv"
    )
    # Study1.R's X0..X3 and Study2.R's condition and answer columns, per item.
    assert {"X0", "X1", "X2", "X3", "access", "observe"} <= columns("study1_exp1_items.csv")
    assert {"State", "Goal_simplified", "Was/Wasn't", "Assessment"} <= columns("study2_exp2_items.csv")


def test_an_item_is_its_samples_coded_and_aggregated(synthetic_claim: Path) -> None:
    """Study 1, Experiment 1, the model with uncodable and failed replies: X_k is the percentage of the
    row's coded samples answering k, counted here from the worker's own CSV."""
    raw = _output(synthetic_claim, "study1_exp1", MODELS[1])
    raw = raw.assign(row=raw.groupby("sample").cumcount())
    items = pd.read_csv(synthetic_claim / ANALYSIS_DIR / "study1_exp1_items.csv")
    items = items[items["model_name"] == MODELS[1]].set_index("row")
    uncoded = 0
    for row, group in raw.groupby("row"):
        answers = group.loc[group["error"] == "", "response_quantity"].str.strip().str.removesuffix(".")
        coded = answers[answers.isin(["0", "1", "2", "3"])]
        uncoded += len(answers) - len(coded)
        assert items.loc[row, "n_samples"] == SAMPLES
        assert items.loc[row, "n_coded"] == len(coded)
        for k in range(4):
            expected = 100 * (coded == str(k)).mean() if len(coded) else math.nan
            assert items.loc[row, f"X{k}"] == pytest.approx(expected, nan_ok=True)
    assert uncoded > 0  # the case the coding must handle did occur


def _r_statistics(claim: Path, experiment: str) -> pd.DataFrame:
    folder = claim / ANALYSIS_DIR
    run = subprocess.run(
        [required_tool("Rscript", "scripts/setup-r.sh"), str(R_SCRIPT),
         str(folder / f"study1_{experiment}_items.csv"), str(folder / f"study2_{experiment}_items.csv")],
        capture_output=True, text=True, timeout=R_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return pd.read_csv(StringIO(run.stdout))


def _report_statistics(html: str) -> pd.DataFrame:
    cells = re.findall(r'<td class="stat" ([^>]*)>', html)
    records = [dict(re.findall(r'data-([a-z0-9]+)="([^"]*)"', cell)) for cell in cells]
    return pd.DataFrame.from_records(records)


@pytest.mark.parametrize("experiment", ["exp1", "exp2"])
def test_the_reports_statistics_equal_rs_aov_t_test_and_binom_test(
    synthetic_claim: Path, tmp_path: Path, experiment: str
) -> None:
    report = tmp_path / "report.html"
    # Every distribution drawn and tested, however low its coverage: this compares numbers, not judgement.
    assert (
        subcommands.main(["report", str(synthetic_claim), "--out", str(report), "--min-coverage", "0"]) == 0
    )
    ours = _report_statistics(report.read_text(encoding="utf-8"))
    ours = ours[ours["table"].str.endswith(experiment)].set_index(["model", "test"])
    theirs = _r_statistics(synthetic_claim, experiment).set_index(["model", "test"])
    assert len(theirs) == len(MODELS) * (3 + 8 + 2)  # 3 ANOVA terms, 8 comparisons, 2 binomial tests
    assert sorted(ours.index) == sorted(theirs.index)
    for key, r in theirs.iterrows():
        mine = ours.loc[key]
        for column in ("statistic", "df", "p"):
            assert float(mine[column]) == pytest.approx(float(r[column]), rel=1e-9, abs=1e-12, nan_ok=True), (
                key,
                column,
            )
        if not math.isnan(float(r["df2"])):
            assert float(mine["df2"]) == float(r["df2"])
    if experiment == "exp1":  # the synthetic replies vary: the comparison compared numbers, not NaNs
        assert theirs["p"].notna().all()
