"""`grace results check` on outputs the real worker writes (against the fake OpenAI server), then
changed the ways a campaign goes wrong: a missing meta file, a failed run, too few rows, samples.

The Experiment 2 and extraction shapes are covered against the real vLLM server in
tests/integration/test_results_vllm.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from grace_infra.commands.results import subcommands
from grace_infra.commands.results.check import State, check_outputs
from grace_infra.commands.results.outputs import companion_paths
from tests.support.fake_openai import FakeOpenAI, Ok, Request, Status, text_completion_body
from worker.cli import main as worker_main

REPO = Path(__file__).resolve().parents[3]
STUDY1 = REPO / "tests" / "fixtures" / "study1_small.csv"
RESPONSES = "exp1/tiny/study1_responses.csv"
INPUT_ROWS = len(pd.read_csv(STUDY1, dtype=str))


def _story(request: Request) -> str:
    return next((s for s in ("plants", "boxes") if s in request.text), "")


@pytest.fixture(scope="module")
def claim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real query output: the `boxes` rows refused by the server (failed), `plants` answered empty."""
    root = tmp_path_factory.mktemp("claim")
    with FakeOpenAI() as server:
        server.rule(lambda request: _story(request) == "boxes", Status(400, message="prompt too long"))
        server.chat_content = lambda request: "" if _story(request) == "plants" else "Initial answer: 3"
        code = worker_main([
            "query", "--study", "chat/study1", "--input", str(STUDY1), "--output", str(root / RESPONSES),
            "--model-endpoint", server.base_url, "--model-name", "tiny", "--metrics-port", "0",
            "--samples", "1",  # one answer per row: these tests count rows (samples have their own test)
        ])  # fmt: skip
    assert code == 3  # complete, some rows failed
    return root


@pytest.fixture
def copy(claim: Path, tmp_path: Path) -> Path:
    shutil.copytree(claim, tmp_path / "claim")
    return tmp_path / "claim"


def _frame(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / RESPONSES, dtype=str, keep_default_na=False)


