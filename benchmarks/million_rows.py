"""Bounded memory: `worker query` over 1,000,000 synthetic rows against a local instant server.

The worker streams its input, keeps 9 bytes per work item for the checkpoint index, and builds the
output from the checkpoint in one streaming pass, so its resident memory should not grow with the
number of rows. For each size in --rows (default 100,000 then 1,000,000) this script
  1. writes a study-1 input of that many short synthetic rows,
  2. starts tests/support/fake_openai.py (no latency, no request log) in its own process,
  3. runs `python -m worker query --batch-size 64` as a subprocess,
and prints the worker's rows/s (whole run, and its rows phase) and its peak resident set (the kernel's
ru_maxrss of the worker process alone), then the ratio of the peaks: flat memory is a ratio near 1.
Target: peak RSS < 300 MB at 1,000,000 rows (the Job's worker container limit is 2 GiB).

Not a test: it takes minutes (about 20 on the shared 2-core development machine) and ~1 GB of /tmp.
    .venv/bin/python benchmarks/million_rows.py [--rows 100000,1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.worker_process import write_study1  # noqa: E402

TARGET_PEAK_MB = 300
RUN_DEADLINE_S = 7200


@dataclass
class Result:
    rows: int
    wall_s: float  # process start to exit
    rows_phase_s: float  # first row sent to last row checkpointed (the meta file's rows_phase_s)
    peak_rss_mb: float
    exit_code: int


class InstantServer:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.fake_openai"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"the fake server did not start: {line!r}")
        self.base_url = f"http://127.0.0.1:{int(line.split()[1])}/v1"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def run_worker(base_url: str, source: Path, output: Path) -> Result:
    command = [
        sys.executable, "-m", "worker", "query",
        "--input", str(source), "--output", str(output),
        "--model-endpoint", base_url, "--model-name", "tiny", "--study", "chat/study1",
        "--batch-size", "64", "--metrics-port", "0", "--max-tokens", "16",
        "--samples", "1",  # one output row per input row: the sizes below count both
    ]  # fmt: skip
    env = {**os.environ, "LOG_LEVEL": "WARNING"}
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO, env=env)
    # wait4 gives this child's own peak RSS (ru_maxrss, KiB on Linux), not the server's or ours.
    _, status, usage = os.wait4(process.pid, 0)
    wall_s = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    meta = json.loads(output.with_name(output.name + ".meta.json").read_text())
    return Result(
        rows=meta["rows"]["ok"] + meta["rows"]["failed"],
        wall_s=wall_s,
        rows_phase_s=meta["rows_phase_s"],
        peak_rss_mb=usage.ru_maxrss / 1024,
        exit_code=process.returncode,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="Comma-separated input sizes.")
    parser.add_argument("--keep", type=Path, help="Keep the inputs and outputs in this directory.")
    args = parser.parse_args()
    sizes = [int(size) for size in args.rows.split(",")]
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="grace-million-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    server = InstantServer()
    try:
        for rows in sizes:
            source, output = workdir / f"in_{rows}.csv", workdir / f"out_{rows}.csv"
            write_study1(source, rows)
            result = run_worker(server.base_url, source, output)
            if result.exit_code != 0:
                print(f"worker exited {result.exit_code} on {rows} rows", file=sys.stderr)
                return 1
            results.append(result)
            print(
                f"{rows:>9,} rows: {rows / result.wall_s:8,.0f} rows/s whole run "
                f"({rows / result.rows_phase_s:,.0f} rows/s rows phase), {result.wall_s:7.1f} s, "
                f"peak RSS {result.peak_rss_mb:6.1f} MB",
                flush=True,
            )
    finally:
        server.stop()
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    largest = results[-1]
    if len(results) > 1:
        ratio = largest.peak_rss_mb / results[0].peak_rss_mb
        growth = largest.rows / results[0].rows
        print(f"peak RSS, largest / smallest run: {ratio:.2f}x for {growth:.0f}x the rows")
    verdict = "meets" if largest.peak_rss_mb < TARGET_PEAK_MB else "MISSES"
    peak = f"{largest.peak_rss_mb:.1f} MB"
    print(f"{verdict} the target: peak RSS {peak} < {TARGET_PEAK_MB} MB at {largest.rows:,} rows")
    return 0 if largest.peak_rss_mb < TARGET_PEAK_MB else 1


if __name__ == "__main__":
    sys.exit(main())
