"""`python -m worker query` end to end against the fault-injecting server: checkpoint, retries, exit codes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from tests.support.contracts import SAMPLE_COLUMNS, STUDY1_QUERY_ADDED_COLUMNS
from tests.support.fake_openai import (
    Behaviour,
    FakeOpenAI,
    Hang,
    Ok,
    Request,
    Reset,
    Status,
    Trickle,
    Truncate,
    chat_completion_body,
)
from tests.support.worker_process import checkpoint_rows, wait_until
from tests.unit.worker.support import CHAT, REPO, STUDY1_CSV, STUDY2_CSV, read_csv, read_meta, worker_args
from worker.cli import main

STUDY1_TURNS = 3  # study1 asks three questions, one chat request each
# Only a worker that hangs trips these; the runs they guard finish in a few seconds.
HANG_GUARD_S = 30


def argv(
    server: FakeOpenAI, output: Path, *extra: str, source: Path = STUDY1_CSV, study: str = "chat/study1"
) -> list[str]:
    # One answer per row unless a test asks for the study's sampling (its own setting is 5 per row).
    samples = () if "--samples" in extra else ("--samples", "1")
    return worker_args(
        "query", server.base_url, output, *samples, *extra,
        input=source, study=study, timeout=1, max_retries=2, backoff_base=0.01, wait_timeout=2,
    )  # fmt: skip


def rows_of(request: Request) -> str:
    return str(request.json()["messages"][-1]["content"])


def test_every_row_once_in_order_with_the_input_columns_unchanged(server: FakeOpenAI, tmp_path: Path) -> None:
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--batch-size", "3")) == 0
    source, result = read_csv(STUDY1_CSV), read_csv(output)
    assert list(result.columns) == [*source.columns, *SAMPLE_COLUMNS, *STUDY1_QUERY_ADDED_COLUMNS]
    pd.testing.assert_frame_equal(result[source.columns], source)  # ids keep their text: "007" stays "007"
    assert result["participant_id"].iloc[0] == "007"
    assert (result["error"] == "").all()
    assert (result["attempts"] == "3").all()  # one request per turn, none retried
    assert (result["model_name"] == "tiny").all()
    assert (result["finish_reason"] == "stop").all()
    assert (result["finish_reasons"] == '["stop", "stop", "stop"]').all()
    # each answer belongs to its own row and turn: the fake echoes the start of the last user message
    for setup, answer in zip(source["story_setup"], result["response_story"], strict=True):
        assert answer.startswith(f"answer to: {setup.split('<br>')[0][:40]}")
    for speech, answer in zip(source["speach"], result["response_speech"], strict=True):
        assert answer == f"answer to: {speech[:60]}"
    for question, answer in zip(source["knowledgeQ"], result["response_knowledge"], strict=True):
        assert answer == f"answer to: {question[:60]}"
    assert len(server.requests_to(CHAT)) == 3 * len(source)


def test_study1_asks_its_questions_in_one_conversation_each_reply_before_the_next(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--limit", "1")) == 0
    story, speech, knowledge = (r.json()["messages"] for r in server.requests_to(CHAT))
    row, result = read_csv(STUDY1_CSV).iloc[0], read_csv(output).iloc[0]
    # The prior is asked alone: nothing the model reads before answering it mentions the statement.
    assert [m["role"] for m in story] == ["user"]
    assert row["priorQ"] in story[0]["content"]
    assert row["speach"] not in json.dumps(story)
    assert row["knowledgeQ"] not in json.dumps(story)
    # Each later question follows the model's own earlier replies, in the same conversation.
    assert speech[:1] == story
    assert speech[1] == {"role": "assistant", "content": result["response_story"]}
    assert speech[2]["role"] == "user"
    assert speech[2]["content"].startswith(row["speach"])
    assert knowledge[:3] == speech
    assert knowledge[3] == {"role": "assistant", "content": result["response_speech"]}
    assert knowledge[4]["content"].startswith(row["knowledgeQ"])
    # The full conversation is recorded, ending with the last reply.
    assert json.loads(result["conversation"]) == [
        *knowledge,
        {"role": "assistant", "content": result["response_knowledge"]},
    ]


def test_a_failed_later_turn_keeps_the_earlier_replies_and_names_the_turn(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    row = read_csv(STUDY1_CSV).iloc[0]
    server.rule(lambda r: row["knowledgeQ"] in r.text, Status(400, "too long"))
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--limit", "1")) == 3
    result = read_csv(output).iloc[0]
    assert result["error"] == "turn knowledge: HTTP 400: too long"
    assert result["response_story"].startswith("answer to: ")
    assert result["response_speech"].startswith("answer to: ")
    assert result["response_knowledge"] == ""
    assert result["attempts"] == "3"


def test_the_prompt_comes_from_the_study_with_sampling_parameters(server: FakeOpenAI, tmp_path: Path) -> None:
    args = [
        *argv(server, tmp_path / "out.csv", source=STUDY2_CSV, study="chat/study2"),
        "--temperature",
        "0.5",
    ]
    assert main(args) == 0
    request = server.requests_to(CHAT)[0].json()
    row = read_csv(STUDY2_CSV).iloc[0]
    assert request["model"] == "tiny"
    assert request["temperature"] == 0.5
    assert request["max_tokens"] == 64  # room for a preamble before the sentence
    system, user = request["messages"]
    assert system["role"] == "system"
    assert row["Precontext"] in user["content"]
    assert row["Goal"] in user["content"]
    assert f"deserved {row['State']}" in user["content"]
    assert row["Utterance"] not in user["content"]  # a stimulus-design column, not part of the prompt


def test_the_meta_file_records_the_run(server: FakeOpenAI, tmp_path: Path) -> None:
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--limit", "4")) == 0
    meta = read_meta(tmp_path / "out.csv")
    assert meta["pipeline"] == "query"
    assert meta["command_line"][:2] == ["python -m worker", "query"]
    assert meta["input"]["rows_in_file"] == 6
    assert meta["input"]["rows_processed"] == 4
    assert len(meta["input"]["sha256"]) == 64
    assert meta["server"]["version"] == {"version": "0.32.0"}
    assert meta["server"]["model"]["id"] == "tiny"
    assert meta["server"]["model"]["max_model_len"] == 512
    assert meta["parameters"]["model_name"] == "tiny"
    assert meta["parameters"]["generation"]["max_tokens"] == 128
    assert meta["rows"] == {
        "ok": 4,
        "failed": 0,
        "failed_row_specific": 0,
        "failed_transport": 0,
        "not_done": 0,
        "from_checkpoint": 0,
    }
    assert meta["exit_code"] == 0
    assert len(read_csv(output)) == 4


def test_the_meta_file_records_the_checkpoint_the_server_loaded(
    server: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Job-mode pods point GRACE_WEIGHTS_MARKER at the download's marker on the weights claim."""
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--limit", "1")) == 0
    assert read_meta(tmp_path / "out.csv")["weights"] is None  # no marker
    marker = tmp_path / ".grace-weights.json"
    commit = "0123456789abcdef0123456789abcdef01234567"
    recorded = {"repo": "google/gemma-2-2b-it", "revision": "main", "commit": commit, "complete": True}
    marker.write_text(json.dumps(recorded))
    monkeypatch.setenv("GRACE_WEIGHTS_MARKER", str(marker))
    assert main(argv(server, tmp_path / "again.csv", "--limit", "1")) == 0
    meta = read_meta(tmp_path / "again.csv")
    assert meta["weights"] == {"repo": "google/gemma-2-2b-it", "revision": "main", "commit": commit}


