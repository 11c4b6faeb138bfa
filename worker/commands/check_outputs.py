"""`python -m worker check-outputs --tasks FILE --marker PATH`: is every task of a job-mode Job done?

Runs as the Job's first init container, before the vLLM sidecar: when every task's output is complete
for the same input and parameters (worker/run/completeness.py, the decision the runner itself makes), it
writes PATH, and the sidecar then skips downloading and loading the model
(grace_infra/manifests/completion_gate.py).
It only reads (the output claim is mounted read-only) and always exits 0: any task it cannot decide
(bad flags, a missing input, an unreadable meta) counts as not complete, so the Job simply runs and
the worker reports the problem itself.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from worker import contract
from worker.cli import UsageError, parse_subcommand, read_tasks, run_options
from worker.errors import WorkerError
from worker.run.atomic_files import write_atomically
from worker.run.checkpoint import make_header
from worker.run.completeness import complete_run, run_parameters
from worker.run.input_table import read_input

__all__ = ["main", "task_is_complete"]

log = logging.getLogger(__name__)


def task_is_complete(argv: Sequence[str]) -> tuple[bool, str]:
    """(complete, why) for one task's argv, exactly as the runner would decide it, without waiting."""
    try:
        subcommand, args = parse_subcommand(argv)
        if hasattr(args, "wait_for_input"):
            args.wait_for_input = 0  # a check never waits: a missing input means "not complete"
        options = run_options(args, argv)
        pipeline = subcommand.build(args)
        table = read_input(options.input, pipeline.required_columns, options.limit)
    except (UsageError, WorkerError) as err:
        return False, f"cannot be checked ({' '.join(str(err).split())})"
    header = make_header(pipeline.name, table.sha256, run_parameters(pipeline, options))
    if complete_run(options, header, rows=table.rows) is None:
        return False, f"{options.output} is missing or was made by another run"
    return True, f"{options.output} is complete"


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker check-outputs", description=__doc__)
    parser.add_argument("--tasks", type=Path, required=True, help="The `run --tasks` file of the Job.")
    parser.add_argument("--marker", type=Path, required=True, help="Written when every task is complete.")
    args = parser.parse_args(argv)
    args.marker.unlink(missing_ok=True)
    try:
        tasks = read_tasks(args.tasks)
    except WorkerError as err:
        log.warning("check-outputs: %s; the Job runs", err)
        return contract.EXIT_OK
    for number, task in enumerate(tasks, start=1):
        complete, why = task_is_complete(task)
        log.info("check-outputs: task %d/%d (%s): %s", number, len(tasks), task[0], why)
        if not complete:
            log.info("check-outputs: not every output is complete; the model is loaded and the Job runs")
            return contract.EXIT_OK
    write_atomically(args.marker, f"{len(tasks)} tasks complete\n")
    log.info("check-outputs: all %d outputs complete; the model will not be loaded", len(tasks))
    return contract.EXIT_OK
