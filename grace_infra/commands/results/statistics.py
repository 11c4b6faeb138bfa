"""The statistics of the researchers' R scripts, per model, on the item tables (analysis.py): one
observation per (model, input row), never per sample.

Study 1 (tgmorton/knowledge-politeness-llms at e41db28, Analysis/R_scripts/Study1.R):
  - the mean and standard error (sd / sqrt(n)) of X0..X3 by access x observe (Study1.R:29-34);
  - the ANOVA `aov(value ~ access * observe)` on X3 (Study1.R:118-121). read.csv reads access and observe
    as integers, so R fits them as numeric terms with one degree of freedom each; this does the same
    (statsmodels `ols` + `anova_lm(typ=1)`: R's sequential sums of squares);
  - the eight one-sided paired comparisons `t.test(X_a - X_b, alternative = "greater")` within one
    access x observe cell (Study1.R:108-146), with scipy's `ttest_1samp` on the differences;
  - beside them, the paper's human values Study1.R records as text (ANOVA :171-173, t-tests :191-198).
Study 2 (Analysis/R_scripts/Study2.R):
  - the proportion of each of the eight sentences per State x Goal_simplified (Study2.R:10-42), here the
    mean over items of each item's share, with its standard error over items;
  - the two binomial tests against chance 1/8 (Study2.R:87-108): "wasn't amazing" at 0 hearts and
    "amazing" (was or wasn't) at 1 heart, both goal, `binom.test(k, n, p = 0.125, alternative =
    "greater")`, with scipy's `binomtest`, on each item's modal sentence.

Imported by report.py (and the tests that check these numbers against R).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.anova import anova_lm

from grace_infra.commands.results.analysis import (
    ASSESSMENT_COLUMN,
    GOAL_COLUMN,
    STATES,
    UTTERANCES,
    WAS_COLUMN,
)

__all__ = [
    "ANOVA_TERMS",
    "BINOMIAL_TESTS",
    "CHANCE",
    "PAIRED_COMPARISONS",
    "AnovaRow",
    "BinomialResult",
    "PairedResult",
    "binomial_tests",
    "condition_means",
    "paired_tests",
    "study1_anova",
    "utterance_proportions",
]

SOURCE = "tgmorton/knowledge-politeness-llms@e41db28"
CHANCE = 1 / 8  # one of eight sentences (Study2.R:95,107 p = 0.125)


@dataclass(frozen=True)
class AnovaRow:
    term: str
    label: str
    human: str  # the paper's value as Study1.R records it
    df: float
    df_residual: float
    f: float
    p: float


# (statsmodels term, Study1.R's label, the paper's value Study1.R:171-173 records)
ANOVA_TERMS = (
    ("access", "Main effect of access", "F(2,205) = 6.57, p < .01"),
    ("observe", "Main effect of observe", "F(2,205) = 269.8, p < .001"),
    ("access:observe", "Access x Observe interaction", "F(1,205) = 34.7, p < .001"),
)


@dataclass(frozen=True)
class Comparison:
    access: int
    observe: int
    higher: int  # X_higher - X_lower > 0
    lower: int
    label: str
    human: str
    line: int  # Study1.R's line running it


# Study1.R:127-146 (the calls) and :191-198 (the paper's values), in its order.
PAIRED_COMPARISONS = (
    Comparison(3, 2, 2, 3, "Complete Access (speaker: 'two')", "t(43) = 10.2, p < .001", 127),
    Comparison(3, 1, 1, 3, "Complete Access (speaker: 'one' vs state 3)", "t(42) = 13.1, p < .001", 131),
    Comparison(3, 1, 1, 2, "Complete Access (speaker: 'one' vs state 2)", "t(42) = 17.1, p < .001", 133),
    Comparison(1, 1, 1, 2, "Access 1 (speaker: 'one' vs state 2)", "t(24) = 1.9, p = .96", 137),
    Comparison(1, 1, 1, 3, "Access 1 (speaker: 'one' vs state 3)", "t(24) = 3.2, p = 1.0", 138),
    Comparison(2, 2, 2, 3, "Access 2 (speaker: 'two' vs state 3)", "t(24) = 1.1, p = .87", 142),
    Comparison(2, 1, 1, 3, "Access 2 (speaker: 'one' vs state 3)", "t(25) = 3.9, p < .001", 145),
    Comparison(2, 1, 1, 2, "Access 2 (speaker: 'one' vs state 2)", "t(25) = 1.5, p = .92", 146),
)


@dataclass(frozen=True)
class PairedResult:
    comparison: Comparison
    n: int
    t: float
    df: int
    p: float


@dataclass(frozen=True)
class BinomialTest:
    state: str
    goal: str
    label: str
    frame: str | None  # "wasn't" for "wasn't amazing"; None: either frame (Study2.R:104)
    assessment: str
    line: int


BINOMIAL_TESTS = (
    BinomialTest("0 hearts", "both", "0 hearts, both goal: 'wasn't amazing'", "wasn't", "amazing", 95),
    BinomialTest("1 heart", "both", "1 heart, both goal: 'amazing' (was or wasn't)", None, "amazing", 107),
)


@dataclass(frozen=True)
class BinomialResult:
    test: BinomialTest
    successes: int
    n: int
    p: float


def complete_study1(items: pd.DataFrame) -> pd.DataFrame:
    """Study1.R:26: rows with X0..X3 all present; access and observe as integers."""
    columns = [f"X{k}" for k in STATES]
    frame = items.dropna(subset=columns).copy()
    frame["access"] = pd.to_numeric(frame["access"]).astype(int)
    frame["observe"] = pd.to_numeric(frame["observe"]).astype(int)
    return frame


def _summaries(
    frame: pd.DataFrame, by: list[str], measures: dict[str, str], key: str, value: str
) -> pd.DataFrame:
    """Per group of `by` and each measure (label -> column): the mean and its standard error over the
    group's items (sd / sqrt(n), Study1.R:30), n and the samples behind them."""
    records = []
    for names, group in frame.groupby(by):
        n = len(group)
        for label, column in measures.items():
            values = group[column].astype(float)
            records.append(
                {
                    **dict(zip(by, names, strict=True)), key: label, value: float(values.mean()),
                    "se": float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
                    "n": n, "samples": int(group["n_samples"].sum()),
                }
            )  # fmt: skip
    return pd.DataFrame.from_records(records)


