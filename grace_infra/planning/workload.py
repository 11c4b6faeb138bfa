"""What one matrix cell asks of a model server, in tokens: its kinds of request, how many of each per CSV
row, how long their prompts are, and how many tokens each may and is expected to generate.

The GPU-hour plan and the Jobs' deadlines price these with grace_infra/planning/serving_speed.py.

Prompts are measured, not guessed: every row of the study's CSV (when the stack ships it) is rendered with
the worker's own prompt code (worker.studies: definition, probability_section, extraction_section) and
the mean length taken, at CHARS_PER_TOKEN characters a token plus the chat template's framing. A stack that
reads its CSV from the input claim has no rows at render time: each placeholder then counts at
ASSUMED_FIELD_CHARS. Replies not yet written (earlier turns of a conversation, the replies extraction
reads) count at their full token budget.

Output: a study's max_tokens is a cap, and the plan counts every reply at its cap. A reasoning model also
writes its analysis first: the plan counts its `planned_reasoning_tokens`, the deadlines its whole
`reasoning_tokens` budget. Experiment 2 scores fixed options (one token read, no text written) unless it
lets the model reason first.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from grace_infra import constants as c
from grace_infra.config.catalog import ModelSpec
from grace_infra.config.stack_config import Design, Experiment, GraceConfig, Study
from grace_infra.planning.matrix import MatrixCell, reasons_in_studies, samples_exp2
from grace_infra.planning.study_bundle import StudyBundle, StudyFile, input_pod_path, requests_per_row
from worker.studies.definition import GenerationParams, PromptForm
from worker.studies.extraction_section import ExtractionSection
from worker.studies.probability_section import Scoring, questions_for

__all__ = ["PromptSizes", "RequestKind", "cell_request_kinds", "prompt_sizes"]


@dataclass(frozen=True)
class RequestKind:
    """One kind of request a cell sends: `per_row` of them for every row (before samples)."""

    name: str
    per_row: int
    prompt_tokens: float  # mean over the study's rows, chat template included
    planned_output_tokens: float  # what the plan counts
    output_budget: int  # what one request may generate at most (the deadlines' count)
    sampled: bool  # repeated for every sample of the row


@dataclass(frozen=True)
class PromptSizes:
    """Mean prompt length in characters of each kind of request one study sends, and what it rests on."""

    turns: tuple[float, ...]  # exp1 user turn k alone (system text included in the first)
    exp2: float  # one probability question
    extraction_without_replies: float  # the extraction prompt with its reply placeholders empty
    extraction_replies: int  # reply placeholders the extraction prompt shows
    answer_budget: int  # exp1 max_tokens per reply
    extraction_budget: int  # extraction max_tokens
    source: str  # "<n> rows", "template only" or "no study file"
    # exp1's requests are independent (the completion form): none carries another's question or reply
    independent: bool = False
    # Sequences one exp2 request computes: 1 for chat scoring (every option read after one prompt); under
    # joint-completion one per option (the prompt with the option appended, each computed in full: vLLM
    # reads no prefix cache for prompt logprobs, docs/probabilities.md), the questions' mean.
    exp2_sequences: float = 1.0


def _tokens(chars: float) -> float:
    return chars / c.CHARS_PER_TOKEN + c.CHAT_TEMPLATE_TOKENS


def _rows(text: str | None, columns: Sequence[str]) -> list[dict[str, str]]:
    if text is None:
        return [dict.fromkeys(columns, "x" * c.ASSUMED_FIELD_CHARS)]
    return list(csv.DictReader(io.StringIO(text)))


# A study without a study file: what the worker's defaults send (worker.studies.definition.GenerationParams,
# worker.studies.extraction_section.ExtractionSection) around prompts of ASSUMED_PROMPT_CHARS.
_NO_STUDY_FILE = PromptSizes(
    turns=(c.ASSUMED_PROMPT_CHARS,),
    exp2=c.ASSUMED_PROMPT_CHARS,
    extraction_without_replies=c.ASSUMED_PROMPT_CHARS,
    extraction_replies=1,
    answer_budget=GenerationParams().max_tokens,
    extraction_budget=ExtractionSection.model_fields["generation"]
    .get_default(call_default_factory=True)
    .max_tokens,
    source="no study file",
)


@cache
def _measure(study_file: StudyFile, csv_text: str | None, tokens: tuple[str, ...]) -> PromptSizes:
    # Cached (a StudyFile compares by its text): a render prices every cell of every model.
    study, section = study_file.definition, study_file.extraction
    rows = _rows(csv_text, study.required_columns)
    rendered = [study.render(row) for row in rows]
    turns = tuple(
        statistics.fmean(len(r.users[k]) + (len(r.system or "") if k == 0 else 0) for r in rendered)
        for k in range(len(rendered[0].users))
    )
    # The study's own questions, else the generic --tokens question.
    questions = study_file.questions or (questions_for(study, tokens) if tokens else ())
    exp2 = statistics.fmean(
        sum(len(m["content"]) for m in q.messages(row, study)) for q in questions for row in rows
    ) if questions else c.ASSUMED_PROMPT_CHARS  # fmt: skip
    extraction, replies = float(c.ASSUMED_PROMPT_CHARS), 1
    extraction_budget = _NO_STUDY_FILE.extraction_budget
    if section is not None:
        replies, extraction_budget = len(section.reply_columns), section.generation.max_tokens
        # The worker's own rendering with the replies empty; the caller adds them at their token budget.
        shown = [
            {column: row.get(column, "") for column in section.prompt.columns}
            | dict.fromkeys(section.reply_columns, "")
            for row in rows
        ]
        extraction = statistics.fmean(sum(len(m["content"]) for m in section.render(r, study)) for r in shown)
    source = f"{len(rows):,} rows" if csv_text is not None else "template only"
    joint = [q for q in questions if q.scoring is Scoring.JOINT_COMPLETION]
    sequences = statistics.fmean(len(q.options) for q in joint) if joint else 1.0
    return PromptSizes(
        turns,
        exp2,
        extraction,
        replies,
        study.generation.max_tokens,
        extraction_budget,
        source,
        independent=study.prompt.form is PromptForm.COMPLETION,
        exp2_sequences=sequences,
    )


def prompt_sizes(design: Design, study: Study, config: GraceConfig, bundle: StudyBundle) -> PromptSizes:
    """The design's prompt lengths for the study, measured on its CSV rows when the bundle holds them."""
    study_file = bundle.study_file(design, study)
    if study_file is None:
        return _NO_STUDY_FILE
    tokens = () if study_file.questions else tuple(config.jobs.tokens)
    return _measure(study_file, bundle.files.get(input_pod_path(study, config)), tokens)


