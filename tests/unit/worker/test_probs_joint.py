"""`probability.scoring: joint-completion`: the researchers' own scoring rule (their ModelScorer), in
worker.pipelines.probs.joint_completion.

The pipeline runs through the real CLI and client against `FakeOpenAI` serving `ToyLM`, and every number is
compared with the rule computed here from the toy model's own probabilities (`toy.next_logprobs`), with
the toy's tokenizer called directly: no worker code in the expected values. The toy's word-level
tokenizer merges a prompt ending in a partial word with the option that completes it ("... an" + "swer
yes" is " answer", " yes"), which is how the rule's boundary cases are reached.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_openai import FakeOpenAI, Status
from tests.support.toy_lm import ToyLM
from tests.unit.worker.support import (
    COMPLETIONS,
    RECORDED,
    TOKENIZE,
    read_csv,
    read_meta,
    worker_args,
    write_csv,
)
from worker import cli, contract
from worker.errors import InputError, ResponseError
from worker.pipelines.probs import probs_config, probs_pipeline
from worker.server import logprobs as lp
from worker.server.completions import read_completion
from worker.studies import probability_section as spec
from worker.studies.definition import REPO_STUDIES_DIR, load_study

RESEARCHERS = REPO_STUDIES_DIR / "researchers"
BOS = 0  # the toy tokenizer's <s>, added when /tokenize is asked with its default special tokens

# A study in the researchers' form whose prompts reach every case of the rule with the toy tokenizer:
# the state questions end in "is:" (each option adds its own tokens); the knowledge question ends in
# the partial word "an", so "swer yes" merges into " answer" (scored: " yes" only) and "d" into " and"
# (no token beyond the prompt: -100.0), while " nothing" adds its own token.
STUDY = """
name: joint_toy
required_columns: [story, speaker, cue]
text_replacements: {"<br>": "\\n"}
strip_values: true
lookups:
  thing: {column: story, values: {boxes: a toy inside}, default: the thing}
prompt:
  user: "{speaker}"
probability:
  scoring: joint-completion
  questions:
    - name: "state{k}"
      expand: {k: [0, 1]}
      user: |-
        Exactly {k} of the 3 {story} have {thing}?
        {speaker}
        {cue}
      options:
        - {text: "0%", label: "0", value: 0}
        - {text: "10%", label: "10", value: 10}
        - {text: "100%", label: "100", value: 100}
      columns: {prob: "state{k}_prob_{label}", mean: "state{k}_mean", std: "state{k}_std",
                entropy: "state{k}_entropy"}
    - name: knowledge
      user: "{speaker} Does she know? Your an"
      options:
        - {text: "swer yes", label: "yes"}
        - {text: "swer no", label: "no"}
        - {text: " nothing", label: "nothing"}
        - {text: "d", label: "and"}
      columns: {prob: "prob_knowledge_{label}", entropy: "entropy_knowledge"}
"""
ROWS = [
    {"story": "Boxes", "speaker": "Kim says:<br> 'I opened 2 boxes.'", "cue": "Your answer is:"},
    {"story": "cups", "speaker": "  Lee says: 'I opened 1 cup.' ", "cue": "Your answer is:"},
]


@pytest.fixture
def server_setup(toy: ToyLM) -> Callable[[FakeOpenAI], None]:
    return toy.install


def study_file(tmp_path: Path, text: str = STUDY) -> Path:
    path = tmp_path / "joint_toy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def run(server: FakeOpenAI, tmp_path: Path, *extra: str) -> tuple[int, Path]:
    output = tmp_path / "out.csv"
    argv = worker_args(
        "probs", server.base_url, output, *extra,
        input=write_csv(tmp_path / "in.csv", ROWS), study=study_file(tmp_path), max_retries=0,
    )  # fmt: skip
    return cli.main(argv), output


def their_logprobs(toy: ToyLM, prompt: str, options: dict[str, str]) -> dict[str, float]:
    """ModelScorer.score_completion on the toy model: p and f with the BOS, f's tokens beyond len(p)."""
    p = [BOS, *toy.encode(prompt)]
    out = {}
    for label, text in options.items():
        f = [BOS, *toy.encode(prompt + text)]
        if len(f) <= len(p):
            out[label] = -100.0
            continue
        total = 0.0
        for i in range(len(p), len(f)):
            total += toy.next_logprobs(f[:i])[f[i]]
        out[label] = total
    return out


def their_softmax(logprobs: list[float]) -> list[float]:
    top = max(logprobs)
    weights = [math.exp(v - top) for v in logprobs]
    return [w / sum(weights) for w in weights]


