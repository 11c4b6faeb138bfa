"""The worker as a pod lives it, against the real vLLM server: SIGTERM as PID 1, and a server outage.

PID 1: `unshare --pid --fork --mount-proc` (root) runs the worker as the init process of a new PID
namespace, as in the job image, and the test signals it from the parent namespace, as the container
runtime does. The kernel delivers that signal only because the worker installs a handler.

Outage: the worker reaches the shared real server through a TCP forwarder that the test cuts (connection
refused, open requests reset: what a restarting vLLM pod gives) and restores on the same port. A real
restart of the tiny server would cost two more starts (80-250 s each on this machine) in a CI run
budgeted at 20 minutes, for the same bytes on the worker's sockets.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pytest

from tests.support.tcp_proxy import TcpProxy
from tests.support.worker_process import checkpoint_rows, error_lines, meta, start_worker, wait_until

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "study2_small.csv"


def study2(tmp_path: Path, rows: int) -> tuple[Path, pd.DataFrame]:
    frame = pd.read_csv(FIXTURE, dtype=str, keep_default_na=False)
    frame = pd.concat([frame] * (rows // len(frame) + 1), ignore_index=True).head(rows)
    path = tmp_path / "in.csv"
    frame.to_csv(path, index=False)
    return path, frame


def command(endpoint: str, name: str, source: Path, output: Path, *extra: str) -> list[str]:
    return [
        "python", "-m", "worker", "query",
        "--input", str(source), "--output", str(output),
        "--model-endpoint", endpoint, "--model-name", name,
        "--study", "chat/study2", "--max-tokens", "8", "--metrics-port", "0", "--batch-size", "2",
        "--samples", "1",  # one answer per row (the study samples 5): these tests count rows
        *extra,
    ]  # fmt: skip


def python_command(args: list[str]) -> list[str]:
    return [str(REPO / ".venv" / "bin" / "python"), *args[1:]]


def items_in(checkpoint: Path) -> list[tuple[int, int]]:
    lines = checkpoint.read_bytes().splitlines()[1:]
    return [(record["row"], record.get("sample", 0)) for record in map(json.loads, lines)]


def namespace_child(parent: int) -> int:
    """The host pid of `unshare --fork`'s child (the worker, PID 1 in its namespace)."""
    children = Path(f"/proc/{parent}/task/{parent}/children")
    wait_until(lambda: children.read_text().strip() != "", 10, "unshare's child")
    return int(children.read_text().split()[0])


def namespace_pids(pid: int) -> list[int]:
    """The pid in every namespace it lives in, outermost first (/proc/PID/status NSpid)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(value) for value in line.split()[1:]]
    raise AssertionError("no NSpid line")


def test_sigterm_to_the_worker_as_pid_1_stops_it_cleanly(vllm_server: Any, tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a new PID namespace needs root and unshare(1)")
    source, frame = study2(tmp_path, 40)
    output, log = tmp_path / "out.csv", tmp_path / "worker.log"
    checkpoint = tmp_path / "out.csv.partial.jsonl"
    args = python_command(command(vllm_server.base_url, vllm_server.served_name, source, output))
    unshare = start_worker(args, log, prefix=["unshare", "--pid", "--fork", "--mount-proc"])
    worker = namespace_child(unshare.pid)
    assert namespace_pids(worker)[-1] == 1  # the worker is the namespace's init process
    wait_until(lambda: checkpoint_rows(checkpoint) >= 3, 300, "3 rows from the real server")

    os.kill(worker, signal.SIGTERM)
    signalled = time.monotonic()
    code = unshare.wait(60)

    assert code == 143  # unshare(1) exits with its child's status
    assert time.monotonic() - signalled < 15  # 5 s grace for 2 requests of 8 tokens, then out
    [line] = error_lines(log)
    assert line.startswith("worker query: stopped by SIGTERM: ")
    recorded = meta(output)
    assert (recorded["status"], recorded["interrupted_by"], recorded["exit_code"]) == (
        "interrupted",
        "SIGTERM",
        143,
    )
    assert not output.exists()
    done = items_in(checkpoint)
    assert len(done) == len(set(done)) < 40

    rerun = start_worker(args, tmp_path / "rerun.log")
    assert rerun.wait(600) == 0
    result = pd.read_csv(output, dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(result[frame.columns], frame)  # every row, once, in input order
    assert sorted(items_in(checkpoint)) == [(row, 0) for row in range(40)]  # each row answered exactly once


def test_a_server_outage_is_waited_out_against_the_real_server(vllm_server: Any, tmp_path: Path) -> None:
    upstream = urlsplit(vllm_server.root_url)
    proxy = TcpProxy(upstream.hostname or "127.0.0.1", upstream.port or 80).start()
    source, frame = study2(tmp_path, 24)
    output, log = tmp_path / "out.csv", tmp_path / "worker.log"
    checkpoint = tmp_path / "out.csv.partial.jsonl"
    endpoint = f"http://127.0.0.1:{proxy.port}/v1"
    args = python_command(
        command(
            endpoint, vllm_server.served_name, source, output, "--max-retries", "2", "--backoff-base", "0.1"
        )
    )
    try:
        worker = start_worker([*args, "--wait-timeout", "120"], log)
        wait_until(lambda: checkpoint_rows(checkpoint) >= 3, 300, "3 rows before the outage")
        proxy.cut()
        outage_started = time.monotonic()
        time.sleep(8)  # 3 attempts with 0.1 s backoff would have failed every row in flight by now
        proxy.restore()
        assert worker.wait(600) == 0
        outage_s = time.monotonic() - outage_started
    finally:
        proxy.stop()
    recorded = meta(output)
    assert recorded["rows"]["failed"] == 0
    assert recorded["server"]["outages_waited_out"] >= 1
    text = log.read_text()
    assert "stopped answering; requests pause until /health answers again" in text
    assert "waiting for the model server to come back" in text
    result = pd.read_csv(output, dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(result[frame.columns], frame)
    assert outage_s < 600
