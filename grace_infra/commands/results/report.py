"""`grace results report DIR --out report.html`: the researchers' measures and statistics, every model side
by side, in one HTML file.

The page is self-contained: inline SVG (svg.py), inline CSS, no script, and a Content-Security-Policy
that forbids every fetch, so it opens the same on a laptop offline as on a shared drive.

It is built from the item tables (analysis.py: one observation per model and input row, the samples
aggregated), so every n is a number of rows, and every error bar a standard error over rows:

    Rows by outcome     every output's rows: complete, partial, empty, failed, and the extraction warnings
    Study 1, per exp.   one figure per access x observe condition: the mean percentage for each number
                        0-3 (Study1.R's X0..X3), models side by side; P(knows exactly = yes) per condition;
                        the means and SEs, Study1.R's ANOVA and paired comparisons per model, beside the
                        paper's human values Study1.R records (statistics.py cites the lines)
    Study 2, per exp.   one figure per goal x state: the proportion of each of the eight sentences, models
                        side by side, the chance line at 1/8; Study2.R's binomial tests per model

An Experiment 2 distribution whose coverage (the total probability the model gave the allowed answers) is
below `--min-coverage` is not drawn: its bars would be the noise of a renormalised near-zero mass. The
model's legend entry and an x mark say "not measurable".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import pandas as pd

from grace_infra import constants as c
from grace_infra.commands.results import statistics as st
from grace_infra.commands.results.analysis import (
    GOAL_COLUMN,
    STATES,
    UTTERANCES,
    AnalysisTables,
    analysis_tables,
)
from grace_infra.commands.results.check import (
    OUTCOME_HEADERS,
    check_output,
    discover_outputs,
    outcome_counts,
)
from grace_infra.commands.results.check import (
    OutputCheck as CheckRows,
)
from grace_infra.commands.results.outputs import OutputFile, ResultsInputError, read_output
from grace_infra.commands.results.svg import Chart, Reference, bar_chart
from worker.run.atomic_files import write_atomically
from worker.studies.rule_coder import PARSER_METHOD

__all__ = ["build_report", "write_report"]

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1500px; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { margin-top: 1.5em; }
.figures { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; width: min-content; }
figcaption, .note { font-size: 0.85em; color: #555; max-width: 70em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; } td:first-child { text-align: left; }
td.human { background: #f4f4f4; }
"""
EXPERIMENT_TITLES = {
    "exp1": "Experiment 1: the models' answers (samples coded, then aggregated per row)",
    "exp2": "Experiment 2: the models' probabilities (from log-probabilities)",
}
STUDY1_Y = {"exp1": "% of samples answering k", "exp2": "expected % for exactly k"}
CHANCE_LABEL = "chance 1/8 (one of eight sentences)"


def _figure(svg: str, caption: str = "") -> str:
    text = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{svg}{text}</figure>"


def _figures(figures: Iterable[str]) -> str:
    return f'<div class="figures">{"".join(figures)}</div>'


def _p(value: float) -> str:
    if math.isnan(value):
        return "p = NA"
    return "p < .001" if value < 0.001 else f"p = {value:.3f}"


def _n_label(model: str, rows: int, samples: int) -> str:
    return f"{model} (n = {rows} rows, {samples} samples)"


def _models(items: pd.DataFrame) -> list[str]:
    return sorted(items["model_name"].unique()) if not items.empty else []


def _low_coverage(items: pd.DataFrame, columns: Sequence[str], min_coverage: float) -> str:
    """Why a model's distribution is not measurable ("" when it is): its median coverage over rows."""
    present = [column for column in columns if column in items.columns]
    if not present or items.empty:
        return ""
    values = pd.to_numeric(items[present].stack(), errors="coerce").dropna()
    if values.empty:
        return ""
    median = float(values.median())
    return f"median coverage {median:.2g} < {min_coverage:g}" if median < min_coverage else ""


def _outcome_series(checks: list[CheckRows]) -> dict[str, list[float]]:
    return {
        header: [float(outcome_counts(check)[index]) for check in checks]
        for index, header in enumerate(OUTCOME_HEADERS[:4])
    }


def _unmeasurable(
    items: pd.DataFrame, models: list[str], columns: Sequence[str], min_coverage: float
) -> dict[str, str]:
    """model -> why its distribution is not measurable, for the models whose rows' coverage is too low."""
    reasons = {m: _low_coverage(items[items["model_name"] == m], columns, min_coverage) for m in models}
    return {model: reason for model, reason in reasons.items() if reason}


