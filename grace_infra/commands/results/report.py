"""`grace results report DIR --out report.html`: the plots a researcher draws first, in one HTML file.

The page is self-contained: inline SVG (svg.py), inline CSS, no script, and a Content-Security-Policy
that forbids every fetch, so it opens the same on a laptop offline as on a shared drive.

    Study 1, per model  expected percentage for each number 0-3 after the speaker's statement, per
                        access/observe condition (Experiment 2 log-probabilities, and the percentages the
                        model wrote in Experiment 1 as extracted); P(knows exactly = yes) per condition
    Study 2, per model  the distribution over the utterances for each goal and state: Experiment 2, and
                        Experiment 1 as extracted. The CSV's `Utterance` is not plotted: it is a column
                        of the stimulus design, balanced over State, not a participant's answer
    Every model         rows, failed and empty rows per output; probability coverage per question
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import pandas as pd

from grace_infra.commands.results.check import check_output, discover_outputs
from grace_infra.commands.results.outputs import OutputFile, ResultsInputError, failed_mask, read_output
from grace_infra.commands.results.svg import bar_chart
from grace_infra.commands.results.tidy import tidy_probabilities
from worker.run.atomic_files import write_atomically

__all__ = ["build_report", "goal_kind", "write_report"]

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { margin-top: 1.5em; }
.figures { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; width: min-content; }
figcaption, .note { font-size: 0.85em; color: #555; max-width: 60em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; } td:first-child { text-align: left; }
"""
# Study 1: Experiment 2 asks one question per number k ("state{k}") and a yes/no knowledge question.
STATE_QUESTION = re.compile(r"^state(\d+)$")
KNOWLEDGE_QUESTION, KNOWLEDGE_YES = "knowledge", "yes"
EXTRACTED_PERCENT = re.compile(r"^probability_(\d+)$")  # Experiment 1's percentages, as extracted
EXTRACTED_KNOWLEDGE = "knowledge_answer"
# Study 2: the goal sentences come in three kinds (the researchers' Goal_simplified).
GOAL_KINDS = ("informational", "social", "both")
UTTERANCE_PREFIX = "it was"  # option texts "It was ..." / "It wasn't ..." mark the utterance question
STUDY1_EXP2_HEADING = "Experiment 2: the model's probabilities, from its log-probabilities"
STUDY1_EXP1_HEADING = "Experiment 1: the numbers in the model's reply, as extracted"
SERIES_EXP2, SERIES_EXP1 = "Exp. 2 (log-prob.)", "Exp. 1 (extracted)"


def goal_kind(goal: str) -> str:
    """'If X wanted to BOTH make Y feel good AND ...' -> both; '... feel good, rather than ...' -> social."""
    if "BOTH" in goal:
        return "both"
    if "feel good" in goal:
        return "social"
    return "informational"


def _state_order(state: str) -> tuple[int, str]:
    digits = re.match(r"\d+", state.strip())
    return (int(digits.group()) if digits else 99, state)


def _short(utterance: str) -> str:
    """An axis label: "It wasn't bad" -> "wasn't bad" (every utterance starts with "It")."""
    return utterance.removeprefix("It ")


def _utterance_key(text: str) -> str:
    return " ".join(str(text).lower().replace("\u2019", "'").strip().rstrip(".!").split())


@dataclass
class _Model:
    name: str
    outputs: dict[tuple[str, str], OutputFile]  # (study, pipeline) -> output

    def get(self, study: str, pipeline: str) -> OutputFile | None:
        output = self.outputs.get((study, pipeline))
        return output if output is not None and output.frame is not None else None


def _models(outputs: Iterable[OutputFile]) -> list[_Model]:
    models: dict[str, _Model] = {}
    for output in outputs:
        model = models.setdefault(output.model_name, _Model(output.model_name, {}))
        model.outputs[(output.study, output.pipeline)] = output
    return [models[name] for name in sorted(models)]


def _figures(figures: list[str]) -> str:
    return f'<div class="figures">{"".join(figures)}</div>'


