"""Speed: does `worker query` keep an OpenAI-compatible server saturated?

For each local server (instant, and a fixed 200 ms per request) this script
  1. starts the fake server (tests/support/fake_openai.py) in its own process,
  2. measures the server's capacity with a plain concurrent load generator (httpx, CONCURRENCY requests
     in flight, the same request bodies the worker sends, no parsing),
  3. runs `python -m worker query --batch-size CONCURRENCY` over the study2 file as a subprocess,
and prints the worker's rows/s as a fraction of that capacity, the worker's CPU seconds per 1,000 rows,
and (200 ms server) its time against the latency bound rows x 0.2 s / CONCURRENCY. Times are shown for
the whole run and for its rows phase; targets: >= 0.9 x capacity and within 10% of the bound.

Input: ../shared/data/study2.csv when present (2,424 rows), else generated rows of the same shape.
Bounded: every subprocess has a deadline; `--rows` and `--repeat` shrink the run (default: about two
minutes on the 2-core development machine). Usage:
    .venv/bin/python benchmarks/worker_throughput.py [--rows N] [--latency-ms 0,200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from worker.studies.definition import load_study  # noqa: E402

SHARED_STUDY2 = REPO.parent / "shared" / "data" / "study2.csv"
CONCURRENCY = 64
STUDY2_ROWS = 2424
RUN_DEADLINE_S = 600  # no single worker run may take longer; the 200 ms bound for 2,424 rows is ~7.6 s
TARGET_RATIO = 0.9
TARGET_LATENCY_SLACK = 0.10


@dataclass
class WorkerRun:
    process_wall_s: float  # interpreter start to exit
    run_s: float  # the run itself as the meta file records it (input read to output written)
    rows_phase_s: float  # first row sent to last row checkpointed (meta file)
    cpu_s: float  # user + system CPU of the worker process
    rows: int


def study2_input(directory: Path, rows: int) -> Path:
    """The real study2 file (first `rows`), or generated rows of the same shape when it is absent."""
    if SHARED_STUDY2.exists():
        frame = pd.read_csv(SHARED_STUDY2, dtype=str, keep_default_na=False)
        source = "../shared/data/study2.csv"
    else:
        frame = generated_study2(rows)
        source = "generated rows (../shared/data/study2.csv not present)"
    frame = pd.concat([frame] * (rows // len(frame) + 1), ignore_index=True).iloc[:rows]
    path = directory / "study2.csv"
    frame.to_csv(path, index=False)
    print(f"input: {rows} rows from {source}")
    return path


def generated_study2(rows: int) -> pd.DataFrame:
    domains = ["presentation", "cookie", "poem", "cake", "song", "film"]
    states = ["0 hearts", "1 heart", "2 hearts", "3 hearts"]
    goals = [
        "make {l} feel good, rather than give informative feedback",
        "give as accurate and informative feedback as possible",
    ]
    records = []
    for i in range(rows):
        domain, speaker, listener = domains[i % 6], f"Speaker{i % 7}", f"Listener{i % 5}"
        records.append({
            "Participant_ID": str(i // 12 + 1), "Domain": domain,
            "Precontext": f"Imagine that {listener} has just finished a {domain}.",
            "Scenario": f"Imagine that {listener} approached {speaker}, who had just seen "
                        f"{listener}'s {domain}, and asked, 'How was my {domain}?'",
            "Utterance": "It wasn't terrible",
            "Goal": f"If {speaker} wanted to " + goals[i % 2].format(l=listener),
            "State": states[i % 4], "SP_Name": speaker, "LS_Name": listener,
        })  # fmt: skip
    return pd.DataFrame.from_records(records)


class FakeServer:
    """tests/support/fake_openai.py in its own process, so its CPU is not the worker's."""

    def __init__(self, latency_ms: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.fake_openai", "--latency-ms", str(latency_ms)],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.base_url = f"http://127.0.0.1:{int(line.split()[1])}/v1"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def request_bodies(path: Path) -> list[bytes]:
    study = load_study("chat/study2")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    params = study.generation.request_params()
    return [
        json.dumps({"model": "tiny", "messages": study.render(row), **params}).encode()
        for row in frame.to_dict("records")
    ]


async def load_generator(base_url: str, bodies: list[bytes]) -> float:
    """Requests per second the server sustains with CONCURRENCY in flight: the capacity to compare with.

    Deliberately plain: raw keep-alive HTTP/1.1 over asyncio streams, reading each response by its
    Content-Length and nothing more, so the generator costs as little CPU as possible and the figure is
    the server's, not a client library's.
    """
    url = httpx.URL(base_url)
    host, port, path = url.host, url.port, f"{url.path}/chat/completions"
    queue = iter(bodies)

    async def one_connection() -> int:
        reader, writer = await asyncio.open_connection(host, port)
        done = 0
        try:
            for body in queue:
                head = (
                    f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\n\r\n"
                )
                writer.write(head.encode() + body)
                status_and_headers = await reader.readuntil(b"\r\n\r\n")
                if not status_and_headers.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"load generator got {status_and_headers[:40]!r}")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in status_and_headers.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                done += 1
        finally:
            writer.close()
        return done

    started = time.perf_counter()
    counts = await asyncio.gather(*(one_connection() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    assert sum(counts) == len(bodies)
    return len(bodies) / elapsed


def run_worker(base_url: str, source: Path, output: Path) -> WorkerRun:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "worker", "query", "--input", str(source), "--output", str(output),
         "--model-endpoint", base_url, "--model-name", "tiny", "--study", "chat/study2",
         "--batch-size", str(CONCURRENCY), "--metrics-port", "0", "--wait-timeout", "30"],
        cwd=REPO, env={**os.environ, "LOG_LEVEL": "WARNING"}, check=True, timeout=RUN_DEADLINE_S,
    )  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    meta = json.loads(output.with_name(output.name + ".meta.json").read_text())
    rows = len(pd.read_csv(output, dtype=str, keep_default_na=False))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return WorkerRun(
        process_wall_s=wall, run_s=meta["duration_s"], rows_phase_s=meta["rows_phase_s"], cpu_s=cpu, rows=rows
    )


