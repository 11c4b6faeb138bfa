"""`python -m worker extract` end to end against the local fake server, in-process.

The fake server's chat handler plays an extractor (support.Extractor): per row (found by a ROW-<key>
marker in the Experiment 1 response) it returns scripted replies in order (valid JSON, JSON in prose or a
code fence, invalid JSON, schema violations, blank content, replies cut off at the token limit), and it
answers the structured-output probe the way each kind of server does: vLLM enforces json_schema; DeepSeek
refuses it with 400 and takes json_object only when the prompt says "json"; an old or foreign server
accepts json_schema and ignores it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pydantic
import pytest

from tests.support.contracts import SAMPLE_COLUMNS
from tests.support.fake_clock import FakeClock
from tests.support.fake_openai import FakeOpenAI, Status
from tests.unit.worker.support import (
    CHAT,
    EXP1_COLUMNS,
    FIELDS1,
    GOOD,
    SCHEMAS_DIR,
    STUDY1_COLUMNS,
    Extractor,
    good,
    load_schema,
    read_csv,
    read_meta,
    study1_row,
    study_text,
    worker_args,
    write_csv,
)
from worker import cli
from worker import constants as worker_constants
from worker.errors import InputError
from worker.pipelines.extraction.extraction_pipeline import resolve_arguments
from worker.run.input_wait import wait_for_input
from worker.studies.definition import load_study, resolve_study_path
from worker.studies.extraction_section import ExtractionSection, load_extraction

ADDED = [
    "extraction_method",
    "extraction_self_coded",
    "extraction_errors",
    "extraction_attempts",
    "extraction_warnings",
]
SECRET = "sk-test-do-not-leak-4242"
# An Experiment 1 reply the parser cannot code (it is not in the study's format): the extractor is asked.
REPLY = "Initial answer: 3. 0: 0% 1: 5% 2: 25% 3: 70%. Knows exactly: no"


@pytest.fixture
def server_setup(extractor: Extractor) -> Callable[[FakeOpenAI], None]:
    return extractor.install


def run(server: FakeOpenAI, tmp_path: Path, rows: list[dict[str, str]], *extra: str) -> tuple[int, Path]:
    source = write_csv(tmp_path / "exp1.csv", rows)
    output = tmp_path / "structured.csv"
    argv = worker_args(
        "extract", server.base_url, output, *extra,
        input=source, study="chat/study1", backoff_base=0.01, wait_timeout=5,
    )  # fmt: skip
    return cli.main(argv), output


def probe_findings(folder: Path) -> dict[str, Any]:
    """What the run's meta file records about the structured-output probe."""
    return read_meta(folder / "structured.csv")["server"]["pipeline_findings"]["structured_output"]


def chat_requests(server: FakeOpenAI, key: str) -> list[dict[str, Any]]:
    bodies = [request.json() for request in server.requests_to(CHAT)]
    return [body for body in bodies if any(f"ROW-{key}" in str(m["content"]) for m in body["messages"])]


# ---------------------------------------------------------------------------------------------------------
# Every row state, against a vLLM-like server


def extract_row(
    server: FakeOpenAI,
    extractor: Extractor,
    tmp_path: Path,
    *replies: str | tuple[str, str],
    row: dict[str, str] | None = None,
) -> tuple[int, dict[str, str]]:
    """One Experiment 1 row (ROW-a replying REPLY, unless `row` is given) extracted with --max-retries 2,
    the extractor replying `replies` in turn: the exit code and the output row."""
    if replies:
        extractor.script("a", *replies)
    code, output = run(server, tmp_path, [row or study1_row("a", f"ROW-a {REPLY}")], "--max-retries", "2")
    (result,) = read_csv(output).to_dict("records")
    return code, result