STATE_OPTIONS = {"0": "0%", "10": "10%", "100": "100%"}
KNOWLEDGE_OPTIONS = {"yes": "swer yes", "no": "swer no", "nothing": " nothing", "and": "d"}


def prompts_of(row: dict[str, str]) -> dict[str, str]:
    """Each question's raw prompt for an input row, written out by hand from STUDY."""
    speaker = row["speaker"].replace("<br>", "\n").strip()
    thing = "a toy inside" if row["story"].lower() == "boxes" else "the thing"
    state = f"Exactly {{k}} of the 3 {row['story']} have {thing}?\n{speaker}\nYour answer is:"
    return {
        "state0": state.format(k=0),
        "state1": state.format(k=1),
        "knowledge": f"{speaker} Does she know? Your an",
    }


def test_every_number_is_the_researchers_rule_on_the_model(server, toy, tmp_path):
    code, output = run(server, tmp_path)
    assert code == contract.EXIT_OK
    frame = read_csv(output)
    assert (frame["error"] == "").all()
    for index, row in frame.iterrows():
        prompts = prompts_of(ROWS[int(index)])
        for question, options in (("state0", STATE_OPTIONS), ("state1", STATE_OPTIONS)):
            assert row[f"{question}_prompt"] == prompts[question]
            expected = their_logprobs(toy, prompts[question], options)
            assert json.loads(row[f"{question}_logprobs"]) == pytest.approx(expected, abs=1e-12)
            shares = their_softmax(list(expected.values()))
            values = [0, 10, 100]
            got = [float(row[f"{question}_prob_{label}"]) for label in options]
            assert got == pytest.approx(shares, abs=1e-12)
            mean = sum(p * v for p, v in zip(shares, values, strict=True))
            variance = sum(p * (v - mean) ** 2 for p, v in zip(shares, values, strict=True))
            assert float(row[f"{question}_mean"]) == pytest.approx(mean, abs=1e-9)
            assert float(row[f"{question}_std"]) == pytest.approx(math.sqrt(variance), abs=1e-9)
            entropy = -sum(p * math.log2(p) for p in shares if p > 1e-10)
            assert float(row[f"{question}_entropy"]) == pytest.approx(entropy, abs=1e-12)
            assert row[f"{question}_method"] == "joint-completion"
            assert row[f"{question}_boundary_merged"] == ""
            prompt_ids = json.loads(row[f"{question}_prompt_token_ids"])
            assert prompt_ids == [BOS, *toy.encode(prompts[question])]
        knowledge = their_logprobs(toy, prompts["knowledge"], KNOWLEDGE_OPTIONS)
        assert knowledge["and"] == -100.0
        assert json.loads(row["knowledge_logprobs"]) == pytest.approx(knowledge, abs=1e-12)
        shares = their_softmax(list(knowledge.values()))
        got = [float(row[f"prob_knowledge_{label}"]) for label in KNOWLEDGE_OPTIONS]
        assert got == pytest.approx(shares, abs=1e-15)
        # The merged options: " answer" replaced the prompt's " an"; only what lies beyond it was scored.
        assert row["knowledge_boundary_merged"] == "yes;no;and"
        scored = json.loads(row["knowledge_option_token_ids"])
        assert scored == {
            "yes": [toy.token_id(" yes")],
            "no": [toy.token_id(" no")],
            "nothing": [toy.token_id(" nothing")],
            "and": [],
        }


def test_the_study_values_and_lookup_reach_the_prompt(server, toy, tmp_path):
    code, output = run(server, tmp_path)
    assert code == contract.EXIT_OK
    frame = read_csv(output)
    # Looked up lower-cased ("Boxes" -> boxes), written as it is; <br> replaced; values stripped.
    first = "Exactly 1 of the 3 Boxes have a toy inside?\nKim says:\n"
    assert frame.loc[0, "state1_prompt"].startswith(first)
    assert frame.loc[1, "state0_prompt"].startswith("Exactly 0 of the 3 cups have the thing?\nLee says:")