def startup_cpu_s() -> float:
    """CPU of starting the worker (interpreter + imports) without a run, to separate it from per-row cost."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "worker", "--version"], cwd=REPO, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def benchmark(
    latency_ms: float, source: Path, bodies: list[bytes], workdir: Path, startup_cpu: float, repeat: int
) -> bool:
    """Capacity and worker runs, interleaved `repeat` times so both see the same machine; medians judge."""
    server = FakeServer(latency_ms)
    capacities: list[float] = []
    runs: list[WorkerRun] = []
    try:
        for attempt in range(repeat):
            capacities.append(asyncio.run(load_generator(server.base_url, bodies)))
            runs.append(run_worker(server.base_url, source, workdir / f"out-{latency_ms:g}ms-{attempt}.csv"))
    finally:
        server.stop()
    rows = runs[0].rows
    capacity = statistics.median(capacities)
    print(
        f"\n== server latency {latency_ms:g} ms, {CONCURRENCY} in flight, {rows} rows, {repeat} runs (median)"
    )
    print(
        f"server capacity (plain load generator): {capacity:8.1f} requests/s  ({_spread(capacities, '.0f')})"
    )
    # Two honest views: the whole run (input read, /health, /version and /v1/models, rows, output written)
    # and the rows phase alone (first row sent to last row checkpointed), which is what concurrency governs.
    verdicts = []
    for label, times in (
        ("whole run", [r.run_s for r in runs]),
        ("rows phase", [r.rows_phase_s for r in runs]),
    ):
        seconds = statistics.median(times)
        rate = rows / seconds
        ratio = rate / capacity
        line = f"worker {label:10s} {seconds:6.2f} s ({_spread(times, '.2f')}): {ratio:.2f} x capacity"
        passed = ratio >= TARGET_RATIO
        if latency_ms > 0:
            bound = rows * latency_ms / 1000 / CONCURRENCY
            over = seconds / bound - 1
            line += f", {over:+.1%} vs the latency bound {bound:.2f} s"
            passed = passed and over <= TARGET_LATENCY_SLACK
        print(f"{line}  [{'target met' if passed else 'target NOT met'}]")
        verdicts.append(passed)
    cpu = statistics.median(r.cpu_s for r in runs)
    wall = statistics.median(r.process_wall_s for r in runs)
    print(f"worker process wall time: {wall:.2f} s (the whole run plus interpreter start)")
    print(
        f"worker CPU: {cpu:.2f} s = {cpu / rows * 1000:.2f} s per 1,000 rows "
        f"({max(cpu - startup_cpu, 0) / rows * 1000:.2f} s per 1,000 rows without the "
        f"{startup_cpu:.2f} s start-up)"
    )
    return all(verdicts)


def _spread(values: list[float], spec: str) -> str:
    return f"range {min(values):{spec}}-{max(values):{spec}}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=STUDY2_ROWS, help="Rows to run (default: the 2,424 of study2)."
    )
    parser.add_argument("--latency-ms", default="0,200", help="Comma-separated server latencies (ms).")
    parser.add_argument("--repeat", type=int, default=3, help="Runs per server; medians are judged (3).")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="grace-bench-") as tmp:
        workdir = Path(tmp)
        source = study2_input(workdir, args.rows)
        bodies = request_bodies(source)
        startup = startup_cpu_s()
        results = [
            benchmark(float(latency), source, bodies, workdir, startup, args.repeat)
            for latency in args.latency_ms.split(",")
        ]
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} (other processes share these CPUs)")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