def test_the_output_is_every_exp1_column_and_value_in_row_order_then_the_fields(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    extractor.script("b", good())
    rows = [
        study1_row("a", "", error="gave up after 6 attempts: HTTP 503: overloaded"),
        study1_row("b", f"ROW-b {REPLY}"),
    ]

    code, output = run(server, tmp_path, rows)

    assert code == 3  # complete output, a row failed
    frame = read_csv(output)
    source = read_csv(tmp_path / "exp1.csv")
    assert list(frame.columns) == [*STUDY1_COLUMNS, *EXP1_COLUMNS, *SAMPLE_COLUMNS, *FIELDS1, *ADDED]
    pd.testing.assert_frame_equal(frame[list(source.columns)], source)
    assert read_meta(output)["rows"] == {
        "ok": 1,
        "failed": 1,
        "failed_row_specific": 1,
        "failed_transport": 0,
        "not_done": 0,
        "from_checkpoint": 0,
    }


def test_a_vllm_server_is_found_to_enforce_json_schema(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    code, _ = extract_row(server, extractor, tmp_path, good())
    assert code == 0
    structured = probe_findings(tmp_path)
    assert structured["backend"] == "json_schema"
    assert "enforced" in structured["probes"][0]


@pytest.mark.parametrize(
    ("replies", "fields", "attempts"),
    [
        ((good(),), GOOD, "1"),
        ((f"Here is the data:\n```json\n{good(prior_answer=2)}\n```\nDone.",),
         {**GOOD, "prior_answer": 2}, "1"),
        ((f"The participant said: {good(knowledge_answer='yes')} (from the reply)",),
         {**GOOD, "knowledge_answer": "yes"}, "1"),
        (("{'prior_answer': 3,", good()), GOOD, "2"),
        ((good(prior_answer=7, knowledge_answer="maybe"), good()), GOOD, "2"),
        (("   ", good()), GOOD, "2"),
    ],
    ids=["valid", "in-a-code-fence", "in-prose", "invalid-json-then-valid", "schema-violation-then-valid",
         "blank-then-valid"],
)  # fmt: skip
def test_a_reply_that_can_be_read_fills_every_field(
    server: FakeOpenAI,
    extractor: Extractor,
    tmp_path: Path,
    replies: tuple[str, ...],
    fields: dict[str, Any],
    attempts: str,
) -> None:
    code, row = extract_row(server, extractor, tmp_path, *replies)
    assert code == 0
    assert {name: row[name] for name in FIELDS1} == {name: str(value) for name, value in fields.items()}
    assert (row["extraction_errors"], row["extraction_attempts"], row["extraction_warnings"]) == (
        "",
        attempts,
        "",
    )


def test_a_reply_cut_off_at_the_token_limit_fails_after_every_reask(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    code, row = extract_row(server, extractor, tmp_path, ('{"prior_answer": 3, "probability_0"', "length"))
    assert code == 3
    assert row["extraction_attempts"] == "3"  # first ask + --max-retries 2 re-asks
    assert row["extraction_errors"].startswith("truncated: the reply was cut off at the token limit")
    assert row["extraction_errors"].endswith("(after 3 attempts)")
    assert all(row[name] == "" for name in FIELDS1)  # a failed row invents nothing


def test_probabilities_that_do_not_sum_to_100_are_reported_not_fixed(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    code, row = extract_row(server, extractor, tmp_path, good(probability_3=60))
    assert code == 0
    assert row["extraction_warnings"] == (
        "probability_0+probability_1+probability_2+probability_3 = 90, expected 100 +/- 1"
    )
    assert row["probability_3"] == "60"


def test_a_reply_stating_nothing_leaves_every_field_empty_without_an_error(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    code, row = extract_row(server, extractor, tmp_path, json.dumps(dict.fromkeys(FIELDS1)))
    assert code == 0
    assert all(row[name] == "" for name in FIELDS1)
    assert (row["extraction_errors"], row["extraction_attempts"]) == ("", "1")


def test_an_exp1_reply_cut_off_at_its_token_limit_is_extracted_with_a_warning(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    stopped_short = "ROW-a Initial answer: 3. 0: 0% 1: 5% 2: 25% 3: 70%. Kn"
    cut = {**study1_row("a", stopped_short), "finish_reason": "length"}
    code, row = extract_row(server, extractor, tmp_path, good(knowledge_answer=None), row=cut)
    assert code == 0
    assert (row["knowledge_answer"], row["extraction_errors"]) == ("", "")
    assert row["extraction_warnings"] == (
        "the Experiment 1 reply was cut off at its token limit (finish_reason=length): "
        "values it did not reach are null"
    )


def test_a_row_experiment_1_failed_on_is_not_sent(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    failed = study1_row("a", "", error="gave up after 6 attempts: HTTP 503: overloaded")
    code, row = extract_row(server, extractor, tmp_path, row=failed)
    assert code == 3
    assert row["extraction_errors"] == (
        "no_response: nothing to extract (Experiment 1 failed on this row: "
        "gave up after 6 attempts: HTTP 503: overloaded)"
    )
    assert row["extraction_attempts"] == "0"
    assert chat_requests(server, "a") == []


def test_reask_carries_the_validation_error_and_the_failed_reply(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    bad = good(prior_answer=7)
    extractor.script("schema", bad, good())

    code, _ = run(server, tmp_path, [study1_row("schema", "ROW-schema some answer")])

    assert code == 0
    first, second = chat_requests(server, "schema")
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert second["messages"][:2] == first["messages"]  # the original question is asked again
    assert second["messages"][2] == {"role": "assistant", "content": bad}
    correction = second["messages"][3]
    assert correction["role"] == "user"
    assert "the JSON does not match the schema: prior_answer: 7 is not allowed" in correction["content"]
    # every request, first and re-ask, is constrained to the study's schema (strict json_schema)
    for body in (first, second):
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["strict"] is True
        assert body["response_format"]["json_schema"]["schema"]["properties"].keys() == set(FIELDS1)
        assert body["max_tokens"] == 160
        assert body["temperature"] == 0.0
    # with json_schema the grammar fixes the form: the prompt does not spend context on the schema
    assert "JSON Schema" not in json.dumps(first["messages"])


def test_reask_after_a_blank_reply_joins_the_questions_user_turn(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    extractor.script("blank", " ", good())

    code, _ = run(server, tmp_path, [study1_row("blank", "ROW-blank some answer")])

    assert code == 0
    first, reask = chat_requests(server, "blank")
    # No empty assistant turn, and no two user turns in a row (Gemma-2's template refuses them): the
    # correction joins the question's user turn.
    assert [m["role"] for m in reask["messages"]] == ["system", "user"]
    question, correction = reask["messages"][1]["content"].split("\n\nThat reply could not be used")
    assert question == first["messages"][1]["content"]
    assert "the reply was blank (finish_reason=stop)" in correction


def test_prompt_shows_the_questions_and_the_response_verbatim(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    response = 'ROW-a Initial answer: 2<br>0: 10%, "1": 20%'
    extractor.script("a", good())
    code, _ = run(server, tmp_path, [study1_row("a", response)])
    assert code == 0
    (body,) = chat_requests(server, "a")
    user = body["messages"][1]["content"]
    assert response in user  # the response exactly as Experiment 1 recorded it
    assert "Q1 (a whole number from 0 to 3): How many of the 3 boxes do you think hold a toy?" in user


def test_transport_retries_are_not_reasks(server: FakeOpenAI, extractor: Extractor, tmp_path: Path) -> None:
    extractor.script("a", good())
    server.rule(lambda request: "ROW-a" in request.text, Status(503, "busy"), times=2)
    code, output = run(server, tmp_path, [study1_row("a", "ROW-a text")])
    assert code == 0
    row = read_csv(output).iloc[0]
    assert (row["extraction_attempts"], row["extraction_errors"], row["prior_answer"]) == ("1", "", "3")
    assert len(chat_requests(server, "a")) == 3  # two 503s retried by the client, then the answer


def test_rejected_reask_reports_the_reply_that_caused_it(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    extractor.script("a", "not json at all")
    too_long = "This model's maximum context length is 512 tokens."
    server.rule(lambda request: "could not be used" in request.text, Status(400, too_long))
    code, output = run(server, tmp_path, [study1_row("a", "ROW-a text")])
    assert code == 3
    row = read_csv(output).iloc[0]
    assert row["extraction_attempts"] == "2"
    assert row["extraction_errors"].startswith(
        f"request: HTTP 400: {too_long} (while re-asking after no_json:"
    )


def test_no_validate_parses_without_checking(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    extractor.script("a", good(prior_answer=9))
    code, output = run(server, tmp_path, [study1_row("a", "ROW-a text")], "--no-validate")
    assert code == 0
    row = read_csv(output).iloc[0]
    assert (row["prior_answer"], row["extraction_attempts"]) == ("9", "1")
    assert read_meta(tmp_path / "structured.csv")["parameters"]["validate"] is False


# ---------------------------------------------------------------------------------------------------------
# Backends: what the server supports is probed, not assumed


def test_deepseek_gets_json_object_with_schema_and_example_and_the_key_stays_secret(
    server: FakeOpenAI,
    extractor: Extractor,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    extractor.kind = "deepseek"
    server.model = "deepseek-chat"
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")  # the most talkative the worker gets: still no key
    monkeypatch.setenv("DEEPSEEK_API_KEY", SECRET)
    extractor.script("a", ("   ", "stop"), good())  # DeepSeek's blank JSON-mode reply, then a good one
    source = write_csv(tmp_path / "exp1.csv", [study1_row("a", "ROW-a text")])
    output = tmp_path / "structured.csv"
    code = cli.main([
        "extract", "--input", str(source), "--output", str(output), "--study", "chat/study1",
        "--deepseek-endpoint", server.base_url, "--metrics-port", "0", "--wait-timeout", "5",
    ])  # fmt: skip

    assert code == 0
    row = read_csv(output).iloc[0]
    assert (row["prior_answer"], row["extraction_attempts"]) == ("3", "2")
    first, reask = chat_requests(server, "a")
    assert first["model"] == "deepseek-chat"
    assert first["response_format"] == {"type": "json_object"}
    system = first["messages"][0]["content"]
    assert "json" in system.lower()
    schema = load_schema("study1")
    assert json.dumps(schema, separators=(",", ":")) in system  # the schema itself
    assert json.dumps(GOOD) in system  # the study's example
    assert "the reply was blank" in reask["messages"][-1]["content"]
    chat = server.requests_to(CHAT)
    assert all(request.headers["authorization"] == f"Bearer {SECRET}" for request in chat)
    meta_text = (tmp_path / "structured.csv.meta.json").read_text()
    meta = json.loads(meta_text)
    assert meta["server"]["pipeline_findings"]["structured_output"]["backend"] == "json_object"
    assert "refused with HTTP 400" in meta["server"]["pipeline_findings"]["structured_output"]["probes"][0]
    captured = capsys.readouterr()
    assert "structured-output probe" in captured.err  # the logs were captured
    for place in (meta_text, output.read_text(), captured.out, captured.err):
        assert SECRET not in place


def test_deepseek_without_its_key_stops_before_any_request(
    server: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    source = write_csv(tmp_path / "exp1.csv", [study1_row("a", "ROW-a text")])
    code = cli.main([
        "extract", "--input", str(source), "--output", str(tmp_path / "out.csv"), "--study", "chat/study1",
        "--deepseek-endpoint", server.base_url, "--metrics-port", "0",
    ])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "DEEPSEEK_API_KEY" in err
    assert "Traceback" not in err
    assert server.requests == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["exp1.csv"]


def test_server_that_ignores_json_schema_falls_back_to_json_object(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    extractor.kind = "ignores_schema"
    extractor.script("a", f"```json\n{good()}\n```")
    code, _ = run(server, tmp_path, [study1_row("a", "ROW-a text")])
    assert code == 0
    structured = probe_findings(tmp_path)
    assert structured["backend"] == "json_object"
    assert "accepted but ignored" in structured["probes"][0]
    (body,) = chat_requests(server, "a")
    assert body["response_format"] == {"type": "json_object"}


def test_whitespace_padding_server_is_used_with_a_warning(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extractor.kind = "pads_whitespace"
    extractor.script("a", good())
    code, _ = run(server, tmp_path, [study1_row("a", "ROW-a text")])
    assert code == 0
    assert "WARNING" in capsys.readouterr().err.split("disable_any_whitespace")[0].splitlines()[-1]
    structured = probe_findings(tmp_path)
    assert structured["backend"] == "json_schema"


def test_requested_backend_the_server_refuses_is_exit_2(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extractor.kind = "deepseek"
    code, output = run(server, tmp_path, [study1_row("a", "ROW-a text")], "--backend", "json_schema")
    assert code == 2
    assert (
        "--backend json_schema: the server does not support it (refused with HTTP 400"
        in capsys.readouterr().err
    )
    assert not output.exists()


def test_prompt_backend_sends_no_response_format(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    extractor.script("a", f"Sure: {good()}")
    code, _ = run(server, tmp_path, [study1_row("a", "ROW-a text")], "--backend", "prompt")
    assert code == 0
    (body,) = chat_requests(server, "a")
    assert "response_format" not in body
    assert "JSON Schema" in body["messages"][0]["content"]


# ---------------------------------------------------------------------------------------------------------
# Bad input: one sentence, exit 2, nothing written


@pytest.mark.parametrize(
    ("change", "extra", "phrase"),
    [
        ("drop_response", (), "missing column(s) response_speech"),
        (None, ("--schema", "MISSING"), "--schema"),
        (None, ("--schema", "NOT_STRICT"), "every property must be required"),
        (None, ("--max-retries", "-1"), "--max-retries"),
        (None, ("--max-tokens", "0"), "--max-tokens 0"),
        (None, ("--study", "NO_EXTRACTION"), "has no extraction: section"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    server: FakeOpenAI,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: str | None,
    extra: tuple[str, ...],
    phrase: str,
) -> None:
    row = study1_row("a", "ROW-a text")
    if change == "drop_response":
        del row["response_speech"]
    not_strict = tmp_path / "loose.json"
    not_strict.write_text(
        json.dumps({"type": "object", "properties": {"a": {}}, "additionalProperties": False})
    )
    no_extraction = tmp_path / "plain.yaml"
    study = study_text("study1")
    no_extraction.write_text(study.split("\nextraction:")[0], encoding="utf-8")
    substitutes = {"MISSING": str(tmp_path / "nope.json"), "NOT_STRICT": str(not_strict),
                   "NO_EXTRACTION": str(no_extraction)}  # fmt: skip
    code, output = run(server, tmp_path, [row], *(substitutes.get(arg, arg) for arg in extra))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert phrase in err
    assert err.count("\n") == 0
    assert "Traceback" not in err
    assert not output.exists()
    assert server.requests_to(CHAT) == []


def test_an_extraction_prompt_given_as_turns_is_rejected_when_read() -> None:
    # Extraction sends one request per row: a `turns` prompt has no single user message to render.
    turns = [{"name": "q", "user": "Reply: {response}", "reply_column": "response"}]
    section = {"schema": "s.json", "reply_columns": ["response"], "prompt": {"turns": turns}}
    with pytest.raises(pydantic.ValidationError, match="extraction sends one request per row"):
        ExtractionSection.model_validate(section)


def test_missing_input_after_waiting_is_exit_2(
    server: FakeOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main([
        "extract", "--input", str(tmp_path / "later.csv"), "--output", str(tmp_path / "out.csv"),
        "--study", "chat/study1", "--model-endpoint", server.base_url, "--model-name", "tiny",
        "--metrics-port", "0", "--wait-for-input", "0.2",
    ])  # fmt: skip
    assert code == 2
    assert "did not appear within --wait-for-input 0.2 s" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


def test_wait_for_input_returns_when_the_file_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    caplog.set_level(logging.INFO)
    target = tmp_path / "exp1.csv"
    clock.at(0.3, lambda: target.write_text("x\n"))
    wait_for_input(target, 10, poll_s=0.05, clock=clock, sleep=clock.sleep)
    assert 0.3 <= clock.now < 0.35  # returned at the first poll after the file arrived
    assert f"waiting for --input {target}" in caplog.text
    assert "appeared after" in caplog.text


def test_the_input_wait_logs_at_the_workers_one_wait_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    """Waiting for a server and waiting for an input file repeat their line at the same interval."""
    caplog.set_level(logging.INFO)
    interval = worker_constants.WAIT_LOG_INTERVAL_S
    with pytest.raises(InputError):
        wait_for_input(tmp_path / "never.csv", 3.5 * interval, clock=clock, sleep=clock.sleep)
    waits = [r for r in caplog.records if r.getMessage().startswith("extract: waiting for --input")]
    assert len(waits) == 4, [r.getMessage() for r in waits]  # at 0, 1, 2 and 3 intervals
    assert clock.now == 3.5 * interval  # polled until the deadline, never past it


# ---------------------------------------------------------------------------------------------------------
# Flags and the study definitions


def test_deepseek_endpoint_replaces_model_endpoint_and_fills_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    args = pytest.importorskip("argparse").Namespace(
        deepseek_endpoint="https://api.deepseek.com", model_endpoint="http://vllm:8000/v1", model_name=None,
        api_key_env=None,
    )  # fmt: skip
    resolve_arguments(args)
    assert (args.model_endpoint, args.model_name, args.api_key_env) == (
        "https://api.deepseek.com", "deepseek-chat", "DEEPSEEK_API_KEY"
    )  # fmt: skip


@pytest.mark.parametrize("study", ["study1", "study2"])
def test_study_extraction_sections_load(study: str) -> None:
    path = resolve_study_path(f"chat/{study}")
    spec = load_extraction(load_study(str(path)), path)
    replies = {turn.reply_column for turn in load_study(str(path)).prompt.conversation}
    assert set(spec.section.reply_columns) == replies
    assert spec.schema_file == (SCHEMAS_DIR / f"{study}_schema.json").resolve()
    assert spec.example is not None
    assert spec.row_columns <= {*load_study(str(path)).required_columns, *replies}


# ---------------------------------------------------------------------------------------------------------
# Resume: extract's parameters must be the same on a rerun, or the shared checkpoint refuses it


def test_rerun_resumes_from_the_checkpoint(server: FakeOpenAI, extractor: Extractor, tmp_path: Path) -> None:
    for key in ("a", "b", "c"):
        extractor.script(key, good())
    rows = [study1_row(key, f"ROW-{key} text") for key in ("a", "b", "c")]
    code, output = run(server, tmp_path, rows)
    assert code == 0
    first = output.read_text(encoding="utf-8")
    checkpoint = tmp_path / "structured.csv.partial.jsonl"
    lines = checkpoint.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 4  # header + three rows
    # As if killed after the first row: the checkpoint holds one row, the output was never written.
    checkpoint.write_text("".join(lines[:2]), encoding="utf-8")
    output.unlink()
    done_key = json.loads(lines[1])["columns"]
    assert done_key["extraction_attempts"] == 1
    before = len(server.requests_to(CHAT))

    code, output = run(server, tmp_path, rows)

    assert code == 0
    assert output.read_text(encoding="utf-8") == first
    assert len(server.requests_to(CHAT)) - before == 1 + 2  # the probe, then two rows


def test_rerun_with_another_schema_is_refused(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extractor.script("a", good())
    extractor.script("b", good())
    rows = [study1_row(key, f"ROW-{key} text") for key in ("a", "b")]
    code, output = run(server, tmp_path, rows)
    assert code == 0
    output.unlink()
    changed = tmp_path / "changed_schema.json"
    schema = load_schema("study1")
    schema["properties"]["prior_answer"]["description"] = "edited between the crash and the rerun"
    changed.write_text(json.dumps(schema), encoding="utf-8")

    code, output = run(server, tmp_path, rows, "--schema", str(changed))

    assert code == 2
    assert "was written by a different run" in capsys.readouterr().err
    assert not output.exists()


def test_no_endpoint_at_all_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_csv(tmp_path / "exp1.csv", [study1_row("a", "ROW-a text")])
    code = cli.main(
        ["extract", "--input", str(source), "--output", str(tmp_path / "o.csv"), "--study", "chat/study1"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "extract needs --model-endpoint (a vLLM server) or --deepseek-endpoint" in err
    assert not (tmp_path / "o.csv").exists()


def test_rejected_key_at_the_probe_is_exit_2_with_a_hint(
    server: FakeOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.rule(lambda request: request.path == "/v1/chat/completions", Status(401, "Authentication Fails"))
    code, output = run(server, tmp_path, [study1_row("a", "ROW-a text")])
    assert code == 2
    err = capsys.readouterr().err
    assert "refused the structured-output probe with HTTP 401: Authentication Fails" in err
    assert "check the key in --api-key-env" in err
    assert not output.exists()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("  reply_columns: [response_story, response_speech, response_knowledge]\n",
         "  reply_columns: [response_story, response_speech, response_knowledge]\n  colour: red\n",
         "extraction.colour: Extra inputs are not permitted."),
        ('knowledge_answer: "no"', "knowledge_answer: maybe",
         'extraction.example does not match {schema}: knowledge_answer: "maybe" is not allowed'),
        ("{response_speech}", "{responsespeech}",
         "extraction: the prompt never shows {{response_speech}}, a reply to extract from."),
        ("tolerance: 1", "tolerance: -1",
         "extraction.checks.0.tolerance: Input should be greater than or equal"),
        ("fields: [probability_0,", "fields: [probability_9,",
         "extraction.checks.0.fields: probability_9 is not a property of {schema}."),
        ("schema: ../../schemas/chat/study1_schema.json", "schema: nothere.json",
         "extraction.schema {folder}/nothere.json: cannot be read"),
    ],
)  # fmt: skip
def test_bad_extraction_section_names_the_key(tmp_path: Path, old: str, new: str, message: str) -> None:
    schema = (SCHEMAS_DIR / "study1_schema.json").resolve()
    text = study_text("study1")
    text = (
        text.replace("schema: ../../schemas/chat/study1_schema.json", f"schema: {schema}")
        if "nothere" not in new
        else text
    )
    assert old in text
    path = tmp_path / "study.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(InputError) as raised:
        load_extraction(load_study(str(path)), path)
    assert str(raised.value).startswith(f"study file {path}: ")
    assert message.format(schema=schema, folder=tmp_path) in str(raised.value)


def test_reasoning_model_probe_is_inconclusive_not_ignored(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    extractor.kind = "reasoning"
    extractor.script("a", good())
    extractor.script("b", ("", "length"))
    code, output = run(
        server, tmp_path, [study1_row(key, f"ROW-{key} text") for key in "ab"], "--max-retries", "0"
    )
    assert code == 3
    a, b = read_csv(output).to_dict("records")
    assert (a["prior_answer"], a["extraction_errors"]) == ("3", "")
    assert b["extraction_errors"] == (
        "blank: the reply was blank (finish_reason=length); the model spent its tokens on reasoning "
        "(raise --max-tokens) (after 1 attempt)"
    )
    structured = probe_findings(tmp_path)
    assert structured["backend"] == "json_schema"
    assert "not verified: the model spent the probe's tokens reasoning" in structured["probes"][0]


def test_whitespace_only_reasoning_is_reasoning_not_an_incomplete_reply(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    # The one reply parser (worker.server.chat_completions) keeps reasoning verbatim: a model that wrote
    # only a newline of reasoning and no content gave a complete, blank reply (row-specific, one request),
    # not a body missing its promised field (resent, then a transport failure).
    extractor.kind = "reasoning"
    extractor.row_reasoning = "\n\n"
    extractor.script("a", ("", "length"))
    code, output = run(server, tmp_path, [study1_row("a", "ROW-a text")], "--max-retries", "0")
    assert code == 3
    (row,) = read_csv(output).to_dict("records")
    assert row["extraction_errors"] == (
        "blank: the reply was blank (finish_reason=length); the model spent its tokens on reasoning "
        "(raise --max-tokens) (after 1 attempt)"
    )
    assert len(chat_requests(server, "a")) == 1
    checkpoint = (tmp_path / "structured.csv.partial.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(checkpoint[-1])["failure"] == "row"


# ---------------------------------------------------------------------------------------------------------
# The deterministic parser codes replies in the study's own format; the extractor model codes the rest


EXACT_REPLIES = {
    "response_story": "3",
    "response_speech": "0: 0%\n1: 5%\n2: 25%\n3: 70%",
    "response_knowledge": "No.",
}


def parser_of_study1() -> Any:
    path = resolve_study_path("chat/study1")
    return load_extraction(load_study(str(path)), path).parser


def test_replies_in_the_asked_format_are_coded_by_the_parser_without_a_request(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    extractor.script("prose", good(prior_answer=2))
    # The parser's row has no ROW- marker in its replies: a request for it would be answered with a 400.
    rows = [
        {**study1_row("exact", ""), **EXACT_REPLIES, "finish_reason": "stop"},
        study1_row("prose", "ROW-prose I think 2 of them, and no, Kim cannot know for sure."),
    ]
    code, output = run(server, tmp_path, rows)
    assert code == 0
    by_story = read_csv(output).set_index("story_shortname")
    exact, prose = by_story.loc["story-exact"], by_story.loc["story-prose"]
    assert (exact["extraction_method"], exact["extraction_attempts"]) == ("parser", "0")
    assert {name: exact[name] for name in FIELDS1} == {name: str(value) for name, value in GOOD.items()}
    assert (prose["extraction_method"], prose["prior_answer"]) == ("tiny", "2")
    assert len(chat_requests(server, "prose")) == 1
    asked = [r.json() for r in server.requests_to(CHAT)]
    assert not any(EXACT_REPLIES["response_speech"] in str(body["messages"]) for body in asked)


@pytest.mark.parametrize(
    ("column", "reply"),
    [
        ("response_knowledge", "No, because she did not open one box."),
        ("response_speech", "0: 0%\n1: about 5%\n2: 25%\n3: 70%"),
        ("response_story", "I would say 3."),
        ("response_story", "4"),  # outside the schema: the model decides what the reply states
    ],
)
def test_a_reply_off_the_format_leaves_the_whole_row_to_the_model(column: str, reply: str) -> None:
    parser = parser_of_study1()
    assert parser.code(EXACT_REPLIES) == GOOD
    assert parser.code({**EXACT_REPLIES, column: reply}) is None


KNOWLEDGE_RULE = """    - column: response_knowledge
      pattern: "(?P<knowledge_answer>yes|no)"
"""


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("", "the parser rules never code knowledge_answer"),
        (KNOWLEDGE_RULE.replace("knowledge_answer", "answer"), "rule for response_knowledge: answer is not"),
    ],
)
def test_parser_rules_must_code_every_schema_field_and_nothing_else(
    tmp_path: Path, rule: str, message: str
) -> None:
    text = study_text("study1")
    assert KNOWLEDGE_RULE in text
    (tmp_path / "studies" / "chat").mkdir(parents=True)
    path = tmp_path / "studies" / "chat" / "study1.yaml"
    path.write_text(text.replace(KNOWLEDGE_RULE, rule), encoding="utf-8")
    (tmp_path / "schemas" / "chat").mkdir(parents=True)
    (tmp_path / "schemas" / "chat" / "study1_schema.json").write_text(
        (SCHEMAS_DIR / "study1_schema.json").read_text(encoding="utf-8"), encoding="utf-8"
    )
    with pytest.raises(InputError, match=rf"extraction.parser: {message}"):
        load_extraction(load_study(str(path)), path)


def test_every_extraction_request_carries_its_samples_seed(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    extractor.script("a", good())
    extractor.script("b", good())
    code, output = run(server, tmp_path, [study1_row(key, f"ROW-{key} text") for key in ("a", "b")])
    assert code == 0
    seeds = {int(seed) for seed in read_csv(output)["seed"]}
    sent = {body["seed"] for key in ("a", "b") for body in chat_requests(server, key)}
    assert sent == seeds
    assert len(seeds) == 2


def test_a_model_coding_its_own_replies_is_flagged_and_no_other_row_is(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    # The coder here is "tiny" (--model-name). Row a's replies were written by tiny, row b's by another
    # model; row c's reply is in the asked format, so the parser codes it and no model does.
    extractor.script("a", good())
    extractor.script("b", good())
    own, other = (
        study1_row("a", "ROW-a prose"),
        {**study1_row("b", "ROW-b prose"), "model_name": "gemma-2-2b"},
    )
    parsed = {
        **study1_row("c", "ROW-c"),
        "response_story": "2",
        "response_speech": "0: 0%\n1: 0%\n2: 100%\n3: 0%",
        "response_knowledge": "yes",
    }
    code, output = run(server, tmp_path, [own, other, parsed])
    assert code == 0
    frame = read_csv(output).set_index("story_shortname")
    assert frame["extraction_method"].to_dict() == {"story-a": "tiny", "story-b": "tiny", "story-c": "parser"}
    assert frame["extraction_self_coded"].astype(str).to_dict() == {
        "story-a": "True", "story-b": "False", "story-c": "False",
    }  # fmt: skip