def _figure(svg: str, caption: str = "") -> str:
    text = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{svg}{text}</figure>"


def _ok_rows(output: OutputFile) -> pd.DataFrame:
    assert output.frame is not None
    return output.frame[~failed_mask(output.frame)]


# ---- Study 1 ---------------------------------------------------------------------------------------------


def _condition(row: pd.Series) -> str:
    """`a3 o1`: the speaker looked at 3 items (access) and reports on 1 (observe)."""
    return f"a{row['access']} o{row['observe']}"


def _conditions(frame: pd.DataFrame) -> list[str]:
    pairs = sorted({(str(a), str(o)) for a, o in zip(frame["access"], frame["observe"], strict=True)})
    return [f"a{a} o{o}" for a, o in pairs]


def _condition_title(condition: str) -> str:
    access, observe = condition.split()
    return f"access {access[1:]}, observe {observe[1:]}"


def _study1_exp2(model: _Model, output: OutputFile) -> list[str]:
    tidy = tidy_probabilities(output)
    tidy = tidy[tidy["error"] == ""]
    if tidy.empty or "access" not in tidy.columns:
        return []
    tidy = tidy.assign(condition=tidy.apply(_condition, axis=1))
    figures = []
    states = tidy[tidy["question"].str.match(STATE_QUESTION)].copy()
    if not states.empty:
        states["k"] = states["question"].str.extract(STATE_QUESTION, expand=False)
        states["weighted"] = states["probability"] * pd.to_numeric(states["option_value"], errors="coerce")
        expected = (
            states.groupby(["condition", "k", "row"])["weighted"].sum().groupby(["condition", "k"]).mean()
        )
        ks = sorted(states["k"].unique(), key=int)
        for condition in _conditions(tidy):
            values = [float(expected.get((condition, k), math.nan)) for k in ks]
            total = sum(v for v in values if not math.isnan(v))
            figures.append(
                _figure(
                    bar_chart(
                        f"s1-exp2-{model.name}-{condition}",
                        _condition_title(condition),
                        ks,
                        {SERIES_EXP2: values},
                        y_max=100,
                        y_label="expected % for exactly k",
                        width=240,
                    ),
                    f"each k asked separately; the four add up to {total:.0f}",
                )
            )
    knows = tidy[(tidy["question"] == KNOWLEDGE_QUESTION) & (tidy["option"] == KNOWLEDGE_YES)]
    if not knows.empty:
        per_condition = knows.groupby("condition")["probability"].mean()
        figures.append(
            _knows_figure(
                f"s1-knows-{model.name}",
                "P(knows exactly = yes)",
                SERIES_EXP2,
                per_condition,
                _conditions(tidy),
            )
        )
    return figures


def _knows_figure(
    chart_id: str,
    title: str,
    series: str,
    per_condition: pd.Series,
    conditions: list[str],
    *,
    caption: str = "",
) -> str:
    """One bar per condition of a 0-1 knowledge value (a probability or a share of answers)."""
    values = [float(per_condition.get(condition, math.nan)) for condition in conditions]
    return _figure(bar_chart(chart_id, title, conditions, {series: values}, y_max=1, width=320), caption)


def _study1_exp1(model: _Model, output: OutputFile) -> list[str]:
    frame = _ok_rows(output)
    percent_columns = sorted((c for c in frame.columns if EXTRACTED_PERCENT.match(c)), key=lambda c: c[-1])
    if frame.empty or "access" not in frame.columns or not percent_columns:
        return []
    frame = frame.assign(condition=frame.apply(_condition, axis=1))
    numbers = frame[percent_columns].apply(pd.to_numeric, errors="coerce")
    means = numbers.groupby(frame["condition"]).mean()
    ks = [EXTRACTED_PERCENT.match(c).group(1) for c in percent_columns]  # type: ignore[union-attr]
    conditions = _conditions(frame)
    figures = [
        _figure(
            bar_chart(
                f"s1-exp1-{model.name}-{condition}",
                _condition_title(condition),
                ks,
                {
                    SERIES_EXP1: [
                        float(means.loc[condition, c]) if condition in means.index else math.nan
                        for c in percent_columns
                    ]
                },
                y_max=100,
                y_label="stated % for exactly k",
                width=240,
            )
        )
        for condition in conditions
    ]
    if EXTRACTED_KNOWLEDGE in frame.columns:
        answered = frame[frame[EXTRACTED_KNOWLEDGE].str.lower().isin({"yes", "no"})]
        share = (answered[EXTRACTED_KNOWLEDGE].str.lower() == "yes").groupby(answered["condition"]).mean()
        figures.append(
            _knows_figure(
                f"s1-knows-exp1-{model.name}",
                "share answering knows = yes",
                SERIES_EXP1,
                share,
                conditions,
                caption=f"{len(answered)} of {len(frame)} replies gave a yes/no answer",
            )
        )
    return figures


