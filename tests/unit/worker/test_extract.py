"""`python -m worker extract` end to end against the local fake server, in-process.

The fake server's chat handler below plays an extractor: per row (found by a ROW-<key> marker in the
Experiment 1 response) it returns scripted replies in order (valid JSON, JSON in prose or a code fence,
invalid JSON, schema violations, blank content, replies cut off at the token limit), and it answers the
structured-output probe the way each kind of server does: vLLM enforces json_schema; DeepSeek refuses it
with 400 and takes json_object only when the prompt says "json"; an old or foreign server accepts
json_schema and ignores it.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pydantic
import pytest

from tests.support.contracts import SAMPLE_COLUMNS
from tests.support.fake_openai import FakeOpenAI, Ok, Request, Status, chat_completion_body
from worker import cli
from worker import constants as worker_constants
from worker.errors import InputError
from worker.pipelines.extraction.backend import PROBE_EXPECTED, PROBE_VALUE
from worker.pipelines.extraction.extraction_pipeline import resolve_arguments
from worker.run.input_wait import wait_for_input
from worker.studies.definition import load_study, resolve_study_path
from worker.studies.extraction_section import ExtractionSection, load_extraction

REPO = Path(__file__).resolve().parents[3]
STUDY1_COLUMNS = [
    "participant_id", "story_shortname", "story_setup", "priorQ", "speach", "speachQ", "knowledgeQ", "access",
    "observe",
]  # fmt: skip
EXP1_COLUMNS = [
    "model_name", "model_response", "response_story", "response_speech", "response_knowledge",
    "finish_reason", "prompt_tokens", "completion_tokens",
    "response_timestamp", "processing_time_ms", "attempts", "error",
]  # fmt: skip
FIELDS1 = [
    "prior_answer",
    "probability_0",
    "probability_1",
    "probability_2",
    "probability_3",
    "knowledge_answer",
]
ADDED = ["extraction_method", "extraction_errors", "extraction_attempts", "extraction_warnings"]
ROW_MARK = re.compile(r"ROW-(\w+)")
SECRET = "sk-test-do-not-leak-4242"

GOOD = {"prior_answer": 3, "probability_0": 0, "probability_1": 5, "probability_2": 25, "probability_3": 70,
        "knowledge_answer": "no"}  # fmt: skip


def good(**overrides: Any) -> str:
    return json.dumps({**GOOD, **overrides})


class Extractor:
    """The fake server's /v1/chat/completions: probe answers by server kind, scripted replies per row."""

    def __init__(self, kind: str = "vllm") -> None:
        self.kind = kind  # "vllm" | "deepseek" | "ignores_schema" | "pads_whitespace" | "reasoning"
        self.row_reasoning = "Let me think step by step"  # kind "reasoning": with an empty row reply
        self.replies: dict[str, list[tuple[str, str]]] = {}
        self.lock = threading.Lock()

    def script(self, key: str, *replies: str | tuple[str, str]) -> None:
        """Replies for row ROW-<key>, in order; the last one repeats."""
        self.replies[key] = [reply if isinstance(reply, tuple) else (reply, "stop") for reply in replies]

    def __call__(self, request: Request) -> Ok | Status:
        payload = request.json()
        response_format = payload.get("response_format") or {}
        kind = response_format.get("type")
        if self.kind == "deepseek" and kind == "json_schema":
            return Status(400, "This response_format type is unavailable now")
        says_json = any("json" in str(m.get("content", "")).lower() for m in payload["messages"])
        if self.kind == "deepseek" and kind == "json_object" and not says_json:
            return Status(400, "Prompt must contain the word 'json' in some form")
        if kind == "json_schema" and "probe" in response_format["json_schema"]["schema"]["properties"]:
            return self._probe(request)
        if PROBE_VALUE in request.text:  # the json_object probe asks for the probe object in words
            return self._reply(request, PROBE_EXPECTED, "stop")
        first_user = next(m["content"] for m in payload["messages"] if m["role"] == "user")
        match = ROW_MARK.search(first_user)
        if match is None:
            return Status(400, "test server: no ROW- marker in the prompt")
        with self.lock:
            queue = self.replies[match.group(1)]
            content, finish_reason = queue.pop(0) if len(queue) > 1 else queue[0]
        reply = self._reply(request, content, finish_reason)
        if self.kind == "reasoning" and not content:
            reply.body["choices"][0]["message"].update(content=None, reasoning=self.row_reasoning)
        return reply

    def _probe(self, request: Request) -> Ok:
        if self.kind == "vllm":
            return self._reply(request, PROBE_EXPECTED, "stop")
        if self.kind == "pads_whitespace":  # vLLM without disable_any_whitespace
            return self._reply(request, '{"probe":' + "\t" * 40, "length")
        if self.kind == "reasoning":  # gpt-oss: the probe's budget goes to reasoning, content stays null
            reply = self._reply(request, "", "length")
            reply.body["choices"][0]["message"].update(content=None, reasoning="The user wants JSON. Let me")
            return reply
        return self._reply(request, "Sure! Here is some JSON for you.", "stop")  # accepted, not enforced

    @staticmethod
    def _reply(request: Request, content: str, finish_reason: str) -> Ok:
        body = chat_completion_body(request, content)
        body["choices"][0]["finish_reason"] = finish_reason
        return Ok(body)