def _per_model(
    summary: pd.DataFrame, models: list[str], key: str, value: str, keys: Sequence[object]
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, str]]:
    """A panel's series, error bars and legend labels: per model, `value` and `se` for each of `keys`
    from a summary of statistics.py (columns model_name, key, value, se, n, samples)."""
    series, errors, labels = {}, {}, {}
    for model in models:
        rows = summary[summary["model_name"] == model].set_index(key)
        series[model] = [float(rows[value].get(k, math.nan)) for k in keys]
        errors[model] = [float(rows["se"].get(k, math.nan)) for k in keys]
        n, samples = (int(rows["n"].iloc[0]), int(rows["samples"].iloc[0])) if len(rows) else (0, 0)
        labels[model] = _n_label(model, n, samples)
    return series, errors, labels


# ---- rows by outcome -------------------------------------------------------------------------------------


def _outcomes(outputs: list[OutputFile], folder: Path) -> str:
    checks = [check_output(o, str(o.path.relative_to(folder))) for o in outputs if o.frame is not None]
    head = "".join(f"<th>{h}</th>" for h in ["output", "pipeline", "state", "rows", *OUTCOME_HEADERS])
    lines = [f"<table><tr>{head}</tr>"]
    for output, check in zip((o for o in outputs if o.frame is not None), checks, strict=True):
        expected = check.expected_rows if check.expected_rows is not None else "?"
        counts = "".join(
            f'<td data-outcome="{h}">{n}</td>'
            for h, n in zip(OUTCOME_HEADERS, outcome_counts(check), strict=True)
        )
        lines.append(
            f'<tr data-output="{escape(check.relative_path)}"><td>{escape(check.relative_path)}</td>'
            f"<td>{escape(output.pipeline)}</td><td>{escape(check.state.value)}</td>"
            f"<td>{check.rows or 0}/{expected}</td>{counts}</tr>"
        )
    lines.append("</table>")
    warnings = [
        f"<li>{escape(check.relative_path)}: {rows} row(s): {escape(warning)}</li>"
        for check in checks
        for warning, rows in check.warnings.most_common()
    ]
    if warnings:
        lines.append(f'<p><b>Extraction warnings</b></p><ul class="warnings">{"".join(warnings)}</ul>')
    chart = Chart(
        figure_id="outcomes",
        title=f"rows by outcome, per output (n = {sum(check.rows or 0 for check in checks)} rows)",
        categories=[check.relative_path.removesuffix(".csv") for check in checks],
        series=(series := _outcome_series(checks)),
        labels={h: f"{h} (n = {sum(values):.0f} rows)" for h, values in series.items()},
        y_max=max([check.rows or 0 for check in checks] + [1]),
        y_label="rows",
        integer_axis=True,
        width=max(360, 60 * len(checks) + 80),
        height=340,
        label_angle=50,
    )
    return "".join(lines) + _figures([_figure(bar_chart(chart))])


def _coding_note(tables: AnalysisTables) -> str:
    if tables.experiment != "exp1" or "coding" not in tables.all_models.columns:
        return ""
    parts = []
    for model, group in tables.all_models.groupby("model_name"):
        coded = int((group["coding"] != "").sum())
        by_parser = int((group["coding"] == PARSER_METHOD).sum())
        self_coded = tables.items.loc[tables.items["model_name"] == model, "n_self_coded"].sum()
        text = f"{model}: {coded} of {len(group)} samples coded ({by_parser} by the parser)"
        parts.append(text + (f", {self_coded} coded by {model} itself" if self_coded else ""))
    return (
        '<p class="note coding">Coded answers (the study\'s parser, or the extraction where it ran): '
        f"{escape('; '.join(parts))}. Uncoded samples (a reply not in the format asked) are left out.</p>"
    )


# ---- Study 1 ---------------------------------------------------------------------------------------------


