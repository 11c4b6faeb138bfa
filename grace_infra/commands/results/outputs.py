"""One worker output file as the results commands see it: its companions, rows, failures and empties.

The worker writes `<name>.csv` only when every row is done, beside `<name>.csv.partial.jsonl` (its
checkpoint) and `<name>.csv.meta.json` (what ran, on which input, with which exit code). Columns are read
by name, never by position: the pipelines add and reorder columns, and a file from an older worker must
still be readable.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd

from worker import contract
from worker.contract import RunMeta
from worker.studies.extraction_section import WARNING_SEPARATOR, WARNINGS_COLUMN

__all__ = [
    "ANALYSIS_DIR",
    "ERROR_COLUMNS",
    "OutputFile",
    "ResultsInputError",
    "answer_columns",
    "companion_paths",
    "failed_mask",
    "read_output",
    "row_outcomes",
    "warned_mask",
    "warning_counts",
]

# A row failed when any of these is non-empty: the runner's error column, and extraction's own.
ERROR_COLUMNS = ("error", "extraction_errors")
# Experiment 1's answer columns when the meta file does not list them (`reply_columns` in its parameters):
# both designs' reply columns (jobs/studies/<design>/).
QUERY_ANSWER_COLUMNS = (
    "response_quantity", "response_knowledge", "response",
    "model_response", "response_story", "response_speech",
)  # fmt: skip
COVERAGE_SUFFIX = "_coverage"
TIDY_SUFFIX = ".tidy.csv"  # the long-format table written beside an Experiment 2 file
ANALYSIS_DIR = "analysis"  # `grace results tidy` writes the researchers' tables here, under the folder


# A value a warning reports after "= " (e.g. a sum of percentages): masked to group warnings by kind.
REPORTED_VALUE = re.compile(r"(?<== )-?\d+(?:\.\d+)?")
SHOWN_VALUES = 5


class Outcome(StrEnum):
    """What one output row holds, whatever the pipeline: every answer field, some, none, or an error."""

    COMPLETE = "complete"
    PARTIAL = "partial"  # some answer fields are empty (a reply not given, a field the reply did not state)
    EMPTY = "empty"  # no error, but every answer field is empty
    FAILED = "failed"  # an error message


class ResultsInputError(Exception):
    """A folder or file the results commands cannot use; the message is one sentence naming it."""


def companion_paths(output: Path) -> tuple[Path, Path]:
    """The checkpoint and meta file the worker writes beside `output`."""
    return (
        output.with_name(output.name + contract.CHECKPOINT_SUFFIX),
        output.with_name(output.name + contract.META_SUFFIX),
    )


def output_of(path: Path) -> Path | None:
    """The output CSV a campaign file belongs to (itself for a CSV), or None for any other file (and for
    the tables `grace results tidy` writes)."""
    name = path.name
    if path.parent.name == ANALYSIS_DIR:
        return None
    for suffix in (contract.CHECKPOINT_SUFFIX, contract.META_SUFFIX):
        if name.endswith(suffix):
            return path.with_name(name.removesuffix(suffix))
    return path if name.endswith(".csv") and not name.endswith(TIDY_SUFFIX) else None


@dataclass
class OutputFile:
    """An output CSV (perhaps not written yet) and what its meta file says."""

    path: Path
    frame: pd.DataFrame | None  # None until the worker has written the CSV
    meta: RunMeta | None  # None when there is no meta file
    checkpoint_rows: int  # lines in the checkpoint after its header (rows finished so far)

    @property
    def pipeline(self) -> str:
        return (self.meta.pipeline if self.meta else None) or ""

    @property
    def parameters(self) -> dict[str, Any]:
        return (self.meta.parameters if self.meta else None) or {}

    @property
    def _input(self) -> contract.MetaInput:
        return self.meta.input if self.meta else contract.MetaInput()

    @property
    def model_name(self) -> str:
        if self.frame is not None and "model_name" in self.frame.columns and len(self.frame):
            return str(self.frame["model_name"].iloc[0])
        return str(self.parameters.get("model_name") or self.path.parent.name)

    @property
    def study(self) -> str:
        return str(self.parameters.get("study") or self.path.name.split("_", 1)[0])

    @property
    def samples(self) -> int:
        """Answers per input row (the worker's `samples_per_row`; 1 unless the run sampled)."""
        for value in (self._input.samples_per_row, self.parameters.get("samples_per_row")):
            if isinstance(value, int) and value > 0:
                return value
        return 1

    @property
    def expected_rows(self) -> int | None:
        """Input rows x samples, from the meta file: the rows a complete output has."""
        rows = self._input.rows_in_file
        return rows * self.samples if rows is not None else None

    @property
    def limit(self) -> int | None:
        """`--limit N` of the run (a smoke run processes only the first N input rows)."""
        return self._input.limit

    @property
    def status(self) -> str:
        """The meta file's `status`: complete, or why the run stopped (interrupted, storage_error, ...)."""
        return (self.meta.status if self.meta else None) or ""

    @property
    def rows_to_resend(self) -> int:
        """Rows the next run sends again: failed for the server's sake (transport), or never done."""
        if self.meta is None:
            return 0
        counts = (self.meta.rows.failed_transport, self.meta.rows.not_done)
        return sum(count for count in counts if count is not None)  # a count that is not a number is 0

    @property
    def exit_code(self) -> int | None:
        return self.meta.exit_code if self.meta else None


def read_output(path: Path) -> OutputFile:
    """Read `path` and its companions; ResultsInputError naming the file when one is unreadable."""
    checkpoint, meta_path = companion_paths(path)
    frame = None
    if path.is_file():
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise ResultsInputError(f"{path}: not a readable CSV ({str(err).strip()}).") from err
    meta = None
    if meta_path.is_file():
        try:
            document = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ResultsInputError(f"{meta_path}: not a readable JSON meta file ({err}).") from err
        if not isinstance(document, dict):
            raise ResultsInputError(f"{meta_path}: expected a JSON object.")
        meta = RunMeta.model_validate(document)  # never fails: a value of the wrong type reads as None
    lines = 0
    if checkpoint.is_file():
        with checkpoint.open("rb") as handle:
            lines = max(sum(1 for line in handle if line.strip()) - 1, 0)  # minus the header line
    return OutputFile(path=path, frame=frame, meta=meta, checkpoint_rows=lines)


def failed_mask(frame: pd.DataFrame) -> pd.Series:
    """Rows carrying an error message in any error column."""
    failed = pd.Series(False, index=frame.index)
    for column in ERROR_COLUMNS:
        if column in frame.columns:
            failed |= frame[column].str.strip() != ""
    return failed


def answer_columns(output: OutputFile) -> list[str]:
    """The columns holding the model's answer for this output's pipeline (present ones only)."""
    frame = output.frame
    if frame is None:
        return []
    columns = list(frame.columns)
    if output.pipeline == "probs":
        return [c for c in columns if c.endswith(COVERAGE_SUFFIX)]
    if output.pipeline == "extract":
        fields = output.parameters.get("example")
        return [c for c in fields if c in columns] if isinstance(fields, dict) else []
    listed = output.parameters.get("reply_columns")
    replies = listed if isinstance(listed, list) else QUERY_ANSWER_COLUMNS
    return [c for c in replies if c in columns]


def _answered(output: OutputFile) -> pd.DataFrame:
    """Per row and answer column: does the row hold an answer there (text, a field, coverage > 0)?"""
    frame = output.frame
    assert frame is not None
    columns = answer_columns(output)
    if output.pipeline == "probs":
        coverage = frame[columns].apply(pd.to_numeric, errors="coerce").fillna(0.0)
        return coverage > 0
    return frame[columns].apply(lambda col: col.str.strip()) != ""


def row_outcomes(output: OutputFile) -> pd.Series:
    """Each row's Outcome (as text): failed, else complete, partial or empty by its answer columns."""
    frame = output.frame
    assert frame is not None
    answered = _answered(output)
    outcome = pd.Series(Outcome.COMPLETE.value, index=frame.index)
    if answered.shape[1]:
        some, every = answered.any(axis=1), answered.all(axis=1)
        outcome[~some] = Outcome.EMPTY.value
        outcome[some & ~every] = Outcome.PARTIAL.value
    outcome[failed_mask(frame)] = Outcome.FAILED.value
    return outcome


def warned_mask(output: OutputFile) -> pd.Series:
    """Rows carrying at least one extraction warning."""
    frame = output.frame
    assert frame is not None
    if WARNINGS_COLUMN not in frame.columns:
        return pd.Series(False, index=frame.index)
    return frame[WARNINGS_COLUMN].str.strip() != ""


def warning_counts(output: OutputFile) -> Counter[str]:
    """Each kind of extraction warning and the rows carrying it (none for other pipelines). Warnings that
    differ only in the value they report ("... = 274, expected 100", "... = 252, expected 100") are one
    kind, shown with the value replaced by N and the first values seen."""
    frame = output.frame
    rows: Counter[str] = Counter()
    values: dict[str, list[str]] = {}
    if frame is None or WARNINGS_COLUMN not in frame.columns:
        return rows
    for cell in frame[WARNINGS_COLUMN]:
        for warning in (w.strip() for w in str(cell).split(WARNING_SEPARATOR) if w.strip()):
            kind = REPORTED_VALUE.sub("N", warning)
            rows[kind] += 1
            values.setdefault(kind, []).extend(REPORTED_VALUE.findall(warning))
    return Counter({_with_values(kind, values[kind]): n for kind, n in rows.items()})


def _with_values(kind: str, values: list[str]) -> str:
    if not values:
        return kind
    shown = ", ".join(values[:SHOWN_VALUES]) + (", ..." if len(values) > SHOWN_VALUES else "")
    return f"{kind} (N: {shown})"
