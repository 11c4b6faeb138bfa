"""Experiment 2 on a reasoning model: `direct` (no reasoning) and `after-reasoning` (the model's analysis
channel first), on the toy model speaking harmony's special tokens.

The CPU test model is not a harmony model, so the generation of the analysis is a recorded vLLM 0.32
completion (`completions_stop_token_ids.json`: a seeded completion that stopped at a requested stop token,
which vLLM returns as the last of `token_ids`) with only its choice replaced by toy tokens.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.support.fake_openai import FakeOpenAI
from tests.support.toy_lm import ToyLM
from tests.unit.worker.support import (
    ANALYSIS,
    COMPLETIONS,
    TOKENIZE,
    expected_logprobs,
    read_csv,
    read_meta,
    reasoning_handler,
    run_probs,
)
from worker.pipelines.probs.reasoning import HARMONY
from worker.server.chat_messages import PROBE_USER


@pytest.fixture
def server_setup(toy: ToyLM) -> Callable[[FakeOpenAI], None]:
    return toy.install


def harmony_ids(toy: ToyLM, text: str) -> list[int]:
    return toy.encode(text)


def test_after_reasoning_reads_the_answer_after_the_models_own_analysis(server, toy, tmp_path):
    server.handlers[COMPLETIONS] = reasoning_handler(toy)
    code, output = run_probs(server, tmp_path, "--reasoning-format", "harmony", study="chat/study2")
    assert code == 0
    frame = read_csv(output)
    generations = [r.json() for r in server.requests_to(COMPLETIONS) if "stop_token_ids" in r.text]
    assert generations, "no analysis was generated"
    # Each row's analysis is sampled with that row's recorded seed (the runner's seed column).
    assert {g["seed"] for g in generations} == {int(seed) for seed in frame["seed"]}
    assert len(set(frame["seed"])) == len(frame)
    assert all(g["return_token_ids"] is True for g in generations)
    assert all(g["stop_token_ids"] == harmony_ids(toy, HARMONY.analysis_end) for g in generations)
    for _, row in frame.iterrows():
        for question in ("frame", "assessment", "utterance"):
            analysis = json.loads(row[f"{question}_reasoning_token_ids"])
            assert analysis == toy.encode(ANALYSIS)  # the stop token is not part of the analysis
            assert row[f"{question}_reasoning"] == ANALYSIS
            prompt = json.loads(row[f"{question}_prompt_token_ids"])
            opened = [g["prompt"] for g in generations if g["prompt"] == prompt[: len(g["prompt"])]]
            assert opened, "the scored prompt does not extend a generation prompt"
            tail = prompt[len(opened[0]) :]
            # generation prompt + analysis prefix | analysis | end | final-channel header | answer
            assert opened[0][-len(harmony_ids(toy, HARMONY.analysis_prefix)) :] == harmony_ids(
                toy, HARMONY.analysis_prefix
            )
            assert tail == [
                *analysis,
                *harmony_ids(toy, HARMONY.analysis_end),
                *harmony_ids(toy, HARMONY.answer_prefix_after_reasoning),
            ]
            # and the numbers are the model's own at that prompt
            got = json.loads(row[f"{question}_logprobs"])
            for label, value in expected_logprobs(toy, row, question).items():
                assert got[label] == pytest.approx(value, abs=1e-9)
    meta = read_meta(tmp_path / "out.csv")
    reasoning = meta["parameters"]["reasoning"]
    assert reasoning["mode"] == "after-reasoning"
    assert reasoning["seed"] == "each row's sample seed (the seed column)"


def test_a_reasoning_that_runs_out_of_tokens_is_a_row_error_naming_the_cause(server, toy, tmp_path):
    server.handlers[COMPLETIONS] = reasoning_handler(toy, finished=False)
    code, output = run_probs(
        server, tmp_path, "--reasoning-format", "harmony", "--reasoning-max-tokens", "9", study="chat/study2"
    )
    assert code == 3
    errors = read_csv(output)["error"]
    assert errors.str.contains("the reasoning ran out of tokens").all()
    assert errors.str.contains("--reasoning-max-tokens 9").all()


def test_direct_reads_right_after_the_generation_prompt_and_says_so(server, toy, tmp_path):
    code, output = run_probs(
        server, tmp_path, "--reasoning-format", "harmony", "--reasoning-mode", "direct", study="chat/study2"
    )
    assert code == 0
    frame = read_csv(output)
    assert not [c for c in frame.columns if c.endswith("_reasoning")]
    assert not [r for r in server.requests_to(COMPLETIONS) if "stop_token_ids" in r.text]
    for prompt in frame["frame_prompt_token_ids"]:
        ids = json.loads(prompt)
        header = harmony_ids(toy, HARMONY.direct_answer_prefix)
        assert ids[-len(header) :] == header
        generation_prompt = toy.encode("<|assistant|>\n")
        assert ids[-len(header) - len(generation_prompt) : -len(header)] == generation_prompt
    meta = read_meta(tmp_path / "out.csv")
    assert meta["parameters"]["reasoning"]["mode"] == "direct"
    assert "no reasoning" in meta["parameters"]["reasoning"]["note"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--reasoning-mode", "direct"), "--reasoning-mode needs --reasoning-format"),
        (
            ("--reasoning-format", "harmony", "--answer-prefix", "<|x|>"),
            "--answer-prefix applies to --reasoning-mode direct only",
        ),
    ],
)
def test_inconsistent_reasoning_flags_are_one_sentence_exit_2(server, tmp_path, capsys, flags, message):
    code, _ = run_probs(server, tmp_path, *flags, study="chat/study2")
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert err.count("\n") == 0


def test_reasoning_effort_reaches_the_chat_template(server, toy, tmp_path):
    code, _ = run_probs(
        server, tmp_path, "--reasoning-format", "harmony", "--reasoning-mode", "direct",
        "--reasoning-effort", "low", study="chat/study2",
    )  # fmt: skip
    assert code == 0
    # Every rendered study prompt (the system-role probe aside) carries the effort to the template.
    chats = [r.json() for r in server.requests_to(TOKENIZE) if '"messages"' in r.text]
    prompts = [c for c in chats if PROBE_USER not in json.dumps(c)]
    assert prompts
    assert all(c.get("chat_template_kwargs") == {"reasoning_effort": "low"} for c in prompts)