def condition_means(items: pd.DataFrame) -> pd.DataFrame:
    """model_name, access, observe, k, mean, se, n (items), samples."""
    measures = {str(k): f"X{k}" for k in STATES}
    means = _summaries(complete_study1(items), ["model_name", "access", "observe"], measures, "k", "mean")
    return means.assign(k=means["k"].astype(int)) if len(means) else means


def study1_anova(items: pd.DataFrame) -> list[AnovaRow]:
    """Study1.R's ANOVA on X3 for one model's items (empty when it cannot be fitted)."""
    frame = complete_study1(items)
    if len(frame) < 5 or frame["access"].nunique() < 2 or frame["observe"].nunique() < 2:
        return []
    table = anova_lm(smf.ols("X3 ~ access * observe", data=frame).fit(), typ=1)
    residual = float(table.loc["Residual", "df"])
    return [
        AnovaRow(term, label, human, float(table.loc[term, "df"]), residual,
                 float(table.loc[term, "F"]), float(table.loc[term, "PR(>F)"]))
        for term, label, human in ANOVA_TERMS
    ]  # fmt: skip


def paired_tests(items: pd.DataFrame) -> list[PairedResult]:
    """Study1.R's eight comparisons for one model's items (a cell with fewer than two items: none)."""
    frame = complete_study1(items)
    results = []
    for comparison in PAIRED_COMPARISONS:
        cell = frame[(frame["access"] == comparison.access) & (frame["observe"] == comparison.observe)]
        differences = (cell[f"X{comparison.higher}"] - cell[f"X{comparison.lower}"]).astype(float)
        if len(differences) < 2:
            continue
        result = stats.ttest_1samp(differences, 0.0, alternative="greater")
        results.append(
            PairedResult(comparison, len(differences), float(result.statistic), len(differences) - 1,
                         float(result.pvalue))
        )  # fmt: skip
    return results


def utterance_proportions(items: pd.DataFrame) -> pd.DataFrame:
    """model_name, State, Goal_simplified, utterance, proportion, se, n (items), samples."""
    coded = items[items["n_coded"] > 0]
    measures = {label: f"share_{label}" for label in UTTERANCES}
    return _summaries(coded, ["model_name", "State", GOAL_COLUMN], measures, "utterance", "proportion")


def binomial_tests(items: pd.DataFrame) -> list[BinomialResult]:
    """Study2.R's two tests on one model's items, each item's modal sentence one observation."""
    results = []
    answered = items[items[ASSESSMENT_COLUMN].fillna("").astype(str) != ""]
    for test in BINOMIAL_TESTS:
        cell = answered[(answered["State"] == test.state) & (answered[GOAL_COLUMN] == test.goal)]
        if cell.empty:
            continue
        hit = cell[ASSESSMENT_COLUMN] == test.assessment
        if test.frame is not None:
            hit &= cell[WAS_COLUMN] == test.frame
        k, n = int(hit.sum()), len(cell)
        p = float(stats.binomtest(k, n, CHANCE, alternative="greater").pvalue)
        results.append(BinomialResult(test, k, n, p))
    return results
