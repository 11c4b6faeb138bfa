"""`python -m worker wait-for-inputs --tasks FILE --timeout S`: wait, on no GPU, until a Job's inputs exist.

Runs as the init container of the extraction gate (grace_infra/manifests/extraction_gate.py), a CPU pod:
for every task of the suspended extraction Job's task list it takes the task's `--input` and
`--wait-for-digest` and asks `worker.run.input_wait.input_state`, the check `extract` itself makes,
whether that Experiment 1 file is complete for the planned run. It returns 0 once every input is, and
only then does the gate resume the GPU Job. It logs what it still waits for every 30 s.

Exit codes: 0 every input complete; 2 a task list it cannot read, or `--timeout` passed first (one line
naming what is still missing).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from worker import constants as c
from worker import contract
from worker.cli import UsageError, parse_subcommand, read_tasks
from worker.errors import InputError, WorkerError
from worker.run.input_wait import INPUT_POLL_INTERVAL_S, input_state
from worker.run.runner import report_fatal

__all__ = ["main", "missing_inputs", "wait_for_inputs"]

log = logging.getLogger(__name__)


def missing_inputs(tasks: Sequence[Sequence[str]]) -> list[str]:
    """One phrase per task whose --input is not ready yet (`<path> does not exist yet`); empty when every
    input is complete for its --wait-for-digest."""
    missing = []
    for task in tasks:
        _, args = parse_subcommand(task)
        state = input_state(args.input, getattr(args, "wait_for_digest", None))
        if state is not None:
            missing.append(f"{args.input} {state}")
    return missing


def wait_for_inputs(
    tasks: Sequence[Sequence[str]],
    timeout_s: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float = INPUT_POLL_INTERVAL_S,
) -> None:
    """Return once every task's input is complete; InputError naming what is missing after `timeout_s`."""
    started = clock()
    next_log = started
    while missing := missing_inputs(tasks):
        now = clock()
        if now - started >= timeout_s:
            raise InputError(
                f"after --timeout {timeout_s:g} s, {len(missing)} of {len(tasks)} inputs are not complete: "
                f"{missing[0]}; the extraction Job stays suspended (no GPU)."
            )
        if now >= next_log:
            log.info(
                "wait-for-inputs: %d of %d inputs not complete (first: %s); %.0f of %g s",
                len(missing), len(tasks), missing[0], now - started, timeout_s,
            )  # fmt: skip
            next_log = now + c.WAIT_LOG_INTERVAL_S
        sleep(poll_s)
    log.info("wait-for-inputs: all %d inputs complete after %.0f s", len(tasks), clock() - started)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m worker {contract.WAIT_FOR_INPUTS_COMMAND}", description=__doc__
    )
    parser.add_argument("--tasks", type=Path, required=True, help="The `run --tasks` file of the gated Job.")
    parser.add_argument("--timeout", type=float, required=True, help="Seconds to wait, then exit 2.")
    args = parser.parse_args(argv)
    try:
        wait_for_inputs(read_tasks(args.tasks), args.timeout)
    except (UsageError, WorkerError) as err:
        report_fatal(contract.WAIT_FOR_INPUTS_COMMAND, err)
        return contract.EXIT_INPUT
    return contract.EXIT_OK