def test_requests_follow_the_recipe(server, toy, tmp_path):
    code, _ = run(server, tmp_path)
    assert code == contract.EXIT_OK
    tokenized = [r.json() for r in server.requests_to(TOKENIZE)]
    # The server's default add_special_tokens (true for text): the tokenizer adds its BOS, as HF does.
    assert all("add_special_tokens" not in body and "messages" not in body for body in tokenized)
    texts = [body["prompt"] for body in tokenized]
    knowledge = prompts_of(ROWS[0])["knowledge"]
    assert texts.count(knowledge) == 1
    assert all(texts.count(knowledge + option) == 1 for option in KNOWLEDGE_OPTIONS.values())
    completions = [r.json() for r in server.requests_to(COMPLETIONS)]
    # One request per question and row, every scored option in it, in the question's order.
    assert len(completions) == len(ROWS) * 3
    for body in completions:
        assert body["echo"] is True
        assert body["max_tokens"] == 0
        assert body["prompt_logprobs"] == 0
        assert "logprobs" not in body
        assert all(isinstance(prompt, list) for prompt in body["prompt"])
    sent = {toy.decode(prompt).removeprefix("<s>") for body in completions for prompt in body["prompt"]}
    assert knowledge + " nothing" in sent
    # "d" adds no token beyond the prompt: scored -100.0 without asking.
    assert knowledge + "d" not in sent
    order = next(body for body in completions if toy.decode(body["prompt"][0]).startswith(f"<s>{knowledge}"))
    assert [toy.decode(p).removeprefix(f"<s>{knowledge}") for p in order["prompt"]] == [
        "swer yes",
        "swer no",
        " nothing",
    ]


def test_meta_records_the_rule_and_the_tokenizer(server, tmp_path):
    code, output = run(server, tmp_path)
    assert code == contract.EXIT_OK
    meta = read_meta(output)
    parameters = meta["parameters"]
    assert parameters["scoring"] == "joint-completion"
    assert parameters["entropy_floor"] == 1e-10
    assert "-100.0 when len(f) <= len(p)" in parameters["rule"]
    assert [q["name"] for q in parameters["questions"]] == ["state0", "state1", "knowledge"]
    assert [o["text"] for o in parameters["questions"][2]["options"]] == list(KNOWLEDGE_OPTIONS.values())
    findings = meta["server"]["pipeline_findings"]
    assert findings["special_tokens_added"] == [BOS]
    assert findings["prefix_cache"].startswith("not read")


def test_a_failed_request_fails_its_row_instead_of_writing_a_uniform_distribution(server, tmp_path):
    server.script(COMPLETIONS, Status(400, "prompt too long"))
    code, output = run(server, tmp_path, "--batch-size", "1")
    assert code == contract.EXIT_ROWS_FAILED
    frame = read_csv(output)
    failed = frame[frame["error"] != ""]
    assert len(failed) == 1
    error = failed.iloc[0]["error"]
    assert error.startswith("question ")
    assert "prompt too long" in error
    question = error.removeprefix("question ").split(":", 1)[0]
    # The failed question's numbers are left empty, never filled with a made-up uniform distribution.
    columns = [c for c in frame.columns if c.startswith(question) or c.endswith(question)]
    if question == "knowledge":
        columns += ["prob_knowledge_yes", "prob_knowledge_no"]
    assert (failed.iloc[0][[c for c in columns if not c.endswith("_method")]] == "").all()
    assert (frame.loc[frame["error"] == "", "state0_prob_0"] != "").all()


def test_a_server_without_tokenize_is_refused_before_any_row(server, tmp_path):
    server.handlers.pop(TOKENIZE)
    code, output = run(server, tmp_path)
    assert code == contract.EXIT_INPUT
    assert not output.exists()


# ---- the study model and the command line -------------------------------------------------------------