@pytest.fixture
def extractor() -> Extractor:
    return Extractor()


@pytest.fixture
def server(extractor: Extractor) -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    fake.handlers["/v1/chat/completions"] = extractor
    with fake:
        yield fake


def study1_row(key: str, response: str, *, error: str = "") -> dict[str, str]:
    return {
        "participant_id": "5",
        "story_shortname": f"story-{key}",
        "story_setup": 'Boxes from this shop almost always hold a toy.<br> Kim bought 3 boxes, "sealed".',
        "priorQ": "How many of the 3 boxes do you think hold a toy?",
        "speach": "Kim tells you on the phone: 'I have opened 2 of the 3 boxes. 2 of them hold a toy.'",
        "speachQ": "Now how many of the 3 boxes do you think hold a toy?",
        "knowledgeQ": "Do you think Kim knows exactly how many of the 3 boxes hold a toy?",
        "access": "2",
        "observe": "2",
        "model_name": "tiny",
        "model_response": response,
        # Study 1's Experiment 1 asks three questions in one conversation; the extraction shows all three.
        "response_story": response,
        "response_speech": response,
        "response_knowledge": response,
        "finish_reason": "stop" if response else "",
        "prompt_tokens": "120",
        "completion_tokens": "30",
        "response_timestamp": "2026-11-28T18:00:00.000+00:00",
        "processing_time_ms": "85",
        "attempts": "1",
        "error": error,
    }


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def run(server: FakeOpenAI, tmp_path: Path, rows: list[dict[str, str]], *extra: str) -> tuple[int, Path]:
    source = write_csv(tmp_path / "exp1.csv", rows)
    output = tmp_path / "structured.csv"
    argv = [
        "extract", "--input", str(source), "--output", str(output), "--study", "study1",
        "--model-endpoint", server.base_url, "--model-name", "tiny", "--metrics-port", "0",
        "--backoff-base", "0.01", "--wait-timeout", "5", *extra,
    ]  # fmt: skip
    return cli.main(argv), output


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def probe_findings(folder: Path) -> dict[str, Any]:
    """What the run's meta file records about the structured-output probe."""
    meta = json.loads((folder / "structured.csv.meta.json").read_text(encoding="utf-8"))
    return meta["server"]["pipeline_findings"]["structured_output"]


def chat_requests(server: FakeOpenAI, key: str) -> list[dict[str, Any]]:
    bodies = [request.json() for request in server.requests_to("/v1/chat/completions")]
    return [body for body in bodies if any(f"ROW-{key}" in str(m["content"]) for m in body["messages"])]


# ---------------------------------------------------------------------------------------------------------
# Every row state, against a vLLM-like server


