"""`worker query` with a completion-form study (the researchers' design, jobs/studies/researchers/) against
the fake server: raw prompts to /v1/completions, one request at a time per row, the replication seed rule,
`--stop`, stripped replies, failures. The comparison with the researchers' own requests for every real row
is tests/unit/worker/test_researchers_exp1.py."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.support.fake_openai import FakeOpenAI, Ok, Request, Status, text_completion_body
from tests.unit.worker.support import (
    CHAT,
    CHAT_STUDIES,
    COMPLETIONS,
    RESEARCHERS_STUDIES,
    STUDY1_CSV,
    STUDY2_CSV,
    read_csv,
    read_meta,
    worker_args,
)
from worker import contract
from worker.cli import main

STUDY1 = RESEARCHERS_STUDIES / "study1.yaml"
STUDY2 = RESEARCHERS_STUDIES / "study2.yaml"
QUANTITY_CUE = "Answer directly with just a number (0, 1, 2, or 3)."
KNOWLEDGE_CUE = 'Answer directly with just "yes" or "no".'


def reply_to(request: Request) -> Ok:
    """A reply with white space around it that names the request: "<kind> <seed>"."""
    body = request.json()
    kind = "quantity" if QUANTITY_CUE in body["prompt"] else "other"
    return Ok(text_completion_body(request, f"\n  {kind} {body['seed']} \n"))


@pytest.fixture
def server_setup() -> object:
    return lambda fake: fake.handlers.__setitem__(COMPLETIONS, reply_to)


def argv(
    server: FakeOpenAI, output: Path, *extra: str, study: Path = STUDY1, source: Path = STUDY1_CSV
) -> list[str]:
    return worker_args(
        "query", server.base_url, output, *extra,
        input=source, study=study, timeout=1, max_retries=1, backoff_base=0.01, wait_timeout=2,
    )  # fmt: skip


def completions(server: FakeOpenAI) -> list[dict[str, object]]:
    return [request.json() for request in server.requests_to(COMPLETIONS)]


def test_each_request_goes_alone_in_order_and_every_row_of_a_sample_shares_its_seed(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--samples", "2", "--seed", "5", "--batch-size", "1")) == 0
    result, rows = read_csv(output), len(read_csv(STUDY1_CSV))
    bodies = completions(server)
    assert len(bodies) == rows * 2 * 2  # rows x samples x (quantity, knowledge)
    assert not server.requests_to(CHAT)  # no chat template at all
    assert not server.requests_to("/tokenize")
    # One request at a time: each row's quantity prompt, then its knowledge prompt, never one conversation.
    kinds = ["quantity" if QUANTITY_CUE in str(b["prompt"]) else "knowledge" for b in bodies]
    assert kinds == ["quantity", "knowledge"] * (rows * 2)
    knowledge = [str(b["prompt"]) for b, kind in zip(bodies, kinds, strict=True) if kind == "knowledge"]
    assert all(KNOWLEDGE_CUE in prompt for prompt in knowledge)
    # The replication rule: base seed + sample + the study's offset (0), whatever the row or the request.
    assert Counter(b["seed"] for b in bodies) == {5: rows * 2, 6: rows * 2}
    assert list(result["seed"]) == [str(5 + int(sample)) for sample in result["sample"]]
    assert list(result["response_quantity"]) == [f"quantity {seed}" for seed in result["seed"]]  # stripped
    assert list(result["response_knowledge"]) == [f"other {seed}" for seed in result["seed"]]
    assert (result["attempts"] == "2").all()
    assert (result["finish_reasons"] == '["stop", "stop"]').all()
    assert all(len(json.loads(prompts)) == 2 for prompts in result["prompts"])


def test_without_stop_no_stop_key_is_sent_and_the_meta_says_so(server: FakeOpenAI, tmp_path: Path) -> None:
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--samples", "1", study=STUDY2, source=STUDY2_CSV)) == 0
    assert {tuple(body) for body in completions(server)} == {
        ("model", "prompt", "max_tokens", "temperature", "seed")
    }
    sent = {(b["temperature"], b["max_tokens"], b["seed"]) for b in completions(server)}
    assert sent == {(0.3, 50, 42 + 1000)}
    parameters = read_meta(output)["parameters"]
    assert parameters["form"] == "completion"
    assert parameters["endpoint"] == COMPLETIONS
    assert parameters["body_keys"] == ["model", "prompt", "max_tokens", "temperature", "seed"]
    assert parameters["generation"] == {"temperature": 0.3, "max_tokens": 50, "stop": None}
    assert parameters["seed_rule"] == (
        "base_seed + sample + 1000, the same for every row and request of a sample"
    )
    assert "pipeline_findings" not in read_meta(output)["server"]  # no chat template was asked about


def test_stop_strings_from_the_flag_go_with_every_request(server: FakeOpenAI, tmp_path: Path) -> None:
    stop = ["<|eot_id|>", "<|end_of_text|>"]
    assert main(argv(server, tmp_path / "out.csv", "--samples", "1", "--stop", json.dumps(stop))) == 0
    assert all(body["stop"] == stop for body in completions(server))
    assert list(completions(server)[0]) == ["model", "prompt", "max_tokens", "temperature", "stop", "seed"]


@pytest.mark.parametrize("value", ["[]", "<end_of_turn>", '"<end_of_turn>"', "[1]", '[""]'])
def test_a_stop_flag_that_is_not_a_list_of_strings_is_refused(
    server: FakeOpenAI, tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv(server, tmp_path / "out.csv", "--stop", value)) == contract.EXIT_INPUT
    assert "--stop" in capsys.readouterr().err
    assert not completions(server)


def test_a_reasoning_effort_has_nothing_to_go_into_a_raw_prompt(
    server: FakeOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv(server, tmp_path / "out.csv", "--reasoning-effort", "low")) == contract.EXIT_INPUT
    assert "sends raw completion prompts" in capsys.readouterr().err


def test_a_refused_request_fails_its_row_and_keeps_the_reply_before_it(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    server.rule(lambda r: "Ben" in r.text and KNOWLEDGE_CUE.replace('"', '\\"') in r.text, Status(400, "no"))
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--samples", "1")) == contract.EXIT_ROWS_FAILED
    result = read_csv(output)
    failed = result[result["error"] != ""]
    assert list(failed["story_shortname"]) == ["boxes", "boxes"]
    assert all(error.startswith("request knowledge: HTTP 400") for error in failed["error"])
    assert (failed["response_quantity"] == "quantity 42").all()
    assert (failed["response_knowledge"] == "").all()
    assert all(len(json.loads(prompts)) == 2 for prompts in failed["prompts"])  # both were sent


def test_without_strip_replies_a_reply_is_kept_as_sent(server: FakeOpenAI, tmp_path: Path) -> None:
    study = tmp_path / "study2.yaml"
    study.write_text(STUDY2.read_text().replace("strip_replies: true", "strip_replies: false"))
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--samples", "1", study=study, source=STUDY2_CSV)) == 0
    assert (read_csv(output)["response"] == "\n  other 1042 \n").all()


def test_the_replication_rule_works_for_a_chat_study_too(server: FakeOpenAI, tmp_path: Path) -> None:
    study = tmp_path / "study2.yaml"
    text = (CHAT_STUDIES / "study2.yaml").read_text()
    rule = "  base_seed: 42\n  seed_rule: replication\n  seed_offset: 7\n"
    study.write_text(text.replace("  base_seed: 42\n", rule))
    output = tmp_path / "out.csv"
    assert main(argv(server, output, "--samples", "2", study=study, source=STUDY2_CSV)) == 0
    assert Counter(request.json()["seed"] for request in server.requests_to(CHAT)) == {49: 8, 50: 8}
    assert read_meta(output)["parameters"]["sampling"]["seed_rule"] == "replication"
