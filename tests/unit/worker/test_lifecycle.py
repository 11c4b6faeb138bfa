"""What the worker does when a Job runs again (docs/lifecycle.md names these tests row by row):
a finished run sends nothing, a changed run moves the old files aside, extraction waits for the right
exp1 file. The server is the fault-injecting fake, because these tests count requests; the same
decisions against the real vLLM are in tests/integration/test_lifecycle_vllm.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.support.fake_clock import FakeClock
from tests.support.fake_openai import FakeOpenAI, Status
from tests.unit.worker.support import CHAT, FIXTURES, STUDY1_CSV, checkpoint_of, read_meta, worker_args
from worker import cli
from worker.commands.check_outputs import task_is_complete
from worker.errors import InputError
from worker.run.input_wait import wait_for_input
from worker.run.supersede import SUPERSEDED_DIR

EXP1_FIXTURE = FIXTURES / "extract" / "study1_exp1.csv"
UNREACHABLE = "http://127.0.0.1:9/v1"  # the discard port: nothing answers there


def query(endpoint: str, output: Path, *extra: str) -> list[str]:
    return worker_args(
        "query", endpoint, output, *extra,
        input=STUDY1_CSV, study="chat/study1", limit=3,
        timeout=1, max_retries=1, backoff_base=0.01, wait_timeout=2,
    )  # fmt: skip


# --- a finished run costs nothing ------------------------------------------------------------------


def test_a_complete_output_ends_the_run_before_any_server_is_contacted(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    output = tmp_path / "out.csv"
    assert cli.main(query(server.base_url, output)) == 0
    before = output.read_bytes()
    checkpoint_of(output).unlink()  # e.g. cleaned up by hand: the output and its meta still prove it
    sent = len(server.requests)
    # No server at all: a run that waited for /health would fail after --wait-timeout with exit 2.
    assert cli.main(query(UNREACHABLE, output)) == 0
    assert len(server.requests) == sent
    assert output.read_bytes() == before


def test_a_complete_run_with_failed_rows_keeps_its_exit_code(server: FakeOpenAI, tmp_path: Path) -> None:
    server.rule(lambda r: r.path == CHAT, Status(400, "prompt too long"))
    output = tmp_path / "out.csv"
    assert cli.main(query(server.base_url, output)) == 3
    checkpoint_of(output).unlink()
    assert cli.main(query(UNREACHABLE, output)) == 3  # the same answer: podFailurePolicy fails the Job


def test_a_new_plan_digest_for_the_same_run_is_recorded_without_rerunning(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    output = tmp_path / "out.csv"
    assert cli.main(query(server.base_url, output, "--plan-digest", "aaaa")) == 0
    assert read_meta(output)["plan_digest"] == "aaaa"
    sent = len(server.requests)
    # A flag that changes no answer (the batch size) changed the plan: same run, new digest.
    assert cli.main(query(server.base_url, output, "--plan-digest", "bbbb", "--batch-size", "2")) == 0
    assert read_meta(output)["plan_digest"] == "bbbb"
    checkpoint_of(output).unlink()
    assert cli.main(query(UNREACHABLE, output, "--plan-digest", "cccc")) == 0
    assert read_meta(output)["plan_digest"] == "cccc"
    assert len(server.requests) == sent


# --- the job-mode outputs check -----------------------------------------------------------------------


def test_check_outputs_marks_a_task_list_complete_only_when_every_task_is(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    tasks = [query(server.base_url, first), query(server.base_url, second, "--temperature", "0.5")]
    tasks_file = tmp_path / "tasks.json"
    tasks_file.write_text(json.dumps(tasks))
    marker = tmp_path / "state" / "outputs-complete"
    marker.parent.mkdir()
    check = ["check-outputs", "--tasks", str(tasks_file), "--marker", str(marker)]

    assert cli.main(check) == 0
    assert not marker.exists()  # nothing ran yet
    assert cli.main(["run", "--tasks", str(tasks_file)]) == 0
    sent = len(server.requests)
    assert cli.main(check) == 0
    assert marker.exists()
    assert len(server.requests) == sent  # the check never talks to the server

    # The same task list with one parameter changed: that task is not complete, no marker.
    tasks[1] = query(server.base_url, second, "--temperature", "0.7")
    tasks_file.write_text(json.dumps(tasks))
    assert cli.main(check) == 0
    assert not marker.exists()
    assert task_is_complete(tasks[0]) == (True, f"{first} is complete")
    complete, why = task_is_complete(tasks[1])
    assert not complete
    assert "made by another run" in why


def test_check_outputs_never_fails_the_pod_over_a_missing_input(tmp_path: Path) -> None:
    marker = tmp_path / "outputs-complete"
    missing_input = query(UNREACHABLE, tmp_path / "x.csv")
    missing_input[missing_input.index("--input") + 1] = str(tmp_path / "absent.csv")
    tasks_file = tmp_path / "tasks.json"
    tasks_file.write_text(json.dumps([missing_input]))
    assert cli.main(["check-outputs", "--tasks", str(tasks_file), "--marker", str(marker)]) == 0
    assert not marker.exists()
    assert task_is_complete(missing_input)[1].startswith("cannot be checked (--input")


def test_check_outputs_never_fails_the_pod_over_an_unreadable_task_list(tmp_path: Path) -> None:
    marker = tmp_path / "outputs-complete"
    tasks_file = tmp_path / "tasks.json"
    tasks_file.write_text("not json")
    assert cli.main(["check-outputs", "--tasks", str(tasks_file), "--marker", str(marker)]) == 0
    assert not marker.exists()


# --- a changed experiment moves the previous run aside and runs --------------------------------------


def test_a_changed_experiment_moves_the_old_run_aside_and_runs(server: FakeOpenAI, tmp_path: Path) -> None:
    output = tmp_path / "exp1" / "out.csv"
    assert cli.main(query(server.base_url, output, "--plan-digest", "old")) == 0
    old = {p.name: p.read_bytes() for p in output.parent.iterdir()}
    assert set(old) == {"out.csv", "out.csv.partial.jsonl", "out.csv.meta.json"}
    old_started = read_meta(output)["started_at"]

    # Without --supersede the worker refuses, as a researcher running by hand expects.
    assert cli.main(query(server.base_url, output, "--temperature", "0.7")) == 2
    assert {p.name: p.read_bytes() for p in output.parent.iterdir()} == old

    sent = len(server.requests_to(CHAT))  # the first run's requests, all rows
    changed = query(server.base_url, output, "--temperature", "0.7", "--supersede", "--plan-digest", "new")
    assert cli.main(changed) == 0
    assert len(server.requests_to(CHAT)) == 2 * sent  # every row ran again
    (folder,) = (output.parent / SUPERSEDED_DIR).iterdir()
    moved = {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.endswith(".superseded-by.json")}
    assert moved == old  # byte for byte: nothing deleted, nothing changed
    record = read_meta(output)["supersedes"]
    assert record["moved_to"] == str(folder)
    assert record["previous_run"]["started_at"] == old_started
    assert record["previous_run"]["plan_digest"] == "old"
    assert record["previous_run"]["parameters"]["generation"]["temperature"] != 0.7
    note = json.loads((folder / "out.csv.superseded-by.json").read_text())
    assert note["by"]["plan_digest"] == "new"
    assert note["by"]["parameters"]["generation"]["temperature"] == 0.7
    assert read_meta(output)["plan_digest"] == "new"


def test_a_partial_run_with_other_parameters_is_moved_aside_too(server: FakeOpenAI, tmp_path: Path) -> None:
    output = tmp_path / "out.csv"
    args = query(server.base_url, output)
    args[args.index("--limit") + 1] = "2"
    assert cli.main(args) == 0
    output.unlink()  # as if the run had been stopped after its checkpoint, before writing the output
    output.with_name("out.csv.meta.json").unlink()
    partial = checkpoint_of(output).read_bytes()
    assert cli.main(query(server.base_url, output, "--temperature", "0.9", "--supersede")) == 0
    (folder,) = (tmp_path / SUPERSEDED_DIR).iterdir()
    assert (folder / "out.csv.partial.jsonl").read_bytes() == partial
    assert read_meta(output)["supersedes"]["files"] == ["out.csv.partial.jsonl"]


def test_an_output_nobody_can_account_for_is_moved_aside_not_overwritten(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    output = tmp_path / "out.csv"
    output.write_text("hand-made\n")
    assert cli.main(query(server.base_url, output, "--supersede")) == 0
    (folder,) = (tmp_path / SUPERSEDED_DIR).iterdir()
    assert (folder / "out.csv").read_text() == "hand-made\n"
    assert "no checkpoint" in read_meta(output)["supersedes"]["reason"]


# --- extraction waits for the exp1 run it was planned after --------------------------------------------


def _exp1(directory: Path, digest: str | None) -> Path:
    path = directory / "study1_responses.csv"
    path.write_bytes(EXP1_FIXTURE.read_bytes())
    meta = {"pipeline": "query", "plan_digest": digest}
    path.with_name(path.name + ".meta.json").write_text(json.dumps(meta))
    return path


def test_extraction_waits_until_the_exp1_meta_records_the_planned_digest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    caplog.set_level(logging.INFO)
    exp1 = _exp1(tmp_path, "old-run")
    clock.at(0.4, lambda: _exp1(tmp_path, "planned"))
    wait_for_input(exp1, 10, plan_digest="planned", poll_s=0.05, clock=clock, sleep=clock.sleep)
    assert 0.4 <= clock.now < 0.5  # returned at the first poll after the planned run's file arrived
    assert f"waiting for --input {exp1} with plan digest planned" in caplog.text
    assert "exists but was made by another Experiment 1 run (plan digest old-run)" in caplog.text
    assert " s left" in caplog.text
    assert "appeared after" in caplog.text


def test_extraction_does_not_read_a_stale_exp1_file(
    server: FakeOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp1 = _exp1(tmp_path, "old-run")
    output = tmp_path / "structured.csv"
    code = cli.main([
        "extract", "--input", str(exp1), "--output", str(output), "--study", "chat/study1",
        "--model-endpoint", server.base_url, "--model-name", "tiny", "--metrics-port", "0",
        "--wait-for-input", "0.3", "--wait-for-digest", "planned",
    ])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "was made by another Experiment 1 run (plan digest old-run)" in err
    assert "waiting for plan digest planned" in err
    assert not output.exists()
    assert not server.requests  # nothing was sent for the stale file


def test_a_file_without_meta_is_not_the_planned_run(tmp_path: Path, clock: FakeClock) -> None:
    exp1 = tmp_path / "exp1.csv"
    exp1.write_text("x\n")
    with pytest.raises(InputError, match=r"has no readable meta file exp1\.csv\.meta\.json"):
        wait_for_input(exp1, 0.2, plan_digest="planned", poll_s=0.05, clock=clock, sleep=clock.sleep)


def test_a_missing_input_says_how_the_job_gets_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRACE_MISSING_INPUT_HELP", "Upload it to the claim grace-input-data.")
    args = query(UNREACHABLE, tmp_path / "out.csv")
    args[args.index("--input") + 1] = str(tmp_path / "study1.csv")
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(
        f"--input {tmp_path / 'study1.csv'}: no such file. Upload it to the claim grace-input-data."
    )


def test_the_run_that_superseded_another_still_says_so_after_a_resume(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    output = tmp_path / "out.csv"
    assert cli.main(query(server.base_url, output)) == 0
    # The changed run moves the old one aside, then loses one row to the server (sent again next time).
    server.rule(lambda r: r.path == CHAT, Status(503, "busy"), times=2)
    changed = query(server.base_url, output, "--temperature", "0.7", "--supersede", "--batch-size", "1")
    assert cli.main(changed) == 3
    moved_to = read_meta(output)["supersedes"]["moved_to"]
    assert read_meta(output)["rows"]["failed_transport"] == 1
    assert cli.main(changed) == 0  # the resume sends the lost row
    assert read_meta(output)["rows"]["failed_transport"] == 0
    assert read_meta(output)["supersedes"]["moved_to"] == moved_to