def row_matcher(row: pd.Series) -> Callable[[Request], bool]:
    """Matches the requests of one study2 fixture row (its scenario and state are unique together)."""
    return lambda request: row["Scenario"] in request.text and f"deserved {row['State']}." in request.text


def test_faults_are_retried_and_never_lose_a_row(server: FakeOpenAI, tmp_path: Path) -> None:
    rows = read_csv(STUDY2_CSV)
    faults: list[list[Behaviour]] = [
        [Status(500)], [Status(429, retry_after=0.1)], [Hang(2)], [Truncate()], [Reset()], [],
        [Status(502), Trickle(0.5)], [],
    ]  # fmt: skip
    for index, row_faults in enumerate(faults):
        for fault in row_faults:
            server.rule(row_matcher(rows.iloc[index]), fault, times=1)
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--batch-size", "4", source=STUDY2_CSV, study="chat/study2")) == 0
    result = read_csv(output)
    assert len(result) == 8
    assert (result["error"] == "").all()
    assert list(result["attempts"]) == [str(1 + len(row_faults)) for row_faults in faults]


def test_permanent_failures_are_recorded_on_their_rows_and_exit_3(server: FakeOpenAI, tmp_path: Path) -> None:
    server.rule(lambda r: "Ben tells you" in r.text, Status(400, "prompt is too long for this model"))
    server.rule(lambda r: "Chen tells you" in r.text, Status(503, "overloaded"))
    output = tmp_path / "out.csv"
    assert main(argv(server, output)) == 3
    result = read_csv(output)
    assert len(result) == 6  # complete despite the failures
    failed = result[result["error"] != ""]
    assert list(failed.index) == [1, 2, 4, 5]
    refused = failed[failed["speach"].str.contains("Ben")]
    assert (refused["error"] == "turn speech: HTTP 400: prompt is too long for this model").all()
    assert (refused["attempts"] == "2").all()  # the story turn, then the refusal: not retried
    overloaded = failed[failed["speach"].str.contains("Chen")]
    assert overloaded["error"].str.startswith("turn speech: gave up after 3 attempts: HTTP 503").all()
    assert (overloaded["attempts"] == "4").all()
    assert (failed["response_speech"] == "").all()
    assert (failed["response_knowledge"] == "").all()
    meta = read_meta(tmp_path / "out.csv")
    assert meta["rows"]["ok"] == 2
    assert meta["rows"]["failed"] == 4
    assert meta["exit_code"] == 3