# ---- Study 2 ---------------------------------------------------------------------------------------------


def _utterance_distributions(model: _Model) -> tuple[list[str], dict[str, pd.DataFrame], pd.DataFrame | None]:
    """The utterance texts, per series a (goal kind, state) x utterance table of shares, and the rows."""
    series: dict[str, pd.DataFrame] = {}
    texts: list[str] = []
    rows: pd.DataFrame | None = None
    probs = model.get("study2", "probs")
    if probs is not None:
        tidy = tidy_probabilities(probs)
        tidy = tidy[tidy["error"] == ""]
        utterance = tidy[tidy["option_text"].str.lower().str.startswith(UTTERANCE_PREFIX)]
        if not utterance.empty and {"Goal", "State"} <= set(utterance.columns):
            question = utterance["question"].iloc[0]
            utterance = utterance[utterance["question"] == question]
            texts = list(dict.fromkeys(utterance["option_text"]))
            utterance = utterance.assign(goal=utterance["Goal"].map(goal_kind))
            series[SERIES_EXP2] = (
                utterance.groupby(["goal", "State", "option_text"])["probability"]
                .mean()
                .unstack(fill_value=0.0)
            )
            rows = probs.frame
    extracted = model.get("study2", "extract")
    wanted = {"was_wasnt", "assessment", "Goal", "State"}
    # _Model.get returns an output only with its frame read; the check here tells the type checker so.
    if extracted is not None and extracted.frame is not None and wanted <= set(extracted.frame.columns):
        frame = _ok_rows(extracted)
        said = ("It " + frame["was_wasnt"].str.strip() + " " + frame["assessment"].str.strip()).map(
            _utterance_key
        )
        texts = texts or [
            f"It {f} {a}" for f in ("was", "wasn't") for a in ("terrible", "bad", "good", "amazing")
        ]
        by_key = {_utterance_key(t): t for t in texts}
        labelled = frame.assign(goal=frame["Goal"].map(goal_kind), said=said.map(by_key))
        series[SERIES_EXP1] = (
            labelled.groupby(["goal", "State"])["said"].value_counts(normalize=True).unstack(fill_value=0.0)
        )
        rows = rows if rows is not None else extracted.frame
    return texts, series, rows


def _study2(model: _Model) -> tuple[list[str], str]:
    texts, series, rows = _utterance_distributions(model)
    if not texts or rows is None:
        return [], ""
    figures = []
    states = sorted(set(rows["State"]), key=_state_order)
    for goal in GOAL_KINDS:
        for state in states:
            values = {}
            for name, table in series.items():
                present = (goal, state) in table.index
                values[name] = [
                    float(table.loc[(goal, state)].get(t, 0.0)) if present else math.nan for t in texts
                ]
            if all(math.isnan(v) for vs in values.values() for v in vs):
                continue
            figures.append(
                _figure(
                    bar_chart(
                        f"s2-{model.name}-{goal}-{state}",
                        f"{goal}, {state}",
                        [_short(t) for t in texts],
                        values,
                        y_max=1,
                        y_label="share",
                        width=400,
                        height=290,
                        label_angle=60,
                    )
                )
            )
    return figures, ""


# ---- health of every output ------------------------------------------------------------------------------


