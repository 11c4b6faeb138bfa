"""Progress on a terminal (a bar) and in a pod (log lines), and the metrics' arithmetic."""

from __future__ import annotations

import io
import logging

import pytest

from worker.run.metrics import RunMetrics
from worker.run.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_with_counts_rate_and_eta() -> None:
    screen = Terminal()
    progress = Progress("query", 4, ok=1, stream=screen)  # one row came from the checkpoint
    progress.row_finished(ok=True)
    progress.row_finished(ok=False)
    progress.close()
    last = screen.getvalue().split("\r")[-1]
    assert "query [" + "#" * 22 + "-" * 8 + "] 3/4 rows" in last
    assert "rows/s" in last
    assert "ETA " in last
    assert "failed 1" in last
    assert screen.getvalue().endswith("\n")


def test_a_pod_gets_logfmt_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="worker.run.progress")
    progress = Progress("probs", 2, stream=io.StringIO())
    progress.row_finished(ok=True)
    progress.row_finished(ok=True)
    progress.close()
    assert (
        caplog.records[-1]
        .getMessage()
        .startswith("progress pipeline=probs done=2 total=2 ok=2 failed=0 rate=")
    )


def test_metrics_count_attempts_latency_and_tokens() -> None:
    metrics = RunMetrics()
    metrics.attempt_finished("ok", 0.2, {"prompt_tokens": 30, "completion_tokens": 5})
    metrics.attempt_finished("ok", 0.4, {"prompt_tokens": 10, "completion_tokens": 0})
    metrics.attempt_finished("timeout", 120.0, None)
    value = metrics.registry.get_sample_value
    assert value("grace_worker_requests_total", {"outcome": "ok"}) == 2
    assert value("grace_worker_requests_total", {"outcome": "timeout"}) == 1
    assert value("grace_worker_tokens_total", {"kind": "prompt"}) == 40
    assert value("grace_worker_tokens_total", {"kind": "completion"}) == 5
    assert value("grace_worker_request_seconds_count") == 3
    assert value("grace_worker_request_seconds_bucket", {"le": "0.25"}) == 1