def _study1(tables: AnalysisTables, min_coverage: float) -> list[str]:
    items = tables.items
    if items.empty or "X0" not in items.columns:
        return []
    means = st.condition_means(items)
    if means.empty:
        return ['<p class="note">No row with all four numbers coded.</p>']
    models = _models(items)
    unmeasurable = _unmeasurable(items, models, [f"coverage_state{k}" for k in STATES], min_coverage)
    figures = []
    cells = sorted({(int(a), int(o)) for a, o in zip(means["access"], means["observe"], strict=True)})
    for access, observe in cells:
        cell = means[(means["access"] == access) & (means["observe"] == observe)]
        series, errors, labels = _per_model(cell, models, "k", "mean", STATES)
        chart = Chart(
            figure_id=f"s1-{tables.experiment}-a{access}-o{observe}",
            title=f"access {access}, observe {observe}",
            categories=[str(k) for k in STATES],
            series=series, errors=errors, labels=labels,
            not_measurable={m: r for m, r in unmeasurable.items() if m in series},
            y_max=100, y_label=STUDY1_Y[tables.experiment], width=330, height=230, label_angle=0,
        )  # fmt: skip
        figures.append(_figure(bar_chart(chart)))
    figures.append(_figure(bar_chart(_knowledge_chart(tables, models, cells, min_coverage))))
    return [
        _figures(figures),
        _study1_means_table(means, unmeasurable),
        _anova_table(tables.stem, items, models, unmeasurable),
        _paired_table(tables.stem, items, models, unmeasurable),
    ]


def _knowledge_chart(
    tables: AnalysisTables, models: list[str], cells: list[tuple[int, int]], min_coverage: float
) -> Chart:
    items = tables.items.dropna(subset=["knows_yes"])
    items = items.assign(access=items["access"].astype(int), observe=items["observe"].astype(int))
    series, errors, labels, unmeasurable = {}, {}, {}, {}
    for model in models:
        rows = items[items["model_name"] == model]
        grouped = rows.groupby(["access", "observe"])["knows_yes"]
        mean, se = grouped.mean(), grouped.std(ddof=1) / grouped.count().pow(0.5)
        series[model] = [float(mean.get(cell, math.nan)) for cell in cells]
        errors[model] = [float(se.get(cell, math.nan)) for cell in cells]
        labels[model] = _n_label(model, len(rows), int(rows["n_samples"].sum()))
        if reason := _low_coverage(rows, ["coverage_knowledge"], min_coverage):
            unmeasurable[model] = reason
    return Chart(
        figure_id=f"s1-{tables.experiment}-knows", title="P(knows exactly = yes)",
        categories=[f"a{a} o{o}" for a, o in cells], series=series, errors=errors, labels=labels,
        not_measurable=unmeasurable, y_max=1, y_label="share / probability of yes", width=420, height=230,
    )  # fmt: skip


def _study1_means_table(means: pd.DataFrame, unmeasurable: dict[str, str]) -> str:
    head = "".join(f"<th>X{k} mean +/- SE</th>" for k in STATES)
    lines = [
        "<p><b>Means and standard errors by access x observe</b> (Study1.R:29-34; n = rows)</p>",
        f"<table><tr><th>model</th><th>access</th><th>observe</th><th>n</th>{head}</tr>",
    ]
    for (model, access, observe), group in means.groupby(["model_name", "access", "observe"]):
        by_k = group.set_index("k")
        if model in unmeasurable:
            cells = f'<td colspan="{len(STATES)}">not measurable ({escape(unmeasurable[model])})</td>'
        else:
            cells = "".join(
                f'<td data-model="{escape(str(model))}" data-cell="a{access} o{observe}" data-k="{k}" '
                f'data-mean="{by_k.loc[k, "mean"]!r}" data-se="{by_k.loc[k, "se"]!r}">'
                f"{by_k.loc[k, 'mean']:.1f} +/- {by_k.loc[k, 'se']:.1f}</td>"
                for k in STATES
            )
        lines.append(
            f"<tr><td>{escape(str(model))}</td><td>{access}</td><td>{observe}</td>"
            f"<td>{int(by_k['n'].iloc[0])}</td>{cells}</tr>"
        )
    return "".join(lines) + "</table>"


def _stat_cell(table: str, model: str, test: str, text: str, **values: float) -> str:
    """A statistic's cell: its text, and every number at full precision for a reader (and the tests)."""
    data = " ".join(f'data-{name}="{value!r}"' for name, value in values.items())
    return (
        f'<td class="stat" data-table="{table}" data-model="{escape(model)}" data-test="{escape(test)}" '
        f"{data}>{escape(text)}</td>"
    )


def _model_header(models: list[str]) -> str:
    return "".join(f"<th>{escape(m)}</th>" for m in models)