def test_every_row_ends_valid_or_with_its_error(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    extractor.script("valid", good())
    extractor.script("fenced", f"Here is the data:\n```json\n{good(prior_answer=2)}\n```\nDone.")
    extractor.script("prose", f"The participant said: {good(knowledge_answer='yes')} (from the reply)")
    extractor.script("invalid", "{'prior_answer': 3,", good())
    extractor.script("schema", good(prior_answer=7, knowledge_answer="maybe"), good())
    extractor.script("blank", "   ", good())
    extractor.script("cut", ('{"prior_answer": 3, "probability_0"', "length"))
    extractor.script("sum", good(probability_3=60))
    extractor.script("nulls", json.dumps(dict.fromkeys(FIELDS1)))
    extractor.script("exp1cut", good(knowledge_answer=None))
    rows = [
        study1_row(key, f"ROW-{key} Initial answer: 3. 0: 0% 1: 5% 2: 25% 3: 70%. Knows exactly: no")
        for key in ("valid", "fenced", "prose", "invalid", "schema", "blank", "cut", "sum", "nulls")
    ]
    rows.append({**study1_row("exp1cut", "ROW-exp1cut Initial answer: 3. 0: 0% 1: 5% 2: 25% 3: 70%. Kn"),
                 "finish_reason": "length"})  # fmt: skip
    rows.append(study1_row("failed", "", error="gave up after 6 attempts: HTTP 503: overloaded"))

    code, output = run(server, tmp_path, rows, "--max-retries", "2")

    assert code == 3  # complete output, some rows failed
    frame = read(output)
    source = read(tmp_path / "exp1.csv")
    assert list(frame.columns) == [*STUDY1_COLUMNS, *EXP1_COLUMNS, *SAMPLE_COLUMNS, *FIELDS1, *ADDED]
    pd.testing.assert_frame_equal(frame[list(source.columns)], source)  # every exp1 value, in row order
    by_story = frame.set_index("story_shortname")

    def state(key: str) -> dict[str, str]:
        return by_story.loc[f"story-{key}"].to_dict()

    valid = state("valid")
    assert {name: valid[name] for name in FIELDS1} == {name: str(value) for name, value in GOOD.items()}
    assert (valid["extraction_errors"], valid["extraction_attempts"], valid["extraction_warnings"]) == (
        "",
        "1",
        "",
    )
    assert (state("fenced")["prior_answer"], state("fenced")["extraction_attempts"]) == ("2", "1")
    assert (state("prose")["knowledge_answer"], state("prose")["extraction_attempts"]) == ("yes", "1")
    for key in ("invalid", "schema", "blank"):
        row = state(key)
        assert (row["prior_answer"], row["extraction_attempts"], row["extraction_errors"]) == (
            "3",
            "2",
            "",
        ), key
    cut = state("cut")
    assert cut["extraction_attempts"] == "3"  # first ask + --max-retries 2 re-asks
    assert cut["extraction_errors"].startswith("truncated: the reply was cut off at the token limit")
    assert cut["extraction_errors"].endswith("(after 3 attempts)")
    assert all(cut[name] == "" for name in FIELDS1)  # a failed row invents nothing
    assert state("sum")["extraction_warnings"] == (
        "probability_0+probability_1+probability_2+probability_3 = 90, expected 100 +/- 1"
    )
    assert state("sum")["probability_3"] == "60"  # reported, not "fixed"
    nulls = state("nulls")
    assert all(nulls[name] == "" for name in FIELDS1)
    assert (nulls["extraction_errors"], nulls["extraction_attempts"]) == ("", "1")
    exp1cut = state("exp1cut")
    assert (exp1cut["knowledge_answer"], exp1cut["extraction_errors"]) == ("", "")
    assert exp1cut["extraction_warnings"] == (
        "the Experiment 1 reply was cut off at its token limit (finish_reason=length): "
        "values it did not reach are null"
    )
    failed = state("failed")
    assert failed["extraction_errors"] == (
        "no_response: nothing to extract (Experiment 1 failed on this row: "
        "gave up after 6 attempts: HTTP 503: overloaded)"
    )
    assert failed["extraction_attempts"] == "0"
    assert chat_requests(server, "failed") == []

    meta = json.loads((tmp_path / "structured.csv.meta.json").read_text())
    assert meta["rows"] == {
        "ok": 9,
        "failed": 2,
        "failed_row_specific": 2,
        "failed_transport": 0,
        "not_done": 0,
        "from_checkpoint": 0,
    }
    assert meta["server"]["pipeline_findings"]["structured_output"]["backend"] == "json_schema"
    assert "enforced" in meta["server"]["pipeline_findings"]["structured_output"]["probes"][0]


def test_reask_carries_the_validation_error_and_the_failed_reply(
    server: FakeOpenAI, extractor: Extractor, tmp_path: Path
) -> None:
    bad = good(prior_answer=7)
    extractor.script("schema", bad, good())
    extractor.script("blank", " ", good())
    rows = [study1_row(key, f"ROW-{key} some answer") for key in ("schema", "blank")]

    code, _ = run(server, tmp_path, rows)

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
    _, blank_reask = chat_requests(server, "blank")
    # No empty assistant turn, and no two user turns in a row (Gemma-2's template refuses them): the
    # correction joins the question's user turn.
    assert [m["role"] for m in blank_reask["messages"]] == ["system", "user"]
    question, correction = blank_reask["messages"][1]["content"].split("\n\nThat reply could not be used")
    assert question == first["messages"][1]["content"].replace("ROW-schema", "ROW-blank")
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
    row = read(output).iloc[0]
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
    row = read(output).iloc[0]
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
    row = read(output).iloc[0]
    assert (row["prior_answer"], row["extraction_attempts"]) == ("9", "1")
    assert json.loads((tmp_path / "structured.csv.meta.json").read_text())["parameters"]["validate"] is False


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
        "extract", "--input", str(source), "--output", str(output), "--study", "study1",
        "--deepseek-endpoint", server.base_url, "--metrics-port", "0", "--wait-timeout", "5",
    ])  # fmt: skip

    assert code == 0
    row = read(output).iloc[0]
    assert (row["prior_answer"], row["extraction_attempts"]) == ("3", "2")
    first, reask = chat_requests(server, "a")
    assert first["model"] == "deepseek-chat"
    assert first["response_format"] == {"type": "json_object"}
    system = first["messages"][0]["content"]
    assert "json" in system.lower()
    schema = json.loads((REPO / "jobs" / "schemas" / "study1_schema.json").read_text(encoding="utf-8"))
    assert json.dumps(schema, separators=(",", ":")) in system  # the schema itself
    assert json.dumps(GOOD) in system  # the study's example
    assert "the reply was blank" in reask["messages"][-1]["content"]
    chat = server.requests_to("/v1/chat/completions")
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
        "extract", "--input", str(source), "--output", str(tmp_path / "out.csv"), "--study", "study1",
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
    study = (REPO / "jobs" / "studies" / "study1.yaml").read_text(encoding="utf-8")
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
    assert server.requests_to("/v1/chat/completions") == []


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
        "--study", "study1", "--model-endpoint", server.base_url, "--model-name", "tiny",
        "--metrics-port", "0", "--wait-for-input", "0.2",
    ])  # fmt: skip
    assert code == 2
    assert "did not appear within --wait-for-input 0.2 s" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


