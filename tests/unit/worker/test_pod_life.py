"""The worker as a pod lives it, with real processes, real signals and real files (fake server only where
a fault must come on demand): SIGTERM, a second worker on the same output, an outage, transport failures.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from tests.support.fake_openai import FakeOpenAI, Ok, Status
from tests.support.worker_process import (
    checkpoint_rows,
    error_lines,
    meta,
    rows_requested,
    start_worker,
    wait_until,
    worker_command,
    write_study1,
)
from tests.unit.worker.support import CHAT

# Requests stay in flight this long, as on a busy server: long enough to signal a worker mid-run.
LATENCY_S = 0.2
# Only a worker that hangs trips this; the runs it guards finish in seconds.
HANG_GUARD_S = 60


@pytest.fixture
def server_setup() -> Callable[[FakeOpenAI], None]:
    def busy(fake: FakeOpenAI) -> None:
        fake.latency_s = LATENCY_S

    return busy


def sent(server: FakeOpenAI) -> dict[int, int]:
    return dict(rows_requested(request.text for request in server.requests_to(CHAT)))


def wait_for_rows(directory: Path, count: int) -> None:
    checkpoint = directory / "out.csv.partial.jsonl"
    wait_until(lambda: checkpoint_rows(checkpoint) >= count, 30, f"{count} rows in {checkpoint}")


def finish(process: subprocess.Popen[bytes], timeout_s: float = HANG_GUARD_S) -> int:
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_cleanly_and_the_rerun_sends_each_row_once(
    server: FakeOpenAI, tmp_path: Path, signal_number: signal.Signals
) -> None:
    source, output, log = write_study1(tmp_path / "in.csv", 300), tmp_path / "out.csv", tmp_path / "log"
    checkpoint = tmp_path / "out.csv.partial.jsonl"
    process = start_worker(worker_command(server.base_url, source, output, "--batch-size", "8"), log)
    wait_until(lambda: checkpoint_rows(checkpoint) >= 16, 30, "16 finished rows")

    sent_before_the_signal = len(server.requests_to(CHAT))
    process.send_signal(signal_number)
    code = finish(process)

    assert code == 128 + signal_number
    # No row started after the signal: at most the 8 requests in flight arrived after it, and all of them
    # finished within the grace period (none was abandoned).
    assert len(server.requests_to(CHAT)) - sent_before_the_signal <= 8
    assert "abandoning" not in log.read_text()
    [line] = error_lines(log)
    assert line.startswith(f"worker query: stopped by {signal_number.name}: ")
    assert line.endswith("rows are in out.csv.partial.jsonl; rerun the same command to resume.")
    recorded = meta(output)
    assert (recorded["status"], recorded["exit_code"]) == ("interrupted", 128 + signal_number)
    assert recorded["interrupted_by"] == signal_number.name
    assert recorded["rows"]["ok"] == checkpoint_rows(checkpoint) < 300
    assert not output.exists()
    # Every request sent before the signal finished within the grace period and is in the checkpoint.
    assert sum(sent(server).values()) == checkpoint_rows(checkpoint)

    assert finish(start_worker(worker_command(server.base_url, source, output), tmp_path / "log2")) == 0
    assert sent(server) == dict.fromkeys(range(300), 1)  # every row sent exactly once over both runs
    assert len(pd.read_csv(output)) == 300
    assert meta(output)["status"] == "complete"


def test_a_second_worker_on_the_same_output_exits_2_naming_the_first(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    source, output = write_study1(tmp_path / "in.csv", 120), tmp_path / "out.csv"
    command = worker_command(server.base_url, source, output, "--batch-size", "4")
    first = start_worker(command, tmp_path / "first.log")
    wait_for_rows(tmp_path, 4)

    second = start_worker(command, tmp_path / "second.log")
    assert finish(second, 20) == 2
    [line] = error_lines(tmp_path / "second.log")
    assert line.startswith(f"worker query: error: --output {output}: another worker is writing it (")
    assert f"host {socket.gethostname()}, pid {first.pid}, since " in line

    waiting = start_worker([*command, "--wait-for-lock", "120"], tmp_path / "waiting.log")
    assert finish(first) == 0
    assert finish(waiting) == 0  # took the lock once the first let go, found every row done
    assert sent(server) == dict.fromkeys(range(120), 1)
    assert meta(output)["rows"]["from_checkpoint"] == 120
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "first.log",
        "in.csv",
        "out.csv",
        "out.csv.meta.json",
        "out.csv.partial.jsonl",
        "second.log",
        "waiting.log",
    ]  # fmt: skip  (no lock file, no temporary file left)


def test_sigterm_ends_a_wait_for_the_lock_at_once(server: FakeOpenAI, tmp_path: Path) -> None:
    source, output = write_study1(tmp_path / "in.csv", 120), tmp_path / "out.csv"
    command = worker_command(server.base_url, source, output, "--batch-size", "4")
    first = start_worker(command, tmp_path / "first.log")
    wait_for_rows(tmp_path, 4)
    waiting_log = tmp_path / "waiting.log"
    waiting = start_worker([*command, "--wait-for-lock", "120"], waiting_log)
    wait_until(lambda: "waiting up to 120 s for" in waiting_log.read_text(), 30, "the second worker to wait")

    waiting.send_signal(signal.SIGTERM)
    assert finish(waiting) == 143  # long before its 120 s: the holder is still running (below)
    [line] = error_lines(waiting_log)
    assert line == (
        f"worker query: stopped by SIGTERM while waiting for another worker's lock on {output}; "
        "nothing was written."
    )
    assert first.poll() is None  # the holder goes on
    assert finish(first) == 0


def test_a_killed_holder_leaves_no_stale_lock(server: FakeOpenAI, tmp_path: Path) -> None:
    source, output = write_study1(tmp_path / "in.csv", 40), tmp_path / "out.csv"
    command = worker_command(server.base_url, source, output, "--batch-size", "4")
    first = start_worker(command, tmp_path / "first.log")
    wait_for_rows(tmp_path, 4)
    first.kill()
    first.wait()
    assert (tmp_path / "out.csv.lock").exists()  # SIGKILL runs no cleanup: the file stays, the lock does not
    assert finish(start_worker(command, tmp_path / "second.log")) == 0


def test_an_outage_is_waited_out_on_health_without_failing_rows(tmp_path: Path) -> None:
    source, output = write_study1(tmp_path / "in.csv", 120), tmp_path / "out.csv"
    log = tmp_path / "log"
    first = FakeOpenAI(latency_s=0.1).start()
    port = first.port
    process = start_worker(
        worker_command(first.base_url, source, output, "--batch-size", "8", "--wait-timeout", "30"), log
    )
    try:
        wait_for_rows(tmp_path, 16)
        first.stop()  # connection refused from now on
        # The worker pauses every request (a worker that retried instead would have failed the rows in
        # flight by its third attempt, 0.15 s later); the server comes back while it waits on /health.
        wait_until(lambda: "stopped answering" in log.read_text(), 30, "the worker to notice the outage")
        second = FakeOpenAI(latency_s=0.1, port=port).start()
        try:
            assert finish(process) == 0
        finally:
            second.stop()
    finally:
        first.stop()
    recorded = meta(output)
    assert recorded["rows"]["failed"] == 0
    assert recorded["server"]["outages_waited_out"] >= 1
    assert "stopped answering; requests pause until /health answers again" in log.read_text()
    answered = rows_requested(r.text for r in [*first.requests_to(CHAT), *second.requests_to(CHAT)])
    assert set(answered) == set(range(120))


def test_an_outage_past_the_wait_timeout_exits_5_and_the_rerun_sends_only_the_rest(tmp_path: Path) -> None:
    source, output, log = write_study1(tmp_path / "in.csv", 120), tmp_path / "out.csv", tmp_path / "log"
    server = FakeOpenAI(latency_s=0.1).start()
    away = False
    server.rule(lambda _request: away, Status(503, "restarting"))  # every path, /health included
    command = worker_command(server.base_url, source, output, "--batch-size", "8", "--wait-timeout", "2")
    try:
        process = start_worker(command, log)
        wait_for_rows(tmp_path, 16)
        away = True
        assert finish(process) == 5
        [line] = error_lines(log)
        assert "did not answer /health within --wait-timeout 2 s" in line
        recorded = meta(output)
        assert (recorded["status"], recorded["exit_code"]) == ("server_unavailable", 5)
        assert recorded["rows"]["failed"] == 0
        done = recorded["rows"]["ok"]
        assert 16 <= done < 120
        answered = sent(server)

        away = False
        assert finish(start_worker(command, tmp_path / "log2")) == 0
        again = rows_requested(r.text for r in server.requests_to(CHAT)[sum(answered.values()) :])
        assert len(again) == 120 - done  # only the rows the first run did not record
    finally:
        server.stop()


def test_transport_failures_are_resent_and_row_failures_kept_unless_retry_failed(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    source, output = write_study1(tmp_path / "in.csv", 20), tmp_path / "out.csv"
    command = worker_command(server.base_url, source, output)

    def row(number: int) -> object:
        return lambda request: request.path == CHAT and f"ROW-{number:05d}" in request.text

    server.rule(row(3), Status(500, "the GPU fell over"))  # /health is fine: a failure of this request only
    server.rule(row(7), Status(400, "This model's maximum context length is 512 tokens."))
    assert finish(start_worker(command, tmp_path / "log1")) == 3
    rows = meta(output)["rows"]
    assert (rows["failed_transport"], rows["failed_row_specific"], rows["ok"]) == (1, 1, 18)

    server._rules.clear()
    before = len(server.requests_to(CHAT))
    assert finish(start_worker(command, tmp_path / "log2")) == 3  # row 7 still failed: kept as its result
    assert rows_requested(r.text for r in server.requests_to(CHAT)[before:]) == {3: 1}
    assert (meta(output)["rows"]["failed_transport"], meta(output)["rows"]["failed_row_specific"]) == (0, 1)

    before = len(server.requests_to(CHAT))
    assert finish(start_worker([*command, "--retry-failed"], tmp_path / "log3")) == 0
    assert rows_requested(r.text for r in server.requests_to(CHAT)[before:]) == {7: 1}


@pytest.mark.parametrize("body", [{"object": "chat.completion", "model": "tiny"}, {"choices": []}])
def test_a_200_without_choices_is_retried(server: FakeOpenAI, tmp_path: Path, body: object) -> None:
    source, output = write_study1(tmp_path / "in.csv", 3), tmp_path / "out.csv"
    server.script(CHAT, Ok(body))
    assert finish(start_worker(worker_command(server.base_url, source, output), tmp_path / "log")) == 0
    assert len(server.requests_to(CHAT)) == 4
    frame = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert sorted(frame["attempts"]) == ["1", "1", "2"]