def _anova_table(table: str, items: pd.DataFrame, models: list[str], unmeasurable: dict[str, str]) -> str:
    results = {m: {r.term: r for r in st.study1_anova(items[items["model_name"] == m])} for m in models}
    lines = [
        "<p><b>ANOVA on X3</b>, <code>aov(value ~ access * observe)</code> (Study1.R:118-121; access and "
        "observe numeric, as read.csv reads them, so 1 df each). Human: the paper's values as "
        "Study1.R:171-173 records them.</p>",
        f"<table><tr><th>effect</th><th>human (paper)</th>{_model_header(models)}</tr>",
    ]
    for term, label, human in st.ANOVA_TERMS:
        cells = []
        for model in models:
            row = results[model].get(term)
            if model in unmeasurable or row is None:
                cells.append(f"<td>{'not measurable' if model in unmeasurable else 'too few rows'}</td>")
                continue
            text = f"F({row.df:.0f},{row.df_residual:.0f}) = {row.f:.2f}, {_p(row.p)}"
            cells.append(
                _stat_cell(
                    table,
                    model,
                    f"anova {term}",
                    text,
                    statistic=row.f,
                    df=row.df,
                    df2=row.df_residual,
                    p=row.p,
                )
            )
        lines.append(
            f'<tr><td>{escape(label)}</td><td class="human">{escape(human)}</td>{"".join(cells)}</tr>'
        )
    return "".join(lines) + "</table>"


def _paired_table(table: str, items: pd.DataFrame, models: list[str], unmeasurable: dict[str, str]) -> str:
    results = {m: {r.comparison: r for r in st.paired_tests(items[items["model_name"] == m])} for m in models}
    lines = [
        '<p><b>Paired comparisons</b>, <code>t.test(X_a - X_b, alternative = "greater")</code> within one '
        "access x observe condition (Study1.R:108-146). Human: the paper's values as Study1.R:191-198 "
        "records them.</p>",
        f"<table><tr><th>comparison</th><th>X_a - X_b</th><th>human (paper)</th>{_model_header(models)}</tr>",
    ]
    for comparison in st.PAIRED_COMPARISONS:
        cells = []
        test = f"t a{comparison.access} o{comparison.observe} X{comparison.higher}-X{comparison.lower}"
        for model in models:
            row = results[model].get(comparison)
            if model in unmeasurable or row is None:
                cells.append(f"<td>{'not measurable' if model in unmeasurable else 'too few rows'}</td>")
                continue
            text = f"t({row.df}) = {row.t:.2f}, {_p(row.p)}"
            cells.append(_stat_cell(table, model, test, text, statistic=row.t, df=float(row.df), p=row.p))
        lines.append(
            f"<tr><td>{escape(comparison.label)}</td><td>X{comparison.higher} - X{comparison.lower}</td>"
            f'<td class="human">{escape(comparison.human)}</td>{"".join(cells)}</tr>'
        )
    return "".join(lines) + "</table>"


# ---- Study 2 ---------------------------------------------------------------------------------------------


def _state_order(state: str) -> tuple[int, str]:
    digits = "".join(ch for ch in state.split(" ", maxsplit=1)[0] if ch.isdigit())
    return (int(digits) if digits else 99, state)


def _sentence(label: str) -> str:
    frame, _, quality = label.partition("_")
    return f"{frame} {quality}"


def _study2(tables: AnalysisTables, min_coverage: float) -> list[str]:
    items = tables.items
    if items.empty or "share_was_good" not in items.columns:
        return []
    proportions = st.utterance_proportions(items)
    if proportions.empty:
        return ['<p class="note">No row with a coded sentence.</p>']
    models = _models(items)
    figures = []
    states = sorted(proportions["State"].unique(), key=_state_order)
    goals = [g for g in ("informational", "social", "both") if g in set(proportions[GOAL_COLUMN])]
    for goal in goals:
        for state in states:
            panel = proportions[(proportions["State"] == state) & (proportions[GOAL_COLUMN] == goal)]
            if panel.empty:  # no model has a row of this goal and state
                continue
            panel_items = items[(items["State"] == state) & (items[GOAL_COLUMN] == goal)]
            series, errors, labels = _per_model(panel, models, "utterance", "proportion", UTTERANCES)
            unmeasurable = _unmeasurable(panel_items, models, ["coverage_response"], min_coverage)
            chart = Chart(
                figure_id=f"s2-{tables.experiment}-{goal}-{state}", title=f"{goal}, {state}",
                categories=[_sentence(u) for u in UTTERANCES], series=series, errors=errors, labels=labels,
                not_measurable=unmeasurable, references=[Reference(st.CHANCE, CHANCE_LABEL)],
                y_max=1, y_label="proportion chosen", width=420, height=300, label_angle=55,
            )  # fmt: skip
            figures.append(_figure(bar_chart(chart)))
    return [_figures(figures), _binomial_table(tables.stem, items, models, min_coverage)]