def _health(model: _Model, folder: Path) -> str:
    lines = [
        "<table><tr><th>output</th><th>state</th><th>rows</th><th>failed</th><th>empty</th>"
        "<th>coverage (median / min)</th></tr>"
    ]
    counts: dict[str, list[float]] = {"failed": [], "empty": []}
    labels = []
    for (study, pipeline), output in sorted(model.outputs.items()):
        check = check_output(output, str(output.path.relative_to(folder)), model.name)
        coverage = ""
        if output.frame is not None and pipeline == "probs":
            parts = []
            for column in (c for c in output.frame.columns if c.endswith("_coverage")):
                values = pd.to_numeric(output.frame[column], errors="coerce").dropna()
                if len(values):
                    parts.append(
                        f"{column.removesuffix('_coverage')}: {values.median():.3g} / {values.min():.3g}"
                    )
            coverage = "; ".join(parts)
        expected = check.expected_rows if check.expected_rows is not None else "?"
        lines.append(
            f"<tr><td>{escape(check.relative_path)}</td><td>{escape(check.state.value)}</td>"
            f"<td>{check.rows or 0}/{expected}</td><td>{check.failed_rows}</td><td>{check.empty_rows}</td>"
            f"<td>{escape(coverage)}</td></tr>"
        )
        labels.append(f"{study} {pipeline}")
        counts["failed"].append(float(check.failed_rows))
        counts["empty"].append(float(check.empty_rows))
    lines.append("</table>")
    top = max([*counts["failed"], *counts["empty"], 1.0])
    chart = bar_chart(f"health-{model.name}", "failed and empty rows", labels, counts, y_max=top, width=360)
    return "".join(lines) + f'<div class="figures">{_figure(chart)}</div>'


def build_report(folder: Path) -> str:
    """The report's HTML for every output under `folder`; ResultsInputError when there is none."""
    outputs = [read_output(path) for path in discover_outputs(folder)]
    if not any(output.frame is not None for output in outputs):
        raise ResultsInputError(
            f"{folder}: holds no finished worker output (no <name>.csv with its meta file)."
        )
    models = _models(o for o in outputs if o.frame is not None)
    body = [
        f"<h1>Grace results: {escape(folder.name or str(folder))}</h1>",
        f'<p class="note">{len(models)} model(s): {escape(", ".join(m.name for m in models))}. '
        f"Built {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from {escape(str(folder))}. "
        "Failed rows are left out of every plot; empty rows count as given.</p>",
        "<h2>Study 1: knowledge attribution</h2>",
        '<p class="note">a = access (how many of the 3 items the speaker looked at), o = observe (how many '
        "of those the speaker reports).</p>",
    ]
    for model in models:
        parts = []
        if (probs := model.get("study1", "probs")) is not None and (figures := _study1_exp2(model, probs)):
            parts.append(f"<h4>{STUDY1_EXP2_HEADING}</h4>{_figures(figures)}")
        if (extracted := model.get("study1", "extract")) is not None and (
            figures := _study1_exp1(model, extracted)
        ):
            parts.append(f"<h4>{STUDY1_EXP1_HEADING}</h4>{_figures(figures)}")
        if parts:
            body.append(f"<h3>{escape(model.name)}</h3>{''.join(parts)}")
    body.append("<h2>Study 2: polite speech</h2>")
    for model in models:
        figures, note = _study2(model)
        if figures:
            body.append(f"<h3>{escape(model.name)}</h3>")
            if note:
                body.append(f'<p class="note">{escape(note)}</p>')
            body.append(_figures(figures))
    body.append("<h2>Rows, failures and probability coverage</h2>")
    body.append(
        '<p class="note">Coverage: the total probability the model gave the allowed answers '
        "(1 means it would only ever answer with one of them).</p>"
    )
    for model in models:
        body.append(f"<h3>{escape(model.name)}</h3>{_health(model, folder)}")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>Grace results</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(folder: Path, out: Path) -> int:
    """Write the report; the number of figures in it."""
    html = build_report(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, html)
    return html.count('<svg class="plot"')
