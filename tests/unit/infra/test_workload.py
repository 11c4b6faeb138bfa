"""What each matrix cell asks of a server, in tokens, in both designs of the studies: as many requests
per row as the plan counts, prompts measured on the real study rows, conversations that grow (chat),
independent raw prompts and one sequence per scored option (the researchers'), reasoning counted where a
model reasons, and a broken study file refused in one sentence."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest

from grace_infra import constants as c
from grace_infra.config.stack_config import Design, Experiment, GraceConfig, Study
from grace_infra.errors import ConfigError
from grace_infra.planning.gpu_hours import gpu_hour_plan
from grace_infra.planning.matrix import MatrixCell
from grace_infra.planning.study_bundle import StudyBundle, load_study_bundle, requests_per_row
from grace_infra.planning.workload import cell_request_kinds, prompt_sizes

from .support import base_config


def nrp(design: Design = Design.CHAT) -> tuple[GraceConfig, StudyBundle]:
    """The nrp stack with its CSVs (the real ones beside the checkout when present, else the fixtures),
    every model running `design`."""
    raw = base_config()
    raw["experiments"] = {**raw["experiments"], "design": design.value}
    config = GraceConfig.parse(raw)
    return config, load_study_bundle(config)


def csv_rows(config: GraceConfig, study: Study) -> list[dict[str, str]]:
    with Path(config.experiments.input_files[study]).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def cell(config: GraceConfig, study: Study, experiment: Experiment, model: str) -> MatrixCell:
    served = next(m for m in config.served_models() if m.key == model)
    return MatrixCell(study, experiment, served)


@pytest.mark.parametrize("design", list(Design))
@pytest.mark.parametrize("study", list(Study))
@pytest.mark.parametrize("experiment", list(Experiment))
def test_each_cell_sends_as_many_requests_per_row_as_the_plan_counts(
    design: Design, study: Study, experiment: Experiment
) -> None:
    config, bundle = nrp(design)
    for model in ("gemma-2-2b", "gpt-oss-20b"):
        target = cell(config, study, experiment, model)
        kinds = cell_request_kinds(target, target.model, config, bundle)
        assert sum(k.per_row for k in kinds) == requests_per_row(design, study, bundle).counts[experiment]


def test_prompts_are_measured_on_every_row_of_the_study_csv() -> None:
    config, bundle = nrp()
    rows = csv_rows(config, Study.STUDY1)
    sizes = prompt_sizes(Design.CHAT, Study.STUDY1, config, bundle)
    assert sizes.source == f"{len(rows):,} rows"
    # Turn 1 of study 1, counted here by hand from the CSV: the setup and the prior question (the
    # survey's <br> shown as a new line) around the study file's fixed wording.
    fixed = len("\n\n") * 2 + len("Answer with just a number (0, 1, 2, or 3).")

    def shown(value: str) -> str:
        return value.replace("<br> ", "\n").replace("<br>", "\n")

    by_hand = statistics.fmean(
        len(shown(row["story_setup"])) + len(shown(row["priorQ"])) + fixed for row in rows
    )
    assert sizes.turns[0] == pytest.approx(by_hand)


def test_a_conversation_reads_every_earlier_question_and_reply() -> None:
    config, bundle = nrp()
    target = cell(config, Study.STUDY1, Experiment.EXP1, "gemma-2-2b")
    first, second, third = cell_request_kinds(target, target.model, config, bundle)
    sizes = prompt_sizes(Design.CHAT, Study.STUDY1, config, bundle)
    # Each turn adds its own question and the previous reply at its cap.
    assert second.prompt_tokens - first.prompt_tokens == pytest.approx(
        sizes.turns[1] / c.CHARS_PER_TOKEN + sizes.answer_budget
    )
    assert third.prompt_tokens - second.prompt_tokens == pytest.approx(
        sizes.turns[2] / c.CHARS_PER_TOKEN + sizes.answer_budget
    )
    assert first.planned_output_tokens == first.output_budget == 128  # jobs/studies/chat/study1.yaml
    assert all(k.sampled for k in (first, second, third))


def test_the_completion_forms_requests_each_read_only_their_own_prompt() -> None:
    # The researchers' Study 1 design: two independent raw prompts per row, no conversation to grow.
    config, bundle = nrp(Design.RESEARCHERS)
    target = cell(config, Study.STUDY1, Experiment.EXP1, "gemma-2-2b")
    quantity, knowledge = cell_request_kinds(target, target.model, config, bundle)
    sizes = prompt_sizes(Design.RESEARCHERS, Study.STUDY1, config, bundle)
    assert requests_per_row(Design.RESEARCHERS, Study.STUDY1, bundle).counts[Experiment.EXP1] == 2
    for kind, own in zip((quantity, knowledge), sizes.turns, strict=True):
        assert kind.prompt_tokens == pytest.approx(own / c.CHARS_PER_TOKEN + c.CHAT_TEMPLATE_TOKENS)
        assert kind.output_budget == 100  # max_tokens_text
    assert (quantity.name, knowledge.name) == ("study1 exp1 request 1", "study1 exp1 request 2")


def test_joint_completion_computes_one_sequence_per_option_and_nothing_reasons() -> None:
    # The researchers' rule scores each option as prompt+option with prompt logprobs, which vLLM computes
    # without its prefix cache: a Study 2 row is one request of eight full sequences. gpt-oss in their
    # design reads the raw prompt like any model: no analysis channel, no sampling.
    config, bundle = nrp(Design.RESEARCHERS)
    sizes = prompt_sizes(Design.RESEARCHERS, Study.STUDY2, config, bundle)
    assert sizes.exp2_sequences == 8
    assert prompt_sizes(Design.RESEARCHERS, Study.STUDY1, config, bundle).exp2_sequences == (4 * 11 + 2) / 5
    for model in ("gemma-2-2b", "gpt-oss-120b"):
        target = cell(config, Study.STUDY2, Experiment.EXP2, model)
        (kind,) = cell_request_kinds(target, target.model, config, bundle)
        assert (kind.per_row, kind.sampled, kind.planned_output_tokens, kind.output_budget) == (
            1,
            False,
            1,
            1,
        )
        assert kind.prompt_tokens == pytest.approx(
            8 * (sizes.exp2 / c.CHARS_PER_TOKEN + c.CHAT_TEMPLATE_TOKENS)
        )
    gpt_oss = cell(config, Study.STUDY1, Experiment.EXP1, "gpt-oss-20b")
    assert {k.output_budget for k in cell_request_kinds(gpt_oss, gpt_oss.model, config, bundle)} == {100}


def test_a_reasoning_model_plans_its_reasoning_and_is_bounded_by_its_budget() -> None:
    config, bundle = nrp()
    gemma = cell(config, Study.STUDY2, Experiment.EXP2, "gemma-2-2b")
    gpt_oss = cell(config, Study.STUDY2, Experiment.EXP2, "gpt-oss-120b")
    (scored,) = cell_request_kinds(gemma, gemma.model, config, bundle)
    (reasoned,) = cell_request_kinds(gpt_oss, gpt_oss.model, config, bundle)
    # Scoring fixed options reads one token and is asked once per row.
    assert (scored.planned_output_tokens, scored.output_budget, scored.sampled) == (1, 1, False)
    # After reasoning: the analysis is written (and sampled), then the prompt is read again to score.
    model = gpt_oss.model
    assert reasoned.sampled
    assert reasoned.planned_output_tokens == 1 + model.planned_reasoning_tokens
    assert reasoned.output_budget == 1 + model.reasoning_tokens
    assert reasoned.prompt_tokens == pytest.approx(2 * scored.prompt_tokens)
    assert 0 < model.planned_reasoning_tokens < model.reasoning_tokens


def test_extraction_reads_every_reply_at_its_cap_on_the_coder() -> None:
    config, bundle = nrp()
    coder = config.extractor_model()
    assert coder is not None
    studied = cell(config, Study.STUDY1, Experiment.EXTRACTION, "gpt-oss-20b")
    (kind,) = cell_request_kinds(studied, coder, config, bundle)
    sizes = prompt_sizes(Design.CHAT, Study.STUDY1, config, bundle)
    assert sizes.extraction_replies == 3  # response_story, response_speech, response_knowledge
    assert kind.prompt_tokens == pytest.approx(
        sizes.extraction_without_replies / c.CHARS_PER_TOKEN
        + c.CHAT_TEMPLATE_TOKENS
        + 3 * sizes.answer_budget
    )
    assert (
        kind.planned_output_tokens == kind.output_budget == sizes.extraction_budget
    )  # the coder does not reason


def test_placeholders_without_rows_count_at_least_as_long_as_any_real_value() -> None:
    config, _ = nrp()
    longest = max(len(v) for study in Study for row in csv_rows(config, study) for v in row.values())
    assert longest <= c.ASSUMED_FIELD_CHARS
    # A stack reading its CSVs from the input claim has no rows to measure: it says so.
    claim = GraceConfig.parse(base_config(experiments={}))
    plan = gpu_hour_plan(claim, load_study_bundle(claim))
    assert plan.prompts == {
        "researchers/study1": {"measuredOn": "template only"},
        "researchers/study2": {"measuredOn": "template only"},
    }


# A study file is read once, through the worker's models, when the bundle is loaded.
REFUSED_STUDY_FILES = {
    "no prompt": (
        "name: study2\nrequired_columns: [a]\n",
        "jobs/studies/researchers/study2.yaml: prompt: Field required.",
    ),
    "not YAML": ("name: [study2\n", "jobs/studies/researchers/study2.yaml is not valid YAML (ParserError)."),
    "not a mapping": ("- study2\n", "jobs/studies/researchers/study2.yaml must be a YAML mapping."),
    "bad extraction": (
        "name: study2\nrequired_columns: [a]\nprompt: {user: '{a}'}\nextraction: {prompt: {user: x}}\n",
        "jobs/studies/researchers/study2.yaml: extraction.schema: Field required.",
    ),
    "empty probability questions": (
        "name: study2\nrequired_columns: [a]\nprompt: {user: '{a}'}\nprobability: {questions: []}\n",
        "jobs/studies/researchers/study2.yaml: study study2: probability.questions: Tuple should have "
        "at least 1 item after validation, not 0.",
    ),
}


@pytest.mark.parametrize(("text", "message"), list(REFUSED_STUDY_FILES.values()), ids=REFUSED_STUDY_FILES)
def test_a_study_file_the_worker_would_refuse_is_one_sentence_naming_it(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "studies" / "researchers").mkdir(parents=True)
    (tmp_path / "studies" / "researchers" / "study2.yaml").write_text(text)
    config = GraceConfig.parse(base_config(experiments={"studies": ["study2"]}))
    with pytest.raises(ConfigError) as refused:
        load_study_bundle(config, jobs_dir=tmp_path)
    assert str(refused.value) == message
