"""`grace results check DIR`: is the campaign complete? Offline, on any folder of worker outputs.

An output is complete when its CSV exists with input rows x samples rows, its meta file records exit
code 0 (every row ok) or 3 (every row written, some carry an error), and no row waits to be sent again
(the meta file's `failed_transport` and `not_done`: rows the server could not answer, which the next run
resends). Failed rows (an error message) and empty rows (no error, but no answer: empty text, no
extracted field, zero probability coverage) are counted per output and per model, and so are complete
rows (every answer field) and partial ones (some answer fields empty, e.g. an extraction that coded the
quantity but not the knowledge answer); the extraction's warnings are listed per output. Row-specific
failures do not make a campaign incomplete, because the worker keeps them as results (a prompt over the
context length, an unusable answer) unless rerun with --retry-failed.

Which outputs are expected: with `--stack`, every output the stack plans (the render's planning code);
without, every output the folder holds a CSV, checkpoint or meta file for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from grace_infra.commands.plan_report import format_table
from grace_infra.commands.results.outputs import (
    Outcome,
    OutputFile,
    output_of,
    read_output,
    row_outcomes,
    warned_mask,
    warning_counts,
)
from worker.contract import FINISHED_EXIT_CODES, RunStatus

__all__ = ["OutputCheck", "State", "check_outputs", "discover_outputs", "format_check"]


class State(StrEnum):
    COMPLETE = "complete"
    MISSING = "missing"  # nothing at all: the Job has not started (or the folder was not pulled)
    IN_PROGRESS = "in progress"  # a checkpoint without the CSV: the worker is (or was) still running
    STOPPED = "stopped"  # no CSV; the meta file says why the run stopped (interrupted, storage, server)
    NO_META = "no meta file"
    SHORT = "rows missing"
    FAILED_RUN = "run failed"  # the meta file records an exit code other than 0 or 3
    RESEND = "rows to resend"  # written, but rows the server could not answer wait for the next run


@dataclass(frozen=True)
class OutputCheck:
    relative_path: str
    model: str
    state: State
    rows: int | None
    expected_rows: int | None
    failed_rows: int
    empty_rows: int
    exit_code: int | None
    detail: str = ""  # e.g. the stop reason, the rows to resend
    complete_rows: int = 0
    partial_rows: int = 0
    warned_rows: int = 0  # rows carrying at least one extraction warning
    warnings: Counter[str] = field(default_factory=Counter)  # warning -> rows carrying it

    @property
    def state_text(self) -> str:
        return f"{self.state.value} ({self.detail})" if self.detail else self.state.value

    @property
    def complete(self) -> bool:
        return self.state is State.COMPLETE


def discover_outputs(folder: Path) -> list[Path]:
    """Every output CSV the folder has any file of (the CSV, its checkpoint or its meta file)."""
    found = {output_of(path) for path in folder.rglob("*") if path.is_file()}
    return sorted(path for path in found if path is not None)


def _state(output: OutputFile) -> State:  # noqa: PLR0911 (one return per state, in the order checked)
    if output.frame is None:
        if output.meta is not None and output.status not in {"", RunStatus.COMPLETE}:
            return State.STOPPED
        said_something = output.meta is not None and bool(output.meta.model_fields_set)  # `{}` says nothing
        return State.IN_PROGRESS if output.checkpoint_rows or said_something else State.MISSING
    if output.meta is None:
        return State.NO_META
    if output.exit_code not in FINISHED_EXIT_CODES:
        return State.FAILED_RUN
    if output.expected_rows is None or len(output.frame) != output.expected_rows:
        return State.SHORT
    if output.rows_to_resend:
        return State.RESEND
    return State.COMPLETE


def check_output(output: OutputFile, relative_path: str, model: str | None = None) -> OutputCheck:
    frame = output.frame
    state = _state(output)
    details = {
        State.STOPPED: output.status,
        State.RESEND: str(output.rows_to_resend),
        State.SHORT: f"--limit {output.limit}" if output.limit else "",
    }
    detail = details.get(state, "")
    outcomes = Counter(row_outcomes(output)) if frame is not None else Counter[str]()
    return OutputCheck(
        relative_path=relative_path,
        model=model or output.model_name,
        state=state,
        rows=len(frame) if frame is not None else (output.checkpoint_rows or None),
        expected_rows=output.expected_rows,
        failed_rows=outcomes[Outcome.FAILED.value],
        empty_rows=outcomes[Outcome.EMPTY.value],
        exit_code=output.exit_code,
        detail=detail,
        complete_rows=outcomes[Outcome.COMPLETE.value],
        partial_rows=outcomes[Outcome.PARTIAL.value],
        warned_rows=int(warned_mask(output).sum()) if frame is not None else 0,
        warnings=warning_counts(output),
    )


def check_outputs(folder: Path, planned: Iterable[tuple[str, str]] | None = None) -> list[OutputCheck]:
    """Check every expected output under `folder`: `planned` (relative path, model) pairs, else the
    folder's own. Outputs the folder holds beyond the plan are checked too (and listed)."""
    expected = dict(planned) if planned is not None else {}
    found = {str(path.relative_to(folder)): path for path in discover_outputs(folder)}
    checks = []
    for relative in sorted(set(expected) | set(found)):
        output = read_output(folder / relative)
        checks.append(check_output(output, relative, expected.get(relative)))
    return checks


def _rows(check: OutputCheck) -> str:
    rows = "-" if check.rows is None else str(check.rows)
    return f"{rows}/{check.expected_rows if check.expected_rows is not None else '?'}"


OUTCOME_HEADERS = ["complete", "partial", "empty", "failed", "warned"]


def outcome_counts(check: OutputCheck) -> list[int]:
    """Rows per outcome, in OUTCOME_HEADERS' order (warned: rows with any extraction warning)."""
    return [check.complete_rows, check.partial_rows, check.empty_rows, check.failed_rows, check.warned_rows]


def format_warnings(checks: list[OutputCheck]) -> str:
    """Each output's extraction warnings, most frequent first, with the rows carrying each."""
    lines = []
    for check in checks:
        for warning, rows in check.warnings.most_common():
            lines.append(f"  {check.relative_path}: {rows} row(s): {warning}")
    return "extraction warnings:\n" + "\n".join(lines) if lines else ""


def format_check(checks: list[OutputCheck]) -> str:
    """One line per output (rows by outcome), then per model, then the warnings, then the verdict."""
    table = format_table(
        ["output", "state", "rows", *OUTCOME_HEADERS, "exit"],
        [[c.relative_path, c.state_text, _rows(c), *outcome_counts(c), c.exit_code] for c in checks],
    )
    per_model: dict[str, list[OutputCheck]] = {}
    for check in checks:
        per_model.setdefault(check.model, []).append(check)
    models = format_table(
        ["model", "outputs complete", "rows", *(f"{h} rows" for h in OUTCOME_HEADERS)],
        [
            [
                model,
                f"{sum(c.complete for c in group)}/{len(group)}",
                sum(c.rows or 0 for c in group),
                *(sum(column) for column in zip(*(outcome_counts(c) for c in group), strict=True)),
            ]
            for model, group in sorted(per_model.items())
        ],
    )
    done = sum(c.complete for c in checks)
    verdict = (
        f"campaign complete: {done} of {len(checks)} outputs"
        if checks and done == len(checks)
        else f"campaign INCOMPLETE: {done} of {len(checks)} outputs complete"
    )
    warnings = format_warnings(checks)
    return "\n\n".join(part for part in (table, models, warnings, verdict) if part)
