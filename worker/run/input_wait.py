"""Wait for the RIGHT input: an Experiment 1 output made by the run this Job was planned after.

Experiment 1 renames its output into place only when every row is done, so existence means complete,
but not that it is the current experiment: after a prompt edit the old exp1 file is still there until
the replaced exp1 Job moves it aside. The deployment therefore computes a digest of the exp1 run it
planned (its command line and the study files it reads), passes it to exp1 as `--plan-digest` (the
worker records it in the output's meta file) and to extraction as `--wait-for-digest`; extraction
waits until the meta file beside its input records that digest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from worker import constants as c
from worker import contract
from worker.contract import RunMeta
from worker.errors import InputError

__all__ = ["INPUT_POLL_INTERVAL_S", "input_state", "wait_for_input"]

log = logging.getLogger(__name__)

INPUT_POLL_INTERVAL_S = 2.0


def input_state(path: Path, plan_digest: str | None) -> str | None:
    """None when `path` is ready to read; otherwise what is missing, as the end of a sentence."""
    if not path.exists():
        return "does not exist yet"
    if plan_digest is None:
        return None
    meta_path = path.with_name(path.name + contract.META_SUFFIX)
    meta = RunMeta.read(meta_path)
    if meta is None:
        return f"exists but has no readable meta file {meta_path.name} (an older or hand-made file)"
    recorded = meta.plan_digest
    if recorded != plan_digest:
        return f"exists but was made by another Experiment 1 run (plan digest {recorded or 'none'})"
    return None


def wait_for_input(
    path: Path,
    timeout_s: float,
    *,
    plan_digest: str | None = None,
    poll_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once `path` exists (and, with `plan_digest`, its meta file records that digest);
    InputError after `timeout_s`. 0 means do not wait (and do not check). `clock` and `sleep` are what
    the wait is measured and made with (a test passes its own)."""
    if timeout_s <= 0:
        return
    state = input_state(path, plan_digest)
    if state is None:
        return
    poll_s = INPUT_POLL_INTERVAL_S if poll_s is None else poll_s
    wanted = f"--input {path}" + (f" with plan digest {plan_digest}" if plan_digest else "")
    started = clock()
    deadline = started + timeout_s
    next_log = started
    while state is not None:
        now = clock()
        if now >= deadline:
            if not path.exists():
                raise InputError(
                    f"--input {path} did not appear within --wait-for-input {timeout_s:g} s "
                    "(Experiment 1 writes it only when every row is done)."
                )
            raise InputError(
                f"--input {path} {state}, still after --wait-for-input {timeout_s:g} s; waiting for "
                f"plan digest {plan_digest} (see the exp1 Job's log)."
            )
        if now >= next_log:
            log.info(
                "extract: waiting for %s (written when Experiment 1 completes): it %s; %.0f of %g s, "
                "%.0f s left",
                wanted,
                state,
                now - started,
                timeout_s,
                deadline - now,
            )
            next_log = now + c.WAIT_LOG_INTERVAL_S
        sleep(min(poll_s, max(0.0, deadline - now)))
        state = input_state(path, plan_digest)
    matched = f", plan digest {plan_digest}" if plan_digest else ""
    log.info("extract: --input %s appeared after %.0f s%s", path, clock() - started, matched)
