"""Is this run already done? One decision, used by the runner (before it waits on any server) and by
`python -m worker check-outputs` (before a job-mode pod loads its model).

A run is complete when its output CSV exists and the meta file beside it says `status: complete` for
the same pipeline, the same input file contents (SHA-256), the same rows processed and the same
parameters (model name, prompts, sampling: everything the checkpoint header holds), with no row a
rerun would send again (transport failures; row failures under --retry-failed). The runner removes the
old meta file, renames the output into place, then writes the new meta, so an output with a matching
meta is a finished run of exactly this experiment; anything else (no meta, other parameters, an
unreadable meta) is "not complete" and the run goes on, where the checkpoint and supersede rules
decide what happens to the old files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker import constants as c
from worker.run.atomic_files import write_atomically
from worker.run.pipeline import Pipeline
from worker.run.run_options import RunOptions

__all__ = ["PLAN_DIGEST_KEY", "complete_run", "read_meta", "record_plan_digest", "run_parameters"]

log = logging.getLogger(__name__)

PLAN_DIGEST_KEY = "plan_digest"  # the meta field extract --wait-for-digest reads
COMPLETE_STATUS = "complete"  # the runner's meta `status` once the output is written


def run_parameters(pipeline: Pipeline, options: RunOptions) -> dict[str, Any]:
    """The pipeline's parameters plus the model name (every answer depends on it) and the sampling:
    what the checkpoint header and the meta file record (the runner's `_Run.parameters`)."""
    parameters = {"model_name": options.client.model_name, **pipeline.parameters()}
    if pipeline.samples_per_row != 1:
        # Only when sampling, so checkpoints of single-answer runs keep their header.
        parameters |= {"samples_per_row": pipeline.samples_per_row, "base_seed": pipeline.base_seed}
    return parameters


def read_meta(meta_path: Path) -> dict[str, Any] | None:
    """The meta file as a dict; None when it is missing or not a JSON object."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _normalised(value: Any) -> Any:
    # The meta file holds JSON: compare through JSON so tuples and lists are equal.
    return json.loads(json.dumps(value, sort_keys=True))


def _section(meta: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A nested object of the meta file; empty when missing or not an object (a hand-edited file)."""
    value = meta.get(key)
    return value if isinstance(value, dict) else {}


def complete_run(options: RunOptions, header: Mapping[str, Any], *, rows: int) -> dict[str, Any] | None:
    """The meta of a finished run with this header (pipeline, input SHA-256, parameters) over `rows`
    rows whose output is in place; None when this run still has work to do."""
    if not options.output.is_file():
        return None
    meta = read_meta(options.meta_path)
    if meta is None:
        return None
    recorded_input = _section(meta, "input")
    counts = _section(meta, "rows")
    same = (
        meta.get("status") == COMPLETE_STATUS
        and meta.get("exit_code") in {c.EXIT_OK, c.EXIT_ROWS_FAILED}
        and meta.get("pipeline") == header.get("pipeline")
        and recorded_input.get("sha256") == header.get("input_sha256")
        and recorded_input.get("rows_processed") == rows
        and _normalised(meta.get("parameters")) == _normalised(header.get("parameters"))
    )
    # Rows a rerun would send again: transport failures always, row failures with --retry-failed.
    resend = counts.get("failed_transport", 0) + counts.get("not_done", 0)
    if options.retry_failed:
        resend += counts.get("failed_row_specific", 0)
    return meta if same and resend == 0 else None


def record_plan_digest(options: RunOptions, meta: dict[str, Any]) -> None:
    """A complete run reached again under another plan digest (a flag that changes no answer, e.g.
    --batch-size, changed the Job): record the new digest so a Job waiting for it stops waiting."""
    if options.plan_digest is None or meta.get(PLAN_DIGEST_KEY) == options.plan_digest:
        return
    previous = meta.get(PLAN_DIGEST_KEY)
    meta[PLAN_DIGEST_KEY] = options.plan_digest
    meta.setdefault("plan_digest_history", []).append(
        {"previous": previous, "recorded_at": datetime.now(UTC).isoformat()}
    )
    write_atomically(options.meta_path, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    log.info("%s: recorded plan digest %s (was %s)", options.meta_path, options.plan_digest, previous)