def test_wait_for_input_returns_when_the_file_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    target = tmp_path / "exp1.csv"
    timer = threading.Timer(0.3, lambda: target.write_text("x\n"))
    timer.start()
    try:
        wait_for_input(target, 10, poll_s=0.05)
    finally:
        timer.cancel()
    assert target.exists()
    assert f"waiting for --input {target}" in caplog.text
    assert "appeared after" in caplog.text


def test_the_input_wait_logs_at_the_workers_one_wait_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting for a server and waiting for an input file repeat their line at the same interval."""
    monkeypatch.setattr(worker_constants, "WAIT_LOG_INTERVAL_S", 0.1)
    caplog.set_level(logging.INFO)
    with pytest.raises(InputError):
        wait_for_input(tmp_path / "never.csv", 0.55, poll_s=0.02)
    waits = [r for r in caplog.records if r.getMessage().startswith("extract: waiting for --input")]
    assert 3 <= len(waits) <= 7, [r.getMessage() for r in waits]  # at 0, 0.1, ..., 0.5 s; one line at 30 s


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
    path = resolve_study_path(study)
    spec = load_extraction(load_study(str(path)), path)
    replies = {turn.reply_column for turn in load_study(str(path)).prompt.conversation}
    assert set(spec.section.reply_columns) == replies
    assert spec.schema_file == (REPO / "jobs" / "schemas" / f"{study}_schema.json").resolve()
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
    before = len(server.requests_to("/v1/chat/completions"))

    code, output = run(server, tmp_path, rows)

    assert code == 0
    assert output.read_text(encoding="utf-8") == first
    assert len(server.requests_to("/v1/chat/completions")) - before == 1 + 2  # the probe, then two rows


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
    schema = json.loads((REPO / "jobs" / "schemas" / "study1_schema.json").read_text(encoding="utf-8"))
    schema["properties"]["prior_answer"]["description"] = "edited between the crash and the rerun"
    changed.write_text(json.dumps(schema), encoding="utf-8")

    code, output = run(server, tmp_path, rows, "--schema", str(changed))

    assert code == 2
    assert "was written by a different run" in capsys.readouterr().err
    assert not output.exists()


def test_no_endpoint_at_all_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_csv(tmp_path / "exp1.csv", [study1_row("a", "ROW-a text")])
    code = cli.main(
        ["extract", "--input", str(source), "--output", str(tmp_path / "o.csv"), "--study", "study1"]
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
        ("schema: ../schemas/study1_schema.json", "schema: nothere.json",
         "extraction.schema {folder}/nothere.json: cannot be read"),
    ],
)  # fmt: skip
def test_bad_extraction_section_names_the_key(tmp_path: Path, old: str, new: str, message: str) -> None:
    schema = (REPO / "jobs" / "schemas" / "study1_schema.json").resolve()
    text = (REPO / "jobs" / "studies" / "study1.yaml").read_text(encoding="utf-8")
    text = (
        text.replace("schema: ../schemas/study1_schema.json", f"schema: {schema}")
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
    a, b = read(output).to_dict("records")
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
    (row,) = read(output).to_dict("records")
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
    path = resolve_study_path("study1")
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
    by_story = read(output).set_index("story_shortname")
    exact, prose = by_story.loc["story-exact"], by_story.loc["story-prose"]
    assert (exact["extraction_method"], exact["extraction_attempts"]) == ("parser", "0")
    assert {name: exact[name] for name in FIELDS1} == {name: str(value) for name, value in GOOD.items()}
    assert (prose["extraction_method"], prose["prior_answer"]) == ("tiny", "2")
    assert len(chat_requests(server, "prose")) == 1
    asked = [r.json() for r in server.requests_to("/v1/chat/completions")]
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
    text = (REPO / "jobs" / "studies" / "study1.yaml").read_text(encoding="utf-8")
    assert KNOWLEDGE_RULE in text
    (tmp_path / "studies").mkdir()
    path = tmp_path / "studies" / "study1.yaml"
    path.write_text(text.replace(KNOWLEDGE_RULE, rule), encoding="utf-8")
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "study1_schema.json").write_text(
        (REPO / "jobs" / "schemas" / "study1_schema.json").read_text(encoding="utf-8"), encoding="utf-8"
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
    seeds = {int(seed) for seed in read(output)["seed"]}
    sent = {body["seed"] for key in ("a", "b") for body in chat_requests(server, key)}
    assert sent == seeds
    assert len(seeds) == 2