def test_an_unknown_model_exits_2_before_any_row(
    server: FakeOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out.csv"
    args = argv(server, output)
    args[args.index("--model-name") + 1] = "nope"
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"worker query: error: --model-name nope: The model `nope` does not exist at {server.base_url} "
        "(served: tiny)."
    )
    assert server.requests_to(CHAT) == []
    assert list(tmp_path.iterdir()) == []


def test_a_404_model_mid_run_stops_the_run_but_keeps_finished_rows(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    # The model was undeployed mid-run: every later row would fail the same way, so stop and say so.
    server.rule(
        lambda r: "Chen tells you" in r.text,
        Status(404, "The model `tiny` does not exist. Valid aliases: other."),
    )
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--batch-size", "1")) == 2
    assert not output.exists()
    lines = (tmp_path / "out.csv.partial.jsonl").read_text().splitlines()
    assert [json.loads(line)["row"] for line in lines[1:]] == [0, 1]


def test_unreachable_server_exits_5_after_the_wait(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out.csv"
    args = argv(FakeOpenAI(port=9), output)  # never started: port 9 is closed
    args[args.index("--wait-timeout") + 1] = "0.5"
    assert main(args) == 5
    assert "did not answer /health within --wait-timeout 0.5 s" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


BAD_INPUTS = {
    "missing file": (None, "no such file"),
    "empty file": (b"", "the file is empty"),
    "header only": (b"participant_id,story_shortname\n", "missing column(s)"),
    "no rows": (
        b"participant_id,story_shortname,story_setup,priorQ,speach,speachQ,knowledgeQ,access,observe\n",
        "has a header but no rows",
    ),
    "missing columns": (b"participant_id,story\n1,a\n", "missing column(s) story_shortname, story_setup"),
    "undecodable bytes": (
        b"participant_id,story_shortname,story_setup,priorQ,speach,speachQ,knowledgeQ,access,observe\n"
        b"1,\xff\xfe,x,x,x,x,x,1,1\n",
        "not UTF-8 text",
    ),
    "ragged csv": (b'a,b\n1,"unterminated\n', "not a readable CSV"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    server: FakeOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    content, expected = BAD_INPUTS[case]
    source = tmp_path / "in.csv"
    if content is not None:
        source.write_bytes(content)
    out_dir = tmp_path / "out"
    assert main(argv(server, out_dir / "out.csv", source=source)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"worker query: error: --input {source}: ")
    assert expected in lines[0]
    assert not out_dir.exists()
    assert server.requests == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("--study", "nosuchstudy"), "--study nosuchstudy: unknown study"),
        (("--batch-size", "0"), "--batch-size 0: Input should be greater than 0."),
        (("--model-endpoint", "localhost:8000"), "--model-endpoint must start with http:// or https://"),
        (("--limit", "-1"), "--limit -1: Input should be greater than 0."),
        (
            ("--api-key-env", "GRACE_TEST_UNSET_VARIABLE"),
            "--api-key-env GRACE_TEST_UNSET_VARIABLE: that environment",
        ),
        (("--timeout", "soon"), "argument --timeout: invalid float value: 'soon'"),
        (("--max-tokens", "0"), "--max-tokens 0: Input should be greater than 0."),
    ],
)
def test_bad_arguments_are_one_line_exit_2(
    server: FakeOpenAI,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: tuple[str, str],
    expected: str,
) -> None:
    args = argv(server, tmp_path / "out.csv")
    flag, value = change
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert expected in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_an_existing_output_without_a_checkpoint_is_never_overwritten(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    output = tmp_path / "out.csv"
    output.write_text("precious,results\n1,2\n")
    assert main(argv(server, output)) == 2
    assert output.read_text() == "precious,results\n1,2\n"


def test_resume_skips_finished_rows(server: FakeOpenAI, tmp_path: Path) -> None:
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--limit", "2")) == 0
    assert main(argv(server, output)) == 0  # same input and parameters, more rows: continues
    assert len(server.requests_to(CHAT)) == 6 * STUDY1_TURNS
    result = read_csv(output)
    assert len(result) == 6
    assert read_meta(tmp_path / "out.csv")["rows"]["from_checkpoint"] == 2


def test_a_rerun_of_a_complete_run_sends_nothing_and_rewrites_the_same_file(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    output = tmp_path / "out.csv"
    assert main(argv(server, output)) == 0
    before = output.read_text()
    assert main(argv(server, output)) == 0
    assert len(server.requests_to(CHAT)) == 6 * STUDY1_TURNS
    assert output.read_text() == before
    meta = read_meta(tmp_path / "out.csv")
    assert meta["rows"]["from_checkpoint"] == 6
    assert meta["server"]["model"]["id"] == "tiny"  # the server facts of the run that did the work


def test_a_checkpoint_from_other_parameters_is_refused(
    server: FakeOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--limit", "2")) == 0
    checkpoint = (tmp_path / "out.csv.partial.jsonl").read_bytes()
    assert main(argv(server, output, "--temperature", "0.7")) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "was written by a different run (different parameters: generation" in message
    assert (tmp_path / "out.csv.partial.jsonl").read_bytes() == checkpoint


def test_a_checkpoint_from_another_input_is_refused(
    server: FakeOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(STUDY1_CSV.read_bytes())
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--limit", "2", source=source)) == 0
    source.write_bytes(STUDY1_CSV.read_bytes().replace(b"Ana", b"Anna"))
    assert main(argv(server, output, source=source)) == 2
    assert "its input file had different contents" in capsys.readouterr().err


def test_a_torn_last_checkpoint_line_is_dropped_and_the_row_redone(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--limit", "3", "--batch-size", "1")) == 0
    output.unlink()  # as if the run had died before writing the output
    checkpoint = tmp_path / "out.csv.partial.jsonl"
    lines = checkpoint.read_bytes().splitlines(keepends=True)
    checkpoint.write_bytes(b"".join(lines[:-1]) + lines[-1][:20])  # the last row only half written
    before = len(server.requests_to(CHAT))
    assert main(argv(server, output)) == 0
    redone = len(server.requests_to(CHAT)) - before
    assert redone == 4 * STUDY1_TURNS  # row 2 again, rows 3-5
    assert len(read_csv(output)) == 6


def test_sigkill_mid_run_then_rerun_gives_every_row_exactly_once_in_order(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    frame = pd.concat([read_csv(STUDY2_CSV)] * 25, ignore_index=True)  # 200 rows
    frame["Participant_ID"] = [f"{i:04d}" for i in range(len(frame))]
    frame.to_csv(source, index=False)
    with FakeOpenAI(latency_s=0.05) as fake:
        output = tmp_path / "out.csv"
        args = argv(fake, output, "--batch-size", "8", source=source, study="chat/study2")
        env = {**os.environ, "PYTHONPATH": str(REPO), "LOG_LEVEL": "WARNING"}
        worker = subprocess.Popen([sys.executable, "-m", "worker", *args], cwd=tmp_path, env=env)
        checkpoint = tmp_path / "out.csv.partial.jsonl"
        # Kill it once some, not all, rows are done.
        wait_until(lambda: checkpoint_rows(checkpoint) >= 40, HANG_GUARD_S, "40 rows in the checkpoint")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        assert worker.returncode == -signal.SIGKILL
        assert not output.exists()
        done_before = checkpoint_rows(checkpoint)
        assert 40 <= done_before < 200
        rerun = subprocess.run([sys.executable, "-m", "worker", *args], cwd=tmp_path, env=env, check=False)
        assert rerun.returncode == 0
        sent = len(fake.requests_to(CHAT))
    result = read_csv(output)
    assert list(result["Participant_ID"]) == [f"{i:04d}" for i in range(200)]  # every row once, in order
    pd.testing.assert_frame_equal(result[frame.columns], frame.astype(str))
    assert (result["error"] == "").all()
    # at most the requests in flight at the kill (8) were sent twice
    assert 200 <= sent <= 200 + 8


def test_in_a_pod_progress_is_a_log_line(
    server: FakeOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv(server, tmp_path / "out.csv")) == 0
    err = capsys.readouterr().err
    assert "progress pipeline=query done=6 total=6 ok=6 failed=0" in err


def test_metrics_are_served_while_running(tmp_path: Path) -> None:
    with FakeOpenAI(latency_s=0.3) as fake:
        port = _free_port()
        args = argv(fake, tmp_path / "out.csv", "--batch-size", "1", "--limit", "3")
        args[args.index("--metrics-port") + 1] = str(port)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        worker = subprocess.Popen([sys.executable, "-m", "worker", *args], cwd=tmp_path, env=env)
        scrapes = [""]

        def one_row_done() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
                    scrapes.append(response.read().decode())
            except OSError:
                return False
            return 'grace_worker_rows_total{pipeline="query",status="ok"} 1.0' in scrapes[-1]

        try:
            wait_until(one_row_done, HANG_GUARD_S, "the metrics of a run with one row done")
        finally:
            assert worker.wait(HANG_GUARD_S) == 0
        scrape = scrapes[-1]
    assert 'grace_worker_requests_total{outcome="ok"}' in scrape
    assert "grace_worker_request_seconds_bucket" in scrape
    assert 'grace_worker_tokens_total{kind="prompt"}' in scrape
    assert 'grace_worker_rows_to_do{pipeline="query"} 3.0' in scrape


def test_run_tasks_runs_in_order_and_exits_with_the_worst_code(server: FakeOpenAI, tmp_path: Path) -> None:
    server.rule(lambda r: "Ben tells you" in r.text, Status(400, "too long"))
    tasks = [
        argv(server, tmp_path / "a.csv", source=STUDY2_CSV, study="chat/study2"),
        argv(server, tmp_path / "b.csv"),  # exit 3: one row refused
        [*argv(server, tmp_path / "c.csv", source=STUDY2_CSV, study="chat/study2"), "--limit", "2"],
    ]
    task_file = tmp_path / "tasks.json"
    task_file.write_text(json.dumps(tasks))
    assert main(["run", "--tasks", str(task_file)]) == 3
    assert len(read_csv(tmp_path / "a.csv")) == 8
    assert len(read_csv(tmp_path / "c.csv")) == 2
    tasks.append(argv(server, tmp_path / "d.csv", source=tmp_path / "missing.csv"))
    task_file.write_text(json.dumps(tasks))
    assert main(["run", "--tasks", str(task_file)]) == 2  # 2 (nothing done) outranks 3


@pytest.mark.parametrize("content", ["not json", "[]", '[["query"], "x"]', '[["dance", "--input", "x"]]'])
def test_run_tasks_refuses_a_bad_task_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    task_file = tmp_path / "tasks.json"
    task_file.write_text(content)
    assert main(["run", "--tasks", str(task_file)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"worker run: error: --tasks {task_file}: ")


def test_the_cli_never_shows_a_traceback_for_bad_input(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker", "query", "--input", str(tmp_path / "none.csv"), "--output",
         str(tmp_path / "o.csv"), "--model-endpoint", "http://127.0.0.1:9/v1", "--model-name", "m",
         "--study", "chat/study1"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == f"worker query: error: --input {tmp_path / 'none.csv'}: no such file."
    assert list(tmp_path.iterdir()) == []


def test_output_round_trips_commas_quotes_and_newlines(server: FakeOpenAI, tmp_path: Path) -> None:
    # A lone carriage return once split rows: real vLLM output (tiny model) contains them.
    answer = "Initial answer: 2\r0: 10%\u20281: 90%"  # no quote or newline to force quoting by chance
    server.chat_content = lambda _r: answer
    output = tmp_path / "out.csv"
    assert main(argv(server, output)) == 0
    with output.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    # quotes and <br> as in the input
    assert rows[1]["story_setup"] == read_csv(STUDY1_CSV)["story_setup"].iloc[1]
    assert all(row["response_speech"] == answer for row in rows)
    assert (read_csv(output)["response_speech"] == answer).all()  # pandas' C parser agrees


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_server_without_a_models_list_is_still_usable(server: FakeOpenAI, tmp_path: Path) -> None:
    # Hosted OpenAI-compatible APIs may lack /v1/models (and /health, /version): the rows decide.
    for path in ("/v1/models", "/health", "/version"):
        del server.handlers[path]
    server.handlers["/v1/models"] = lambda _r: Status(404, "Not Found")
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--limit", "2")) == 0
    meta = read_meta(tmp_path / "out.csv")
    assert meta["server"]["model"] is None
    assert meta["server"]["version"] is None


def test_the_log_is_also_appended_to_grace_log_file(
    server: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_file = tmp_path / "logs" / "study1-exp1-tiny.log"
    log_file.parent.mkdir()
    log_file.write_text("earlier attempt\n", encoding="utf-8")
    monkeypatch.setenv("GRACE_LOG_FILE", str(log_file))
    assert main(argv(server, tmp_path / "out.csv")) == 0
    text = log_file.read_text(encoding="utf-8")
    assert text.startswith("earlier attempt\n")  # a restarted pod appends, never truncates
    assert "INFO" in text
    assert len(text.splitlines()) > 1


def test_an_unopenable_grace_log_file_is_one_line_exit_2(
    server: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRACE_LOG_FILE", str(tmp_path / "missing-dir" / "x.log"))
    assert main(argv(server, tmp_path / "out.csv")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "GRACE_LOG_FILE=" in err[0]
    assert not (tmp_path / "out.csv").exists()


def test_the_study_samples_every_row_five_times_at_its_temperature(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    # The researchers' configuration, from the study file: temperature 0.3, 5 samples per row, seed 42.
    output = tmp_path / "out.csv"
    command = argv(server, output, "--limit", "2", "--samples", "5")
    at = command.index("--samples")
    del command[at : at + 2]  # no --samples at all: the study's own setting applies
    assert "--samples" not in command
    assert main(command) == 0
    frame = read_csv(output)
    assert frame["sample"].tolist() == ["0", "1", "2", "3", "4"] * 2
    assert frame["seed"].nunique() == 10
    requests = [r.json() for r in server.requests_to(CHAT)]
    assert {r["temperature"] for r in requests} == {0.3}
    meta = read_meta(tmp_path / "out.csv")
    assert meta["parameters"]["sampling"] == {"temperature": 0.3, "samples_per_row": 5, "base_seed": 42}


def reasoning_reply(content: str | None, reasoning: str, finish_reason: str) -> Ok:
    """A reasoning model's chat completion in vLLM 0.32's shape (the message's `reasoning` field)."""
    body = chat_completion_body(Request("POST", CHAT, {}, b"{}", 0.0), content or "")
    body["model"] = "tiny"
    body["choices"][0]["message"].update(content=content, reasoning=reasoning)
    body["choices"][0]["finish_reason"] = finish_reason
    return Ok(body)


def test_a_reasoning_models_reasoning_has_its_own_column_and_the_effort_is_sent(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    server.rule(
        lambda r: r.path == CHAT, reasoning_reply("It was good", "They liked it.", "stop")
    )
    output = tmp_path / "out.csv"
    args = argv(
        server, output, "--limit", "2", "--reasoning-effort", "low", source=STUDY2_CSV, study="chat/study2"
    )
    assert main(args) == 0
    result = read_csv(output)
    assert (result["model_response"] == "It was good").all()
    assert (result["model_response_reasoning"] == "They liked it.").all()
    assert all(r.json()["reasoning_effort"] == "low" for r in server.requests_to(CHAT))
    meta = read_meta(tmp_path / "out.csv")
    assert meta["parameters"]["reasoning_effort"] == "low"


@pytest.mark.parametrize(
    ("finish_reason", "phrase"),
    [
        ("length", "empty final answer: the model's reasoning used the whole token budget"),
        ("stop", "empty final answer: the model reasoned and then stopped (finish_reason=stop)"),
    ],
)
def test_an_empty_final_answer_after_reasoning_is_a_row_error_naming_the_cause(
    server: FakeOpenAI, tmp_path: Path, finish_reason: str, phrase: str
) -> None:
    server.rule(
        lambda r: r.path == CHAT, reasoning_reply(None, "Let me think", finish_reason)
    )
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--limit", "2", source=STUDY2_CSV, study="chat/study2")) == 3
    result = read_csv(output)
    assert result["error"].str.startswith(phrase).all()
    assert (result["model_response"] == "").all()


def test_the_exact_prompt_token_ids_the_server_rendered_are_recorded(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    body = chat_completion_body(Request("POST", CHAT, {}, b"{}", 0.0), "fine")
    body["model"] = "tiny"
    body["prompt_token_ids"] = [0, 4, 204, 93, 1, 204, 5, 204]  # vLLM 0.32's field (return_token_ids)
    server.rule(lambda r: r.path == CHAT, Ok(body))
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--limit", "1", source=STUDY2_CSV, study="chat/study2")) == 0
    assert json.loads(read_csv(output)["prompt_token_ids"].iloc[0]) == [[0, 4, 204, 93, 1, 204, 5, 204]]
    assert server.requests_to(CHAT)[0].json()["return_token_ids"] is True
