"""worker.pipelines.probs and its parts (probability_section, answer_tokens): questions, option tokens,
the pipeline.

Pipeline tests run the real CLI and client against `FakeOpenAI` serving `ToyLM` (tests/support/toy_lm.py),
whose bodies are the real vLLM 0.32 ones with the choices replaced. The toy model's probabilities are
computed directly (`ToyLM.sequence_logprob`), so every number the worker reports is checked against an
independent ground truth, never against itself.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from tests.support.contracts import SAMPLE_COLUMNS
from tests.support.fake_openai import FakeOpenAI, Status
from tests.support.toy_lm import ToyLM
from tests.unit.worker.support import COMPLETIONS, expected_logprobs, read_csv, read_meta, run_probs
from worker.errors import InputError
from worker.pipelines.probs import answer_tokens, probs_config, probs_pipeline, question_result
from worker.server import logprobs as lp
from worker.studies import probability_section as spec
from worker.studies.definition import REPO_STUDIES_DIR, load_study

BINS = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]


# ---- the study files' probability sections ---------------------------------------------------------------


def test_study1_asks_five_questions_with_the_columns_the_researchers_use():
    pipeline = probs_pipeline.ProbsPipeline(
        load_study("chat/study1"),
        spec.questions_for(load_study("chat/study1"), None),
        probs_config.ProbsConfig(),
    )
    assert [q.name for q in pipeline.questions] == ["state0", "state1", "state2", "state3", "knowledge"]
    columns = pipeline.output_columns
    cells = [f"state{k}_prob_{b}" for k in range(4) for b in BINS]
    assert len(cells) == 44
    assert set(cells) <= set(columns)
    for k in range(4):
        assert {f"state{k}_mean", f"state{k}_std", f"state{k}_entropy"} <= set(columns)
    assert {"prob_knowledge_yes", "prob_knowledge_no", "entropy_knowledge"} <= set(columns)
    assert columns[-1] == "error"
    assert len(columns) == len(set(columns))
    # {k} is filled per question; the row's columns stay placeholders.
    state2 = pipeline.questions[2]
    assert "exactly 2?" in state2.user
    assert "{story_setup}" in state2.user


def test_study2_asks_frame_assessment_and_the_joint_utterance():
    study = load_study("chat/study2")
    questions = spec.questions_for(study, None)
    assert [q.name for q in questions] == ["frame", "assessment", "utterance"]
    assert list(questions[0].prob_columns.values()) == ["prob_frame_was", "prob_frame_wasnt"]
    # The researchers' eight: {was, wasn't} x {terrible, bad, good, amazing}; no "okay".
    assert [o.text for o in questions[2].options] == [
        f"It {frame} {word}" for frame in ("was", "wasn't") for word in ("terrible", "bad", "good", "amazing")
    ]
    assert [o.text for o in questions[1].options] == ["terrible", "bad", "good", "amazing"]
    assert [q.entropy_column for q in questions] == [
        "entropy_frame",
        "entropy_assessment",
        "entropy_utterance",
    ]
    # Utterance is a stimulus-design column, not part of any prompt.
    assert all("{Utterance}" not in q.user for q in questions)


def section(**question: Any) -> spec.ProbabilitySection:
    base = {
        "name": "q",
        "user": "{a}?",
        "options": ["yes", "no"],
        "columns": {"prob": "p_{label}", "entropy": "h"},
    }
    return spec.ProbabilitySection.model_validate({"questions": [{**base, **question}]})


def test_a_question_over_a_column_the_study_lacks_is_an_input_error():
    with pytest.raises(InputError, match=r"question 'q' uses zzz, which the study's required_columns"):
        spec.expand_questions(section(user="{zzz}?"), ["a"])


def test_a_column_name_with_an_unknown_variable_is_an_input_error():
    with pytest.raises(InputError, match=r"uses \{j\}"):
        spec.expand_questions(section(columns={"prob": "p_{label}", "entropy": "h{j}"}), ["a"])


def test_expansion_fills_only_its_variable_and_keeps_literal_braces():
    (q0, q1) = spec.expand_questions(
        section(
            name="q{k}",
            user="{a} {{x}} k={k}",
            expand={"k": [0, 1]},
            columns={"prob": "q{k}_{label}", "entropy": "h{k}"},
        ),
        ["a"],
    )
    assert (q0.name, q1.name) == ("q0", "q1")
    assert q1.user.format_map({"a": "A"}) == "A {x} k=1"
    assert q1.prob_columns == {"yes": "q1_yes", "no": "q1_no"}


def test_two_questions_writing_one_column_are_refused():
    question = {"user": "{a}", "options": ["yes", "no"], "columns": {"prob": "p_{label}", "entropy": "h"}}
    sec = spec.ProbabilitySection.model_validate(
        {"questions": [{"name": "x", **question}, {"name": "y", **question}]}
    )
    with pytest.raises(InputError, match="twice"):
        spec.expand_questions(sec, ["a"])


def test_mean_needs_a_value_on_every_option():
    with pytest.raises(ValueError, match="not every option has a value"):
        section(columns={"prob": "p_{label}", "entropy": "h", "mean": "m"})


def args(**overrides: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    probs_pipeline.add_arguments(parser)
    namespace = parser.parse_args([])
    namespace.study = "chat/study1"
    # The common flags (worker.cli.add_common_arguments) a pipeline reads, unset.
    namespace.temperature = namespace.samples = namespace.seed = None
    for key, value in overrides.items():
        setattr(namespace, key, value)
    return namespace


def test_build_refuses_more_top_logprobs_than_vllm_allows():
    with pytest.raises(InputError, match=r"--logprobs 21: Input should be less than or equal to 20"):
        probs_pipeline.build(args(logprobs=21))


def test_scoring_is_one_sample_per_row_and_more_are_refused():
    pipeline = probs_pipeline.build(args())
    assert pipeline.samples_per_row == 1
    assert pipeline.base_seed == load_study("chat/study1").sampling.base_seed
    # not the study's sampling temperature
    assert pipeline.config.temperature == probs_config.DEFAULT_TEMPERATURE


def test_scoring_more_than_one_sample_per_row_is_refused():
    with pytest.raises(InputError, match=r"^--samples 5: probs .* samples nothing"):
        probs_pipeline.build(args(samples=5))


def test_build_generic_question_from_tokens():
    pipeline = probs_pipeline.build(args(tokens="0, 1,2,3,yes,no"))
    (question,) = pipeline.questions
    assert question.name == "answer"
    assert list(question.prob_columns.values()) == [
        "prob_0",
        "prob_1",
        "prob_2",
        "prob_3",
        "prob_yes",
        "prob_no",
    ]
    # Study 1's three-turn conversation: its questions in one user message, in the order asked.
    assert question.user == "\n\n".join(turn.user for turn in load_study("chat/study1").prompt.conversation)


def test_a_generic_question_needs_at_least_two_tokens():
    with pytest.raises(InputError, match="at least two"):
        probs_pipeline.build(args(tokens="yes"))


def test_study_without_a_probability_section_needs_tokens(tmp_path):
    text = (REPO_STUDIES_DIR / "chat" / "study2.yaml").read_text()
    path = tmp_path / "bare.yaml"
    path.write_text(text[: text.index("\nprobability:")] + "\n")
    with pytest.raises(InputError, match="has no probability: section"):
        probs_pipeline.build(args(study=str(path)))


# ---- variants and option plans -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "policy", "variants"),
    [
        ("yes", answer_tokens.VariantPolicy.CASE_AND_SPACE, ["yes", "Yes", " yes", " Yes"]),
        ("Yes", answer_tokens.VariantPolicy.CASE_AND_SPACE, ["Yes", "yes", " Yes", " yes"]),
        ("10%", answer_tokens.VariantPolicy.CASE_AND_SPACE, ["10%", " 10%"]),
        ("yes", answer_tokens.VariantPolicy.SPACE, ["yes", " yes"]),
        ("yes", answer_tokens.VariantPolicy.NONE, ["yes"]),
    ],
    ids=["lower", "capitalised", "no-case", "space-only", "none"],
)
def test_surface_variants(option: str, policy: answer_tokens.VariantPolicy, variants: list[str]) -> None:
    assert answer_tokens.surface_variants(option, policy) == variants


def test_plan_counts_each_distinct_sequence_once():
    # A SentencePiece-like tokenizer gives "yes" and " yes" the same token in context: counted once.
    plan = answer_tokens.plan_options({"yes": {"yes": [5], " yes": [5], "Yes": [6]}, "no": {"no": [7]}})
    assert plan.options[0].sequences == {"yes": (5,), "Yes": (6,)}
    assert plan.first_token_exact


def test_plan_drops_a_variant_that_extends_another_of_the_same_option():
    plan = answer_tokens.plan_options({"a": {"x": [1, 2], "y": [1]}, "b": {"b": [3]}})
    assert plan.options[0].sequences == {"y": (1,)}


def test_plan_finds_where_one_option_could_continue_into_another():
    plan = answer_tokens.plan_options({"1": {"1": [4]}, "10": {"10": [4, 9]}, "2": {"2": [5]}})
    assert plan.continuations == {("1", "1"): (9,)}
    assert not plan.first_token_exact
    assert plan.describe()["excluded_continuations"] == [
        {"option": "1", "variant": "1", "next_token_ids": [9]}
    ]


def test_plan_refuses_options_with_identical_tokens():
    with pytest.raises(InputError, match=r"options 'yes' \('Yes'\) and 'Yes' \('Yes'\) are the same tokens"):
        answer_tokens.plan_options({"yes": {"yes": [1], "Yes": [2]}, "Yes": {"Yes": [2]}})


def test_question_columns_hand_computed():
    question = spec.expand_questions(section(), ["a"])[0]
    result = question_result.QuestionResult(
        method=probs_config.Method.CONTINUATION,
        option_logprobs={"yes": math.log(0.2), "no": math.log(0.3)},
        absent=(),
        variants={"yes": {"yes": [1]}, "no": {"no": [2]}},
        prompt_text="<s>hi",
        prompt_token_ids=(0, 9),
    )
    out = result.columns(question)
    assert out["p_yes"] == pytest.approx(0.4, abs=1e-15)
    assert out["p_no"] == pytest.approx(0.6, abs=1e-15)
    assert out["h"] == pytest.approx(-(0.4 * math.log2(0.4) + 0.6 * math.log2(0.6)), abs=1e-15)
    assert out["q_coverage"] == pytest.approx(0.5, abs=1e-15)
    assert json.loads(out["q_raw"]) == pytest.approx({"yes": 0.2, "no": 0.3}, abs=1e-15)
    assert out["q_prompt_token_ids"] == "[0, 9]"
    assert out["q_method"] == "continuation"


# ---- the pipeline against the toy model -------------------------------------------------------------------


@pytest.fixture
def server_setup(toy: ToyLM) -> Callable[[FakeOpenAI], None]:
    return toy.install


def test_study1_continuation_matches_the_model_exactly(server, toy, tmp_path):
    code, output = run_probs(server, tmp_path)
    assert code == 0
    frame = read_csv(output)
    assert len(frame) == 2
    assert (frame["error"] == "").all()
    for _, row in frame.iterrows():
        for question in ["state0", "state1", "state2", "state3", "knowledge"]:
            # "10%" and "100%" share a first token; yes/no variants are one token each for the toy.
            assert row[f"{question}_method"] == ("first-token" if question == "knowledge" else "continuation")
            worker = json.loads(row[f"{question}_logprobs"])
            assert worker == pytest.approx(expected_logprobs(toy, row, question), abs=1e-9)
            ids = json.loads(row[f"{question}_prompt_token_ids"])
            assert toy.decode(ids) == row[f"{question}_prompt"]
            assert row[f"{question}_prompt"].endswith("<|assistant|>\n")
        probs_k0 = [float(row[f"state0_prob_{b}"]) for b in BINS]
        assert math.fsum(probs_k0) == pytest.approx(1.0, abs=1e-12)
        assert float(row["state0_mean"]) == pytest.approx(
            sum(p * b for p, b in zip(probs_k0, BINS, strict=True)), abs=1e-9
        )
    # The study's <br> reached the model as a new line (the study's text_replacements).
    assert "<br>" not in frame.loc[0, "knowledge_prompt"]
    # "100%" is "1","0","0","%" in context: four tokens, sharing its first token with "10%".
    variants = json.loads(frame.loc[0, "state0_variants"])
    assert variants["100"]["100%"][0] == variants["10"]["10%"][0]
    meta = read_meta(tmp_path / "out.csv")
    findings = meta["server"]["pipeline_findings"]
    assert findings["approximate"] is False
    assert findings["planned_methods"]["state0"] == "continuation"
    assert findings["option_tokens"]["state0"]["first_token_exact"] is False
    assert meta["parameters"]["entropy_unit"] == "bits"


def test_single_token_options_use_first_token_and_match_the_model(server, toy, tmp_path):
    toy.boost.update({"yes": 10.0, " yes": 9.0, "no": 10.0, " no": 9.0})
    code, output = run_probs(server, tmp_path, "--tokens", "yes,no", "--variants", "space")
    assert code == 0
    frame = read_csv(output)
    row = frame.iloc[0]
    assert row["answer_method"] == "first-token"
    prompt = json.loads(row["answer_prompt_token_ids"])
    following = toy.next_logprobs(prompt)
    expected_yes = lp.logsumexp([following[toy.token_id("yes")], following[toy.token_id(" yes")]])
    assert json.loads(row["answer_logprobs"])["yes"] == pytest.approx(expected_yes, abs=1e-12)
    assert json.loads(row["answer_variants"])["yes"] == {
        "yes": [toy.token_id("yes")],
        " yes": [toy.token_id(" yes")],
    }
    assert float(row["prob_yes"]) + float(row["prob_no"]) == pytest.approx(1.0, abs=1e-12)
    requests = [r.json() for r in server.requests_to(COMPLETIONS)]
    probes = [r for r in requests if r["logprobs"] == 1]  # prepare's check for logprob_token_ids support
    rows = [r for r in requests if r not in probes]
    # One first-token request per row and nothing else: no row needed the continuation fallback.
    assert len(rows) == 2
    request = rows[0] if rows[0]["prompt"] == prompt else rows[1]
    assert request["max_tokens"] == 1
    assert request["logprobs"] == 20
    assert request["return_tokens_as_token_ids"] is True
    assert request["prompt"] == prompt
    options = ["yes", " yes", "no", " no"]
    assert request["logprob_token_ids"] == sorted(toy.token_id(text) for text in options)


# yes/no with and without a leading space, read from the top 1 candidate only.
YES_NO_TOP_1 = ("--tokens", "yes,no", "--variants", "space", "--logprobs", "1")
FIRST_TOKEN = ("--method", "first-token")


def test_first_token_reports_options_outside_the_top_n(server, toy, tmp_path):
    toy.scores_requested_ids = False  # a server that only returns the top N (vLLM before logprob_token_ids)
    toy.boost.update({"yes": 9.0, " yes": 9.0})
    code, output = run_probs(server, tmp_path, *YES_NO_TOP_1, *FIRST_TOKEN)
    assert code == 0
    row = read_csv(output).iloc[0]
    assert row["answer_absent"] == "no"
    assert json.loads(row["answer_logprobs"])["no"] is None
    assert float(row["prob_no"]) == 0.0
    assert float(row["answer_coverage"]) < 1.0


def test_auto_falls_back_to_continuation_for_options_outside_the_top_n(server, toy, tmp_path):
    toy.scores_requested_ids = False
    toy.boost.update({"yes": 9.0, " yes": 9.0})
    code, output = run_probs(server, tmp_path, *YES_NO_TOP_1)
    assert code == 0
    row = read_csv(output).iloc[0]
    assert row["answer_method"] == "continuation"
    assert row["answer_absent"] == ""
    assert json.loads(row["answer_logprobs"]) == pytest.approx(
        expected_logprobs(toy, row, "answer"), abs=1e-9
    )


def test_an_option_that_is_a_prefix_of_another_counts_only_when_the_answer_stops(server, toy, tmp_path):
    code, output = run_probs(server, tmp_path, "--tokens", "1,10,2", "--variants", "none")
    assert code == 0
    row = read_csv(output).iloc[0]
    prompt = json.loads(row["answer_prompt_token_ids"])
    one, zero = toy.token_id("1"), toy.token_id("0")
    p_one = toy.sequence_logprob(prompt, [one])
    p_zero_after_one = math.exp(toy.next_logprobs([*prompt, one])[zero])
    worker = json.loads(row["answer_logprobs"])
    assert worker["1"] == pytest.approx(p_one + math.log1p(-p_zero_after_one), abs=1e-12)
    assert worker["10"] == pytest.approx(toy.sequence_logprob(prompt, [one, zero]), abs=1e-12)


def test_options_the_tokenizer_cannot_tell_apart_are_refused_before_any_row(server, tmp_path):
    code, output = run_probs(server, tmp_path, "--tokens", "yes,Yes")
    assert code == 2
    assert not output.exists()
    assert not server.requests_to(COMPLETIONS)


def test_explicit_first_token_on_options_sharing_a_first_token_is_refused(server, tmp_path, capsys):
    code, output = run_probs(server, tmp_path, "--method", "first-token")
    assert code == 2
    assert not output.exists()
    assert "start with the same token for this model; use --method continuation" in capsys.readouterr().err


def test_without_tokenize_the_chat_fallback_is_used_and_called_approximate(server, toy, tmp_path):
    server.handlers["/tokenize"] = lambda _request: Status(404, "Not Found")
    toy.boost.update({"yes": 8.0, "no": 7.0})
    code, output = run_probs(server, tmp_path, "--tokens", "yes,no", "--variants", "none")
    assert code == 0
    row = read_csv(output).iloc[0]
    assert row["answer_method"] == "chat-top-logprobs"
    assert row["answer_prompt_token_ids"] == "[]"
    messages = json.loads(row["answer_prompt"])
    following = toy.next_logprobs(toy.encode(toy.render(messages)))
    assert json.loads(row["answer_logprobs"])["yes"] == pytest.approx(
        following[toy.token_id("yes")], abs=1e-12
    )
    request = server.requests_to("/v1/chat/completions")[-1].json()
    assert request["logprobs"] is True
    assert request["top_logprobs"] == 20
    meta = read_meta(tmp_path / "out.csv")
    assert meta["server"]["pipeline_findings"]["approximate"] is True


def test_a_template_without_a_system_role_gets_the_system_text_in_the_user_turn(server, toy, tmp_path):
    toy.reject_system_role = True
    code, output = run_probs(server, tmp_path, "--tokens", "yes,no", study="chat/study2")
    assert code == 0
    row = read_csv(output).iloc[0]
    assert "<|system|>" not in row["answer_prompt"]
    assert row["answer_prompt"].startswith("<s><|user|>\nYou are a participant in a short study")
    meta = read_meta(tmp_path / "out.csv")
    assert meta["server"]["pipeline_findings"]["system_merged_into_user"] is True


@pytest.mark.parametrize("scaled", [False, True])
def test_the_meta_file_records_whether_temperature_changed_the_logprobs(server, toy, tmp_path, scaled):
    toy.temperature_scales_logprobs = scaled
    code, _ = run_probs(server, tmp_path, "--tokens", "yes,no", "--temperature", "0.5")
    assert code == 0
    meta = read_meta(tmp_path / "out.csv")
    finding = meta["server"]["pipeline_findings"]["temperature"]
    assert finding["requested"] == 0.5
    assert finding["scaled_by_server"] is scaled


def test_study2_runs_with_every_column(server, tmp_path):
    code, output = run_probs(server, tmp_path, study="chat/study2")
    assert code == 0
    frame = read_csv(output)
    study = load_study("chat/study2")
    questions = spec.questions_for(study, None)
    marginals = spec.consistency_for(study, questions, None)
    config = probs_config.ProbsConfig()
    pipeline = probs_pipeline.ProbsPipeline(study, questions, config, marginals=marginals)
    # Analysis columns first, the evidence (JSON records and exact prompts) after all of them.
    evidence = ("_raw", "_logprobs", "_variants", "_prompt", "_prompt_token_ids")
    analysis = [column for column in pipeline.output_columns if not column.endswith(evidence)]
    provenance = [column for column in pipeline.output_columns if column.endswith(evidence)]
    assert len(provenance) == 5 * len(pipeline.questions)
    assert list(frame.columns) == [*study.required_columns, *SAMPLE_COLUMNS, *analysis, *provenance]
    for column in pipeline.output_columns:
        if not column.endswith(("_absent", "error")):
            assert (frame[column] != "").all(), column
    assert (frame["model_name"] == "tiny").all()
    # The joint's marginals, beside the separately asked frame and assessment, are sums of the joint.
    numbers = frame.drop(columns=[*study.required_columns, "model_name"]).apply(
        pd.to_numeric, errors="coerce"
    )
    words = ("terrible", "bad", "good", "amazing")
    for frame_label in ("was", "wasnt"):
        joint = sum(numbers[f"prob_utterance_{frame_label}_{word}"] for word in words)
        assert numbers[f"prob_joint_frame_{frame_label}"].tolist() == pytest.approx(joint.tolist(), abs=1e-12)
    for word in words:
        joint = numbers[f"prob_utterance_was_{word}"] + numbers[f"prob_utterance_wasnt_{word}"]
        assert numbers[f"prob_joint_assessment_{word}"].tolist() == pytest.approx(joint.tolist(), abs=1e-12)
    assert numbers[[f"prob_joint_frame_{f}" for f in ("was", "wasnt")]].sum(axis=1).tolist() == pytest.approx(
        [1.0] * len(frame)
    )
    # "wasn't" is "wasn" + "'t" for the toy tokenizer: a multi-token option.
    assert len(json.loads(frame.loc[0, "frame_variants"])["wasnt"]["wasn't"]) == 2


def test_no_mass_on_any_option_leaves_the_distribution_empty_not_uniform(server, toy, tmp_path):
    toy.scores_requested_ids = False
    # Top-1 (plus the sampled token) of 400: neither option is seen, so nothing is known about them.
    code, output = run_probs(
        server, tmp_path, "--tokens", "yes,no", "--variants", "none", "--logprobs", "1", *FIRST_TOKEN
    )
    assert code == 0
    row = read_csv(output).iloc[0]
    assert row["answer_absent"] == "yes;no"
    assert float(row["answer_coverage"]) == 0.0
    assert (row["prob_yes"], row["prob_no"], row["entropy"]) == ("", "", "")


def test_the_answer_prefix_is_appended_after_the_generation_prompt(server, toy, tmp_path):
    # gpt-oss: the answer is read after the harmony final-channel header, not at the first reasoning token.
    prefix = "<|channel|>final<|message|>"
    code, output = run_probs(server, tmp_path, "--tokens", "yes,no", "--answer-prefix", prefix)
    assert code == 0
    row = read_csv(output).iloc[0]
    assert row["answer_prompt"].endswith("<|assistant|>\n" + prefix)
    ids = json.loads(row["answer_prompt_token_ids"])
    assert ids[-3:] == toy.encode(prefix)
    assert json.loads(row["answer_logprobs"]) == pytest.approx(
        expected_logprobs(toy, row, "answer"), abs=1e-9
    )
    meta = read_meta(tmp_path / "out.csv")
    assert meta["parameters"]["answer_prefix"] == prefix
    assert meta["server"]["pipeline_findings"]["answer_prefix_token_ids"] == toy.encode(prefix)


def test_auto_rescores_a_row_when_any_variant_is_outside_the_top_n(server, toy, tmp_path):
    toy.scores_requested_ids = False
    # "yes" and "no" are in the top 20 but " yes" and " no" are not: first-token would give lower bounds.
    toy.boost.update({"yes": 12.0, "no": 12.0})
    code, output = run_probs(server, tmp_path, "--tokens", "yes,no", "--variants", "space")
    assert code == 0
    row = read_csv(output).iloc[0]
    assert row["answer_method"] == "continuation"
    assert set(json.loads(row["answer_variants"])["yes"]) == {"yes", " yes"}
    assert json.loads(row["answer_logprobs"]) == pytest.approx(
        expected_logprobs(toy, row, "answer"), abs=1e-9
    )


def test_explicit_first_token_records_only_the_variants_in_the_top_n(server, toy, tmp_path):
    toy.scores_requested_ids = False
    toy.boost.update({"yes": 12.0, "no": 12.0})  # " yes" and " no" are outside the top 20
    code, output = run_probs(server, tmp_path, "--tokens", "yes,no", "--variants", "space", *FIRST_TOKEN)
    assert code == 0
    row = read_csv(output).iloc[0]
    assert row["answer_method"] == "first-token"
    assert json.loads(row["answer_variants"])["yes"] == {"yes": [toy.token_id("yes")]}
    assert row["answer_absent"] == ""


def test_a_refused_question_fails_its_row_with_the_question_named(server, tmp_path):
    # The first scoring request is refused (as vLLM refuses a prompt longer than max_model_len); that row
    # is recorded with its error, the other row is complete, and the exit code says some rows failed.
    server.script(COMPLETIONS, Status(400, "This model's maximum context length is 512 tokens."))
    code, output = run_probs(server, tmp_path, "--tokens", "yes,no", "--method", "continuation")
    assert code == 3
    frame = read_csv(output)
    failed = frame[frame["error"] != ""]
    assert len(failed) == 1
    assert failed.iloc[0]["error"].startswith(
        "question answer: HTTP 400: This model's maximum context length"
    )
    assert failed.iloc[0]["prob_yes"] == ""
    done = frame[frame["error"] == ""].iloc[0]
    assert float(done["prob_yes"]) + float(done["prob_no"]) == pytest.approx(1.0, abs=1e-12)


def test_requested_token_ids_make_first_token_exact_at_any_rank(server, toy, tmp_path):
    # No boost: yes/no rank far below the top 20, yet vLLM's logprob_token_ids scores them exactly.
    code, output = run_probs(server, tmp_path, *YES_NO_TOP_1)
    assert code == 0
    row = read_csv(output).iloc[0]
    assert row["answer_method"] == "first-token"
    assert row["answer_absent"] == ""
    assert json.loads(row["answer_logprobs"]) == pytest.approx(
        expected_logprobs(toy, row, "answer"), abs=1e-12
    )
    findings = read_meta(output)["server"]["pipeline_findings"]
    assert findings["first_token_reads"].startswith("the options' own token ids")


def test_a_server_that_ignores_requested_token_ids_is_recorded_as_reading_the_top_n(server, toy, tmp_path):
    toy.scores_requested_ids = False
    code, output = run_probs(server, tmp_path, *YES_NO_TOP_1)
    assert code == 0
    findings = read_meta(output)["server"]["pipeline_findings"]
    assert findings["first_token_reads"] == "the top 1 candidates only"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: spec.ColumnNames(prob="p", entropy="h"), "columns.prob 'p' must contain {label}"),
        (
            lambda: spec.MarginalSpec.model_validate(
                {"name": "frame", "from": "sentence", "groups": {"a": ("x",), "b": ("y",)}, "column": "m"}
            ),
            "consistency column 'm' must contain {label}",
        ),
    ],
)
def test_a_column_written_per_label_must_place_the_label(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build()
