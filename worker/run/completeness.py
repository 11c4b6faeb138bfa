"""Is this run already done? One decision, used by the runner (before it waits on any server) and by
`python -m worker check-outputs` (before a job-mode pod loads its model).

A run is complete when its output CSV exists and the meta file beside it says `status: complete` (exit
code 0 or 3) for the same run (worker/contract.py `same_run`: the same pipeline, the same input file
contents (SHA-256) and the same parameters: model name, prompts, sampling, everything the checkpoint
header holds) over the same rows processed, with no row a rerun would send again (transport failures;
row failures under --retry-failed). The runner removes the old meta file, renames the output into
place, then writes the new meta, so an output with a matching meta is a finished run of exactly this
experiment; anything else (no meta, other parameters, an unreadable meta) is "not complete" and the
run goes on, where the checkpoint and supersede rules decide what happens to the old files.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from worker.contract import RunMeta, same_run
from worker.run.atomic_files import write_atomically
from worker.run.pipeline import Pipeline
from worker.run.run_options import RunOptions

__all__ = ["complete_run", "record_plan_digest", "run_parameters"]

log = logging.getLogger(__name__)


def run_parameters(pipeline: Pipeline, options: RunOptions) -> dict[str, Any]:
    """The pipeline's parameters plus the model name (every answer depends on it) and the sampling:
    what the checkpoint header and the meta file record (the runner's `_Run.parameters`)."""
    parameters = {"model_name": options.client.model_name, **pipeline.parameters()}
    if pipeline.samples_per_row != 1:
        # Only when sampling, so checkpoints of single-answer runs keep their header.
        parameters |= {"samples_per_row": pipeline.samples_per_row, "base_seed": pipeline.base_seed}
    return parameters


def complete_run(options: RunOptions, header: Mapping[str, Any], *, rows: int) -> RunMeta | None:
    """The meta of a finished run with this header (pipeline, input SHA-256, parameters) over `rows`
    rows whose output is in place; None when this run still has work to do."""
    if not options.output.is_file():
        return None
    meta = RunMeta.read(options.meta_path)
    if meta is None or not same_run(meta, header):
        return None
    if not meta.finished or meta.input.rows_processed != rows:
        return None
    # Rows a rerun would send again: transport failures always, row failures with --retry-failed. A
    # count that is not a number (a hand edit) is not zero: the run goes on and decides for itself.
    counts = meta.rows
    resend = [counts.failed_transport, counts.not_done]
    if options.retry_failed:
        resend.append(counts.failed_row_specific)
    numbers = [count for count in resend if count is not None]
    return meta if len(numbers) == len(resend) and sum(numbers) == 0 else None


def record_plan_digest(options: RunOptions, meta: RunMeta) -> None:
    """A complete run reached again under another plan digest (a flag that changes no answer, e.g.
    --batch-size, changed the Job): record the new digest so a Job waiting for it stops waiting."""
    if options.plan_digest is None or meta.plan_digest == options.plan_digest:
        return
    previous = meta.plan_digest
    change = {"previous": previous, "recorded_at": datetime.now(UTC).isoformat()}
    history = [*(meta.plan_digest_history or []), change]
    updated = meta.model_copy(update={"plan_digest": options.plan_digest, "plan_digest_history": history})
    write_atomically(options.meta_path, updated.to_json())
    log.info("%s: recorded plan digest %s (was %s)", options.meta_path, options.plan_digest, previous)