def cell_request_kinds(
    cell: MatrixCell, server: ModelSpec, config: GraceConfig, bundle: StudyBundle
) -> list[RequestKind]:
    """The requests of one cell on `server`, the model that answers them: the coder for extraction,
    else the cell's own model. As many per row as `requests_per_row` counts."""
    study, experiment, studied = cell.study, cell.experiment, cell.model
    sizes = prompt_sizes(studied.design, study, config, bundle)
    count = requests_per_row(studied.design, study, bundle).counts[experiment]
    answer = sizes.answer_budget
    reasons = reasons_in_studies(studied)
    reasoning_planned = studied.planned_reasoning_tokens if reasons else 0
    reasoning_budget = studied.reasoning_tokens if reasons else 0
    if experiment is Experiment.EXP1:
        kinds = []
        context = 0.0
        for k in range(count):
            own = sizes.turns[min(k, len(sizes.turns) - 1)]
            if sizes.independent:
                prompt_tokens, name = _tokens(own), f"{study} exp1 request {k + 1}"
            else:
                # Each turn reads the conversation so far: earlier questions and earlier replies.
                context += own
                prompt_tokens, name = _tokens(context) + k * answer, f"{study} exp1 turn {k + 1}"
            kinds.append(
                RequestKind(
                    name=name,
                    per_row=1,
                    prompt_tokens=prompt_tokens,
                    planned_output_tokens=answer + reasoning_planned,
                    output_budget=answer + reasoning_budget,
                    sampled=True,
                )
            )
        return kinds
    if experiment is Experiment.EXP2:
        after_reasoning = samples_exp2(studied)  # the analysis is generated, and sampled
        return [
            RequestKind(
                name=f"{study} exp2",
                per_row=count,
                # After reasoning the prompt is read twice: to write the analysis, then to score the answer.
                prompt_tokens=_tokens(sizes.exp2) * (2 if after_reasoning else 1) * sizes.exp2_sequences,
                planned_output_tokens=1 + (reasoning_planned if after_reasoning else 0),
                output_budget=1 + (reasoning_budget if after_reasoning else 0),
                sampled=after_reasoning,
            )
        ]
    replies_tokens = sizes.extraction_replies * answer  # the replies it reads, each at exp1's cap
    return [
        RequestKind(
            name=f"{study} extraction",
            per_row=count,
            prompt_tokens=_tokens(sizes.extraction_without_replies) + replies_tokens,
            planned_output_tokens=sizes.extraction_budget + server.planned_reasoning_tokens,
            output_budget=sizes.extraction_budget + server.reasoning_tokens,
            sampled=True,
        )
    ]
