"""`worker wait-for-inputs`: the extraction gate's wait, on a CPU pod, for every exp1 file its Job reads."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.support.fake_clock import FakeClock
from tests.unit.worker.support import FIXTURES
from worker import cli, contract
from worker.commands.wait_for_inputs import missing_inputs, wait_for_inputs
from worker.errors import InputError

EXP1_FIXTURE = FIXTURES / "extract" / "study1_exp1.csv"


def _exp1(directory: Path, model: str, digest: str) -> Path:
    path = directory / model / "study1_responses.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(EXP1_FIXTURE.read_bytes())
    path.with_name(path.name + contract.META_SUFFIX).write_text(
        json.dumps({"pipeline": "query", "plan_digest": digest})
    )
    return path


def _task(directory: Path, model: str, digest: str) -> list[str]:
    return [
        "extract", "--input", str(directory / model / "study1_responses.csv"),
        "--output", str(directory / "structured" / model / "study1_structured.csv"),
        "--model-endpoint", "http://localhost:8000/v1", "--model-name", "coder", "--study", "study1",
        "--wait-for-input", "60", "--wait-for-digest", digest,
    ]  # fmt: skip


def test_returns_once_every_input_is_complete_for_its_planned_digest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    caplog.set_level(logging.INFO)
    tasks = [_task(tmp_path, "a", "plan-a"), _task(tmp_path, "b", "plan-b")]
    _exp1(tmp_path, "a", "plan-a")
    _exp1(tmp_path, "b", "an-older-run")  # present, but another run's: not ready
    clock.at(100.0, lambda: _exp1(tmp_path, "b", "plan-b"))
    wait_for_inputs(tasks, 1000, clock=clock, sleep=clock.sleep, poll_s=1.0)
    assert 100.0 <= clock.now < 102.0
    assert "1 of 2 inputs not complete" in caplog.text
    assert "made by another Experiment 1 run (plan digest an-older-run)" in caplog.text
    assert missing_inputs(tasks) == []


def test_gives_up_after_its_timeout_naming_what_is_missing(tmp_path: Path, clock: FakeClock) -> None:
    tasks = [_task(tmp_path, "a", "plan-a")]
    with pytest.raises(
        InputError, match=r"1 of 1 inputs are not complete: .*a/study1_responses.csv does not exist yet"
    ):
        wait_for_inputs(tasks, 50, clock=clock, sleep=clock.sleep, poll_s=10.0)
    assert clock.now == pytest.approx(50.0)


def test_the_command_line_exits_2_on_an_unreadable_task_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        [contract.WAIT_FOR_INPUTS_COMMAND, "--tasks", str(tmp_path / "none.json"), "--timeout", "1"]
    )
    assert code == contract.EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("worker wait-for-inputs: error: --tasks ")


def test_the_command_line_exits_0_when_the_inputs_are_there(tmp_path: Path) -> None:
    _exp1(tmp_path, "a", "plan-a")
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps([_task(tmp_path, "a", "plan-a")]))
    assert (
        cli.main([contract.WAIT_FOR_INPUTS_COMMAND, "--tasks", str(tasks), "--timeout", "1"])
        == contract.EXIT_OK
    )


def test_a_worker_refuses_to_run_after_the_sidecar_spent_its_start_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "server-start-failed"
    marker.write_text(
        "the vLLM sidecar failed to start 3 times over 70 s (budget 3 starts; last: exit code 1)\n"
    )
    monkeypatch.setenv(contract.SERVER_START_FAILED_ENV, str(marker))
    code = cli.main(["run", "--tasks", str(tmp_path / "tasks.json")])
    assert code == contract.EXIT_SERVER_START_FAILED
    assert capsys.readouterr().err.strip() == (
        "worker run: error: the vLLM sidecar failed to start 3 times over 70 s (budget 3 starts; "
        "last: exit code 1)"
    )
    marker.unlink()  # without the marker (a server that started) the variable changes nothing
    assert cli.main(["run", "--tasks", str(tmp_path / "tasks.json")]) == contract.EXIT_INPUT