def _binomial_table(table: str, items: pd.DataFrame, models: list[str], min_coverage: float) -> str:
    lines = [
        "<p><b>Binomial tests against chance 1/8</b>, <code>binom.test(k, n, p = 0.125, alternative = "
        '"greater")</code> (Study2.R:87-108), one observation per row: its modal sentence. Study2.R records '
        "no human values.</p>",
        f"<table><tr><th>test</th>{_model_header(models)}</tr>",
    ]
    results = {m: {r.test: r for r in st.binomial_tests(items[items["model_name"] == m])} for m in models}
    for test in st.BINOMIAL_TESTS:
        cells = []
        for model in models:
            mine = items[items["model_name"] == model]
            row = results[model].get(test)
            if _low_coverage(mine, ["coverage_response"], min_coverage):
                cells.append("<td>not measurable</td>")
                continue
            if row is None:
                cells.append("<td>no rows</td>")
                continue
            text = f"{row.successes}/{row.n} = {row.successes / row.n:.2f}, {_p(row.p)}"
            label = "binom 0 hearts" if test.state == "0 hearts" else "binom 1 heart"
            cells.append(
                _stat_cell(
                    table, model, label, text, statistic=float(row.successes), df=float(row.n), p=row.p
                )
            )
        lines.append(f"<tr><td>{escape(test.label)} (Study2.R:{test.line})</td>{''.join(cells)}</tr>")
    return "".join(lines) + "</table>"


# ---- the page --------------------------------------------------------------------------------------------

STUDIES: tuple[tuple[str, str, Callable[[AnalysisTables, float], list[str]]], ...] = (
    ("study1", "Study 1: knowledge attribution", _study1),
    ("study2", "Study 2: polite speech", _study2),
)


def build_report(folder: Path, *, min_coverage: float = c.RESULTS_MIN_COVERAGE) -> str:
    """The report's HTML for every output under `folder`; ResultsInputError when there is none."""
    outputs = [read_output(path) for path in discover_outputs(folder)]
    finished = [output for output in outputs if output.frame is not None]
    if not finished:
        raise ResultsInputError(
            f"{folder}: holds no finished worker output (no <name>.csv with its meta file)."
        )
    tables = analysis_tables(finished)
    models = sorted({output.model_name for output in finished})
    body = [
        f"<h1>Grace results: {escape(folder.name or str(folder))}</h1>",
        f'<p class="note">{len(models)} model(s): {escape(", ".join(models))}. Built '
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC from {escape(str(folder))}. Every figure and test uses one "
        "observation per model and input row (its samples aggregated: <code>analysis/*_items.csv</code>, "
        "written by <code>grace results tidy</code>); n counts those rows, and the samples behind them. "
        "Error bars: +/- 1 standard error over rows. Failed rows are left out. A probability distribution "
        f"whose median coverage is below {min_coverage:g} is not drawn (x: not measurable).</p>",
        "<h2>Rows by outcome</h2>",
        '<p class="note">complete: every answer field; partial: some answer fields empty; empty: none; '
        "failed: an error; warned: rows carrying an extraction warning (listed below the table).</p>",
        _outcomes(finished, folder),
    ]
    for study, heading, section in STUDIES:
        body.append(f"<h2>{escape(heading)}</h2>")
        if study == "study1":
            body.append(
                '<p class="note">a = access (how many of the 3 items the speaker looked at), o = observe '
                "(how many of those the speaker reports).</p>"
            )
        for table in (t for t in tables if t.study == study):
            parts = section(table, min_coverage)
            if parts:
                body.append(f"<h3>{escape(EXPERIMENT_TITLES[table.experiment])}</h3>{_coding_note(table)}")
                body.extend(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>Grace results</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(folder: Path, out: Path, *, min_coverage: float = c.RESULTS_MIN_COVERAGE) -> int:
    """Write the report; the number of figures in it."""
    html = build_report(folder, min_coverage=min_coverage)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, html)
    return html.count('<svg class="plot"')
