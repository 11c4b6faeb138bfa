"""A job-mode rerun against the REAL vLLM server: the outputs check decides, the worker obeys.

What a job-mode pod does, minus Kubernetes: `check-outputs` over the Job's task list (the init
container), then `run --tasks` (the worker). Between the worker and the real server sits a
pass-through proxy that only counts requests, so "no request sent" is measured on the wire; the
shared server may serve other engineers' tests at the same time, so its own counters would not do.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from worker import cli

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
RERUN_BUDGET_S = 60.0  # the lifecycle rule: a finished job-mode experiment ends within a minute


class _CountingProxy(ThreadingHTTPServer):
    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = upstream
        self.paths: Counter[str] = Counter()
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Forward(BaseHTTPRequestHandler):
    server: _CountingProxy
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        with self.server.lock:
            self.server.paths[self.path] += 1
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        request = urllib.request.Request(
            self.server.upstream + self.path,
            data=body,
            method=self.command,
            headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
        )
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, payload = err.code, err.read()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _forward  # noqa: N815 (http.server's naming)
    do_POST = _forward  # noqa: N815 (http.server's naming)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture
def proxy(vllm_server: Any) -> Iterator[_CountingProxy]:
    server = _CountingProxy(vllm_server.root_url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _tasks(proxy: _CountingProxy, served_name: str, out: Path) -> list[list[str]]:
    def query(study: str) -> list[str]:
        return [
            "query", "--input", str(FIXTURES / f"{study}_small.csv"),
            "--output", str(out / "exp1" / f"{study}_responses.csv"),
            "--model-endpoint", proxy.base_url, "--model-name", served_name, "--study", study,
            "--max-tokens", "8", "--metrics-port", "0", "--wait-timeout", "60", "--limit", "3",
            "--samples", "1",
            "--supersede", "--plan-digest", f"{study}-digest",
        ]  # fmt: skip

    return [query("study1"), query("study2")]


def test_a_complete_rerun_sends_no_request_and_an_incomplete_one_runs(
    vllm_server: Any, proxy: _CountingProxy, tmp_path: Path
) -> None:
    tasks_file, marker = tmp_path / "tasks.json", tmp_path / "run-state" / "outputs-complete"
    marker.parent.mkdir()
    tasks = _tasks(proxy, vllm_server.served_name, tmp_path / "output")
    tasks_file.write_text(json.dumps(tasks))
    check = ["check-outputs", "--tasks", str(tasks_file), "--marker", str(marker)]

    # First run: nothing complete, so no marker; the worker runs every row on the real server.
    assert cli.main(check) == 0
    assert not marker.exists()
    assert cli.main(["run", "--tasks", str(tasks_file)]) == 0
    # The researchers' design (the default): every request of both tasks went to the real server.
    assert proxy.paths["/v1/completions"] >= 6

    # Rerun with the same parameters (what a refresh + up that recreates the Job does).
    proxy.paths.clear()
    started = time.monotonic()
    assert cli.main(check) == 0
    assert marker.exists()  # the sidecar would serve only /health: no weights loaded
    assert cli.main(["run", "--tasks", str(tasks_file)]) == 0
    assert time.monotonic() - started < RERUN_BUDGET_S
    assert sum(proxy.paths.values()) == 0  # not even /health: nothing waits on a server

    # The same with the checkpoints gone: the outputs and their meta files alone decide.
    for checkpoint in (tmp_path / "output" / "exp1").glob("*.partial.jsonl"):
        checkpoint.unlink()
    assert cli.main(check) == 0
    assert marker.exists()
    assert cli.main(["run", "--tasks", str(tasks_file)]) == 0
    assert sum(proxy.paths.values()) == 0

    # A changed experiment (study2's sampling): no marker, the model is needed, and only study2 runs.
    study1_meta = tmp_path / "output" / "exp1" / "study1_responses.csv.meta.json"
    study1_before = study1_meta.read_bytes()
    proxy.paths.clear()
    tasks[1] += ["--temperature", "0.5"]
    tasks_file.write_text(json.dumps(tasks))
    assert cli.main(check) == 0
    assert not marker.exists()
    assert cli.main(["run", "--tasks", str(tasks_file)]) == 0
    assert proxy.paths["/v1/completions"] >= 3  # study2's rows ran again ...
    assert study1_meta.read_bytes() == study1_before  # ... and study1 was not touched
    superseded = list((tmp_path / "output" / "exp1" / "superseded").glob("*/study2_responses.csv"))
    assert len(superseded) == 1  # the previous study2 output, moved aside, not deleted