def _edit_meta(root: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the output's meta file in place, as a different run's would read."""
    meta_path = companion_paths(root / RESPONSES)[1]
    meta = json.loads(meta_path.read_text())
    change(meta)
    meta_path.write_text(json.dumps(meta))


def test_a_complete_output_with_failed_and_empty_rows(
    claim: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (check,) = check_outputs(claim)
    frame = _frame(claim)
    assert check.state is State.COMPLETE
    assert check.rows == check.expected_rows == INPUT_ROWS
    assert check.failed_rows == int(frame["story_shortname"].eq("boxes").sum()) > 0
    assert check.empty_rows == int(frame["story_shortname"].eq("plants").sum()) > 0
    assert check.exit_code == 3
    assert subcommands.main(["check", str(claim)]) == 0
    assert "campaign complete: 1 of 1 outputs" in capsys.readouterr().out


def test_a_missing_meta_file_is_incomplete(copy: Path) -> None:
    companion_paths(copy / RESPONSES)[1].unlink()
    assert check_outputs(copy)[0].state is State.NO_META
    assert subcommands.main(["check", str(copy)]) == 1


def test_a_run_that_exited_2_is_a_failed_run(copy: Path) -> None:
    _edit_meta(copy, lambda meta: meta.update(exit_code=2))
    assert check_outputs(copy)[0].state is State.FAILED_RUN


def test_rows_are_input_rows_times_samples(copy: Path) -> None:
    _edit_meta(copy, lambda meta: meta["input"].update(samples_per_row=2))
    (check,) = check_outputs(copy)
    assert check.expected_rows == 2 * INPUT_ROWS
    assert check.state is State.SHORT


def test_rows_the_server_could_not_answer_wait_to_be_resent(copy: Path) -> None:
    _edit_meta(copy, lambda meta: meta["rows"].update(failed_transport=1))
    (check,) = check_outputs(copy)
    assert check.state is State.RESEND
    assert check.state_text == "rows to resend (1)"


def test_a_run_stopped_before_its_output_says_why(copy: Path) -> None:
    (copy / RESPONSES).unlink()
    _edit_meta(copy, lambda meta: meta.update(status="storage_error", exit_code=4))
    (check,) = check_outputs(copy)
    assert check.state_text == "stopped (storage_error)"


def test_a_hand_edited_meta_file_is_checked_not_a_crash(copy: Path) -> None:
    meta_path = companion_paths(copy / RESPONSES)[1]
    meta = json.loads(meta_path.read_text())
    meta |= {"input": None, "rows": "see the log", "exit_code": "3"}  # sections no longer objects
    meta_path.write_text(json.dumps(meta))
    (check,) = check_outputs(copy)
    assert (check.state, check.expected_rows, check.exit_code) == (State.FAILED_RUN, None, None)


def test_an_empty_meta_file_beside_no_output_says_nothing(copy: Path) -> None:
    (copy / RESPONSES).unlink()
    companion_paths(copy / RESPONSES)[0].unlink()
    companion_paths(copy / RESPONSES)[1].write_text("{}")
    assert check_outputs(copy)[0].state is State.MISSING
    companion_paths(copy / RESPONSES)[1].write_text('{"pipeline": "query"}')
    assert check_outputs(copy)[0].state is State.IN_PROGRESS


def test_only_a_checkpoint_is_in_progress(copy: Path) -> None:
    (copy / RESPONSES).unlink()
    companion_paths(copy / RESPONSES)[1].unlink()
    (check,) = check_outputs(copy)
    assert check.state is State.IN_PROGRESS
    assert check.rows == INPUT_ROWS  # the checkpoint's rows


def test_a_planned_output_that_is_absent_is_missing(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert subcommands.main(["check", str(copy), "--stack", "nrp"]) == 1
    checks = {
        c.relative_path: c
        for c in check_outputs(copy, [("exp1/gemma-2-2b/study1_responses.csv", "gemma-2-2b")])
    }
    assert checks["exp1/gemma-2-2b/study1_responses.csv"].state is State.MISSING
    assert checks[RESPONSES].state is State.COMPLETE
    assert "campaign INCOMPLETE" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["check", "tidy", "report"])
def test_a_folder_that_does_not_exist_is_exit_2(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        subcommands.main([command, str(tmp_path / "nowhere")])
    assert exited.value.code == 2
    assert "is not a folder" in capsys.readouterr().err


def test_an_unreadable_csv_is_one_line_and_exit_2(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (copy / RESPONSES).write_bytes(b"\xff\xfe not utf-8 \x00\x81")
    assert subcommands.main(["check", str(copy)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {copy / RESPONSES}: not a readable CSV")


def test_an_empty_folder_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert subcommands.main(["report", str(empty), "--out", str(tmp_path / "r.html")]) == 2
    assert "holds no finished worker output" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_the_researchers_reply_column_is_the_answer_check_counts(tmp_path: Path) -> None:
    # The researchers' Study 2 writes its reply to `response`, and the meta file lists it: an empty
    # reply (here every row of the first participant's first State) is an empty row.
    study2 = REPO / "tests" / "fixtures" / "study2_small.csv"
    rows = pd.read_csv(study2, dtype=str)
    silent = rows["State"].iloc[0]
    output = tmp_path / "exp1/tiny/study2_responses.csv"

    def reply(request: Request) -> Ok:
        prompt = str((request.json() or {}).get("prompt", ""))
        return Ok(text_completion_body(request, "" if f"work is: {silent}\n" in prompt else "It was good"))

    with FakeOpenAI(handlers={"/v1/completions": reply}) as server:
        code = worker_main([
            "query", "--study", "researchers/study2", "--input", str(study2), "--output", str(output),
            "--model-endpoint", server.base_url, "--model-name", "tiny", "--metrics-port", "0",
            "--samples", "1",
        ])  # fmt: skip
    assert code == 0
    (check,) = check_outputs(tmp_path)
    assert check.empty_rows == int(rows["State"].eq(silent).sum()) > 0
    assert check.failed_rows == 0