def args(study: Path, **overrides: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    probs_pipeline.add_arguments(parser)
    namespace = parser.parse_args([])
    namespace.study = str(study)
    namespace.temperature = namespace.samples = namespace.seed = None
    for key, value in overrides.items():
        setattr(namespace, key, value)
    return namespace


@pytest.mark.parametrize(
    ("flag", "overrides"),
    [
        ("--method", {"method": "continuation"}),
        ("--variants", {"variants": "none"}),
        ("--answer-prefix", {"answer_prefix": "Answer:"}),
        ("--logprobs", {"logprobs": 5}),
        ("--temperature", {"temperature": 0.3}),
        ("--reasoning-format", {"reasoning_format": "harmony"}),
    ],
)
def test_flags_of_chat_scoring_are_refused(tmp_path, flag, overrides):
    with pytest.raises(InputError, match=rf"^{flag}: study joint_toy is scored by joint-completion"):
        probs_pipeline.build(args(study_file(tmp_path), **overrides))


def test_temperature_one_is_accepted(tmp_path):
    pipeline = probs_pipeline.build(args(study_file(tmp_path), temperature=1.0))
    assert pipeline.joint_completion


def test_a_system_message_is_refused_under_joint_completion(tmp_path):
    scoring = "  scoring: joint-completion\n"
    text = STUDY.replace(scoring, f"{scoring}  system: Be brief.\n")
    with pytest.raises(InputError, match="no system message: remove system"):
        spec.questions_for(load_study(str(study_file(tmp_path, text))), None)


def test_researchers_study1_columns_are_theirs():
    study = load_study(str(RESEARCHERS / "study1.yaml"))
    questions = spec.questions_for(study, None)
    assert [q.name for q in questions] == ["state0", "state1", "state2", "state3", "knowledge"]
    bins = range(0, 101, 10)
    for k, question in enumerate(questions[:4]):
        assert list(question.prob_columns.values()) == [f"state{k}_prob_{b}" for b in bins]
        assert (question.mean_column, question.std_column) == (f"state{k}_mean", f"state{k}_std")
        assert question.entropy_column == f"state{k}_entropy"
        assert [o.text for o in question.options] == [f"{b}%" for b in bins]
    assert list(questions[4].prob_columns.values()) == ["prob_knowledge_yes", "prob_knowledge_no"]
    assert questions[4].entropy_column == "entropy_knowledge"
    # Their property table, defect included; the corrected table is one placeholder away.
    row = dict.fromkeys(study.required_columns, "x")
    assert study.values({**row, "story_shortname": "tickets"})["property"] == "the property"
    assert study.values({**row, "story_shortname": "tickets"})["property_as_asked"] == "won"
    assert study.values({**row, "story_shortname": "Exams"})["property"] == "passing grades"


def test_researchers_study2_columns_are_theirs():
    study = load_study(str(RESEARCHERS / "study2.yaml"))
    questions = spec.questions_for(study, None)
    pipeline = probs_pipeline.ProbsPipeline(
        study, questions, probs_config.ProbsConfig(), marginals=spec.consistency_for(study, questions, None)
    )
    qualities = ["terrible", "bad", "good", "amazing"]
    theirs = [f"prob_{pol}_{q}" for pol in ("was", "wasn't") for q in qualities]
    theirs += ["prob_was", "prob_wasnt", *(f"prob_{q}" for q in qualities), "entropy_response"]
    assert set(theirs) <= set(pipeline.output_columns)
    assert [o.text for o in questions[0].options] == [
        f"It {pol} {q}" for pol in ("was", "wasn't") for q in qualities
    ]


# ---- the endpoint's reply -----------------------------------------------------------------------------


def recorded_batch() -> tuple[dict[str, Any], list[list[int]]]:
    """vLLM 0.32's reply to two prompts given as token ids, echo, max_tokens 0, prompt_logprobs 0."""
    body = json.loads((RECORDED / "completions_echo_prompt_logprobs_batch.json").read_text())
    request = json.loads((RECORDED / "completions_echo_prompt_logprobs_batch.request.json").read_text())
    return body, request["prompt"]


def test_prompt_tail_logprobs_reads_the_recorded_reply():
    body, prompts = recorded_batch()
    # "Your answer is:" is 4 tokens; "yes" adds one, "10%" three.
    tails = read_completion(body).prompt_tail_logprobs(prompts, [4, 4])
    assert tails == [[-13.695427894592285], [-14.188996315002441, -15.458457946777344, -16.88066864013672]]
    # The reply is the prompt alone: nothing generated follows it.
    assert [choice["text"] for choice in body["choices"]] == ["Your answer is:yes", "Your answer is:10%"]


def test_prompt_tail_logprobs_refuses_a_reply_for_other_tokens():
    body, prompts = recorded_batch()
    with pytest.raises(ResponseError, match="position 6 do not include the token 11"):
        read_completion(body).prompt_tail_logprobs([prompts[0], [*prompts[1][:6], 11]], [4, 4])


# ---- their arithmetic ---------------------------------------------------------------------------------


def test_softmax_subtracts_the_maximum_and_keeps_the_no_token_constant_tiny():
    shares = lp.softmax([-2.0, -100.0, -3.0])
    assert math.fsum(shares) == pytest.approx(1.0, abs=1e-15)
    assert shares[1] == pytest.approx(math.exp(-98.0) / (1 + math.exp(-1.0)), rel=1e-12)
    assert lp.softmax([1000.0, 999.0]) == pytest.approx([1 / (1 + math.exp(-1)), 1 / (1 + math.e)])
    assert all(math.isnan(p) for p in lp.softmax([-math.inf, -math.inf]))


def test_entropy_leaves_out_the_terms_at_or_below_their_floor():
    shares = [0.5, 0.5 - 1e-11, 1e-11]
    with_floor = lp.entropy_bits(shares, floor=1e-10)
    assert with_floor == pytest.approx(-2 * 0.5 * math.log2(0.5), abs=1e-9)
    assert with_floor < lp.entropy_bits(shares)
