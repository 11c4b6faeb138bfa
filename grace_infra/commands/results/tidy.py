"""The long-format probability table for R: one row per (input row, sample, question, option).

The wide Experiment 2 file has, per question, one `prob_*` column per option plus JSON columns
`<question>_raw` (option -> the model's probability) and `<question>_logprobs` (option -> its natural log),
and `<question>_coverage` (the options' total). The tidy table is built from those JSON columns and the
meta file's question list (name, option text, label, value), so it needs no study file and follows any
option set the study defines:

    model_name, study, row, sample, <the study's condition columns>, question, option, option_text,
    option_value, probability, log_probability, raw_probability, coverage, method, error

`probability` is the option's share of the options' total (raw_probability / coverage, what the wide
`prob_*` columns hold); `log_probability` is the natural log of the model's own (raw) probability.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from grace_infra.commands.results.outputs import TIDY_SUFFIX, OutputFile, ResultsInputError, failed_mask
from worker.run.atomic_files import atomic_writer

__all__ = ["TIDY_COLUMNS", "tidy_path", "tidy_probabilities", "write_tidy"]

# The input columns that identify a trial's condition, per study, carried into the long table (present
# ones only) so R needs no join; the prompts' long texts stay in the wide file.
CONDITION_COLUMNS = {
    "study1": ("participant_id", "story_shortname", "access", "observe"),
    "study2": ("Participant_ID", "Domain", "Goal", "State", "Utterance"),
}
ROW_COLUMNS = ("row", "input_row")  # the input row's number when the worker records it
TIDY_COLUMNS = (
    "model_name", "study", "row", "sample", "question", "option", "option_text", "option_value",
    "probability", "log_probability", "raw_probability", "coverage", "method", "error",
)  # fmt: skip


def tidy_path(output: Path) -> Path:
    """`exp2/<model>/study1_probabilities.csv` -> `exp2/<model>/study1_probabilities.tidy.csv`."""
    return output.with_name(output.name.removesuffix(".csv") + TIDY_SUFFIX)


def _questions(output: OutputFile) -> list[dict[str, Any]]:
    """The meta file's questions; without one, every `<name>_raw` column with its JSON's keys."""
    listed = output.parameters.get("questions")
    if isinstance(listed, list) and listed:
        return [q for q in listed if isinstance(q, dict) and "name" in q]
    assert output.frame is not None
    names = [c.removesuffix("_raw") for c in output.frame.columns if c.endswith("_raw")]
    return [{"name": name, "options": []} for name in names if f"{name}_logprobs" in output.frame.columns]


def _json_cell(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def tidy_probabilities(output: OutputFile) -> pd.DataFrame:
    """The long table of one Experiment 2 output; ResultsInputError when it is not one."""
    frame = output.frame
    if frame is None:
        raise ResultsInputError(f"{output.path}: not written yet; nothing to reshape.")
    questions = _questions(output)
    if not questions:
        raise ResultsInputError(f"{output.path}: no probability questions (no <question>_raw columns).")
    conditions = [c for c in CONDITION_COLUMNS.get(output.study, ()) if c in frame.columns]
    row_column = next((c for c in ROW_COLUMNS if c in frame.columns), None)
    failed = failed_mask(frame)
    records: list[dict[str, Any]] = []
    for position, row in enumerate(frame.to_dict("records")):
        base = {
            "model_name": row.get("model_name") or output.model_name,
            "study": output.study,
            # Without a row column: the worker writes each row's samples one after another.
            "row": row[row_column] if row_column else position // output.samples,
            "sample": row.get("sample", ""),
            **{column: row[column] for column in conditions},
        }
        error = row.get("error", "") if failed.iloc[position] else ""
        for question in questions:
            name = question["name"]
            raw = _json_cell(row.get(f"{name}_raw", ""))
            logs = _json_cell(row.get(f"{name}_logprobs", ""))
            coverage = _number(row.get(f"{name}_coverage"))
            options = question.get("options") or [{"label": label} for label in raw]
            for option in options:
                label = str(option.get("label"))
                raw_p = _number(raw.get(label))
                records.append(
                    {
                        **base,
                        "question": name,
                        "option": label,
                        "option_text": option.get("text", label),
                        "option_value": option.get("value"),
                        "probability": raw_p / coverage if coverage > 0 else math.nan,
                        "log_probability": _number(logs.get(label)),
                        "raw_probability": raw_p,
                        "coverage": coverage,
                        "method": row.get(f"{name}_method", ""),
                        "error": error,
                    }
                )
    ordered = [*TIDY_COLUMNS[:4], *conditions, *TIDY_COLUMNS[4:]]
    return pd.DataFrame.from_records(records, columns=ordered)


def write_tidy(output: OutputFile) -> Path:
    """Write the long table beside the wide file (atomically); its path."""
    target = tidy_path(output.path)
    table = tidy_probabilities(output)
    with atomic_writer(target) as handle:
        # RFC 4180 line ends, as the worker writes its own outputs (a lone "\r" in a cell stays quoted).
        table.to_csv(handle, index=False, lineterminator="\r\n")
    return target
