"""Experiment 2, `python -m worker probs`: the probability the model gives every allowed answer.

A probability question is a chat prompt plus a closed set of answer options. The probability of an option
is P(option text | prompt, answer prefix) under the model, read from the server's log-probabilities:

- `first-token`: one `/v1/completions` request with `max_tokens=1, logprobs=N` on the prompt's token ids;
  each option's probability is its first token's. Exact only when every option (and every surface variant
  of it) is ONE token for this model's tokenizer, all distinct, and all inside the top N.
- `continuation`: for every option, the summed log-probability of the option's tokens appended to the
  prompt, from `prompt_logprobs` (one batched request per question). Exact for options of any length.
- `auto` (default): decide per question from the server's tokenizer; use `first-token` only when it is
  exact, and fall back to `continuation` for a row where an option fell outside the top N.
- A server without `/tokenize` (a hosted API): chat completions with `top_logprobs`, matched by text. The
  meta file says the result is approximate (no token ids, no answer prefix, multi-token options unseen).
- A study whose `probability.scoring` is `joint-completion` is scored by the researchers' own rule
  instead (`joint_completion.py`): the raw prompt with no chat template, prompt+option tokenized as one
  text, the options as written; none of the above applies to it, and the flags that choose it are refused.

The prompt is rendered by the SERVER's chat template (`POST /tokenize` with `messages` and
`add_generation_prompt`), then the answer prefix is appended (for gpt-oss the harmony final-channel header,
so the answer is read after the reasoning channel, not at its first token). The same token ids are sent
for scoring, and recorded with the decoded prompt text, so anyone can recompute every number.

Surface variants: "yes", " yes", "Yes", " Yes" are the same answer. Each option's variants are tokenized
AFTER the real generation prompt (so the tokenizer decides whether the answer position takes a leading
space), each distinct token sequence is counted once, and the variants summed are recorded. When one
option's tokens are a proper prefix of another's ("was" and "was"+"n't"), the shorter option counts only
when the answer does not continue into the longer one, so the options stay disjoint events.

The questions come from the study file (`worker.studies.probability_section`). This module is the
pipeline: its columns and parameters, and per question the choice of scoring. The units it chooses from,
and the rest, are beside it: the settings (`probs_config.py`); what is learned from the server before the
first row (`preparation.py`, one `ProbsSetup`); prompts in token ids (`prompt_tokens.py`); the scoring
methods (`first_token.py`, `continuation.py`, `chat_top_logprobs.py`), each giving a `QuestionResult`
(`question_result.py`); option tokenization rules (`answer_tokens.py`); reasoning models (`reasoning.py`).
The arithmetic (log-sum-exp, entropy in bits, mean/std) is in `worker.server.logprobs`.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from worker.errors import InputError, RequestRejected, RowFailure, WorkerError, validation_problem
from worker.pipelines.probs.answer_tokens import VariantPolicy
from worker.pipelines.probs.chat_top_logprobs import ChatTopLogprobsScorer
from worker.pipelines.probs.continuation import ContinuationScorer
from worker.pipelines.probs.first_token import FirstTokenScorer
from worker.pipelines.probs.joint_completion import (
    ENTROPY_FLOOR,
    RULE,
    JointCompletionResult,
    JointCompletionScorer,
    probe_tokenizer,
)
from worker.pipelines.probs.preparation import ProbsSetup, planned_method, prepare_scoring
from worker.pipelines.probs.probs_config import (
    DEFAULT_REASONING_MAX_TOKENS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_LOGPROBS,
    MAX_TOP_LOGPROBS,
    Method,
    ProbsConfig,
)
from worker.pipelines.probs.prompt_tokens import chat_prompt_ids, detokenize
from worker.pipelines.probs.question_result import REASONING_IDS_SUFFIX, REASONING_SUFFIX, QuestionResult
from worker.pipelines.probs.reasoning import FORMATS, Reasoning, ReasoningMode, generate_reasoning
from worker.run.pipeline import DEFAULT_ERROR_COLUMN, Pipeline
from worker.run.sampling import Sample
from worker.server.client import ModelClient
from worker.studies.definition import Study, load_study, sampling_settings
from worker.studies.probability_section import Marginal, Question, Scoring, consistency_for, questions_for

__all__ = ["ProbsPipeline", "add_arguments", "build"]

ENTROPY_UNIT = "bits"
# The served model that was scored, first among the added columns as in every pipeline's output.
MODEL_NAME_COLUMN = "model_name"


class ProbsPipeline(Pipeline):
    """Experiment 2 as a runner Pipeline: one row -> the probability columns of every question."""

    name = "probs"
    error_column = DEFAULT_ERROR_COLUMN

    def __init__(
        self,
        study: Study,
        questions: Sequence[Question],
        config: ProbsConfig,
        *,
        marginals: Sequence[Marginal] = (),
        samples_per_row: int = 1,
        base_seed: int = 0,
    ) -> None:
        self.study = study
        self.questions = list(questions)
        self.marginals = list(marginals)
        self.config = config
        # Scoring fixed options after a fixed prompt samples nothing: N samples would be N copies of the
        # same numbers, so one per row. Only after-reasoning generates (the analysis), so only it samples.
        if samples_per_row != 1 and config.mode is not ReasoningMode.AFTER_REASONING:
            raise ValueError("only after-reasoning scoring generates anything to sample")
        self._samples_per_row = samples_per_row
        self._base_seed = base_seed
        self._setup: ProbsSetup | None = None  # learned from the server in prepare()
        # The researchers' rule: every question of the section, or none (the scoring is the section's).
        self.joint_completion = any(q.scoring is Scoring.JOINT_COMPLETION for q in self.questions)
        self._joint_findings: dict[str, Any] = {}  # learned in prepare() under joint-completion

    # -- what the runner asks --
    @property
    def samples_per_row(self) -> int:
        return self._samples_per_row

    @property
    def base_seed(self) -> int:
        return self._base_seed

    @property
    def required_columns(self) -> list[str]:
        return list(self.study.required_columns)

    @property
    def output_columns(self) -> list[str]:
        reasoning = (
            (REASONING_SUFFIX, REASONING_IDS_SUFFIX)
            if self.config.mode is ReasoningMode.AFTER_REASONING
            else ()
        )
        return [
            MODEL_NAME_COLUMN,
            *(
                column
                for question in self.questions
                for column in (*question.output_columns, *(f"{question.name}{s}" for s in reasoning))
            ),
            *(column for marginal in self.marginals for column in marginal.columns.values()),
            DEFAULT_ERROR_COLUMN,
        ]

    @property
    def provenance_columns(self) -> list[str]:
        """JSON evidence and prompts, written after every analysis column."""
        return [column for question in self.questions for column in question.provenance_columns]

    def parameters(self) -> dict[str, Any]:
        """Everything that determines the numbers, for the checkpoint header and the meta file."""
        if self.joint_completion:
            return self._joint_completion_parameters()
        return {
            "study": self.study.name,
            "design": self.study.design,
            "method": self.config.method.value,
            "top_logprobs": self.config.top_logprobs,
            "temperature": self.config.temperature,
            "answer_prefix": self.config.direct_prefix,
            "reasoning": self._reasoning_parameters(),
            "variants": self.config.variants.value,
            "entropy_unit": ENTROPY_UNIT,
            "questions": [
                {
                    "name": q.name,
                    "system": q.system,
                    "user": q.user,
                    "options": [o.model_dump(exclude_none=True) for o in q.options],
                }
                for q in self.questions
            ],
            "consistency": [
                {"name": m.name, "from": m.source, "groups": {k: list(v) for k, v in m.groups.items()}}
                for m in self.marginals
            ],
        }

    def _joint_completion_parameters(self) -> dict[str, Any]:
        return {
            "study": self.study.name,
            "design": self.study.design,
            "scoring": Scoring.JOINT_COMPLETION.value,
            "rule": RULE,
            "temperature": self.config.temperature,
            "entropy_unit": ENTROPY_UNIT,
            "entropy_floor": ENTROPY_FLOOR,
            "questions": [
                {
                    "name": q.name,
                    "prompt": q.user,
                    "options": [o.model_dump(exclude_none=True) for o in q.options],
                }
                for q in self.questions
            ],
            "consistency": [
                {"name": m.name, "from": m.source, "groups": {k: list(v) for k, v in m.groups.items()}}
                for m in self.marginals
            ],
        }

    def _reasoning_parameters(self) -> dict[str, Any]:
        config = self.config
        if config.mode is None:
            return {"mode": "none", "note": "not a reasoning model: the answer follows the generation prompt"}
        if config.mode is ReasoningMode.DIRECT:
            return {
                "mode": config.mode.value,
                "format": config.reasoning_format,
                "effort": config.reasoning_effort,
                "note": "no reasoning: the answer is read right after the generation prompt (forced)",
            }
        return {
            "mode": config.mode.value,
            "format": config.reasoning_format,
            "effort": config.reasoning_effort,
            "max_tokens": config.reasoning_max_tokens,
            "temperature": config.temperature,
            "seed": "each row's sample seed (the seed column)",
            "note": "the model's own analysis channel is generated first; the answer is read after it",
        }

    async def prepare(self, client: ModelClient) -> None:
        """Learn from the server: is /tokenize there, how are options tokenized, what does T do."""
        if self.joint_completion:
            self._joint_findings = await probe_tokenizer(client)
            return
        self._setup = await prepare_scoring(self.config, self.questions, client)

    def server_findings(self) -> dict[str, Any]:
        if self.joint_completion:
            return self._joint_findings
        return {} if self._setup is None else self._setup.findings

    async def process(
        self,
        row_index: int,
        row: Mapping[str, Any],
        client: ModelClient,
        sample: Sample,
    ) -> dict[str, Any]:
        """Ask every question of one row concurrently; the client bounds the requests in flight."""
        values = {column: "" if row[column] is None else str(row[column]) for column in self.required_columns}
        results = await asyncio.gather(
            *(self._ask(q, values, client, sample.seed) for q in self.questions), return_exceptions=True
        )
        out: dict[str, Any] = {MODEL_NAME_COLUMN: client.options.model_name}
        normalised: dict[str, dict[str, float]] = {}
        for question, result in zip(self.questions, results, strict=True):
            if isinstance(result, RequestRejected) and result.fatal:
                raise result
            if isinstance(result, WorkerError):
                # The other questions' columns are kept: a rerun of the row redoes them all anyway.
                raise RowFailure(row_index, f"question {question.name}: {result}", columns=out)
            if isinstance(result, BaseException):
                raise result
            out.update(result.columns(question))
            normalised[question.name] = result.normalised
        for marginal in self.marginals:
            out.update(marginal.values(normalised[marginal.source]))
        return out

    # -- one question --
    async def _ask(
        self, question: Question, row: Mapping[str, str], client: ModelClient, seed: int
    ) -> QuestionResult | JointCompletionResult:
        """Score one question by the method its options allow (or the one asked for)."""
        if question.scoring is Scoring.JOINT_COMPLETION:
            prompt = question.completion_prompt(row, self.study)
            return await JointCompletionScorer().score(question, prompt, client)
        setup, config = self._prepared(), self.config
        messages = question.messages(row, self.study)
        if not setup.tokenize_available:
            fallback = ChatTopLogprobsScorer(
                config.top_logprobs, config.temperature, config.variants, setup.chat
            )
            return await fallback.score(question, messages, client)
        reasoning, prompt_ids = await self._answer_prompt(setup, messages, client, seed)
        prompt_text = await detokenize(prompt_ids, client)
        plan = setup.plans[question.name]
        if planned_method(config.method, plan) is Method.FIRST_TOKEN:
            first_token = FirstTokenScorer(
                config.top_logprobs, config.temperature, setup.scores_requested_ids
            )
            result = await first_token.score(plan, prompt_ids, prompt_text, client)
            # auto promises exact numbers: a variant outside the top N means the option is only a lower
            # bound, so that row is scored again by continuation.
            if result.complete or config.method is not Method.AUTO:
                return replace(result, reasoning=reasoning)
        result = await ContinuationScorer(config.temperature).score(plan, prompt_ids, prompt_text, client)
        return replace(result, reasoning=reasoning)

    async def _answer_prompt(
        self, setup: ProbsSetup, messages: list[dict[str, str]], client: ModelClient, seed: int
    ) -> tuple[Reasoning | None, list[int]]:
        """The prompt ids at which the answer is read; after reasoning, with the analysis generated first."""
        rendered = await chat_prompt_ids(
            messages, client, chat=setup.chat, reasoning_effort=self.config.reasoning_effort
        )
        tokens = setup.reasoning_tokens
        if tokens is None:
            return None, [*rendered, *setup.answer_prefix_ids]
        opened = [*rendered, *tokens.analysis_prefix]
        reasoning = await generate_reasoning(
            client,
            opened,
            tokens.analysis_end,
            max_tokens=self.config.reasoning_max_tokens,
            temperature=self.config.temperature,
            seed=seed,
        )
        return reasoning, [*opened, *reasoning.token_ids, *tokens.analysis_end, *tokens.answer_prefix]

    def _prepared(self) -> ProbsSetup:
        if self._setup is None:
            raise RuntimeError("ProbsPipeline.process() before prepare()")
        return self._setup


# ---- CLI -------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags `probs` adds to the shared ones (input, output, endpoint, model, study, ...)."""
    parser.add_argument(
        "--method",
        choices=[m.value for m in Method if m is not Method.CHAT_TOP_LOGPROBS],
        default=Method.AUTO.value,
        help="first-token (exact only for single-token options), continuation (exact), or auto (default).",
    )
    parser.add_argument(
        "--tokens",
        help="Comma-separated answer options for one generic question over the study's prompt "
        "(as a Job drafted in the researchers' plans asks, e.g. 0,1,2,3,yes,no); without it the study's "
        "probability questions are asked.",
    )
    parser.add_argument(
        "--logprobs",
        type=int,
        default=DEFAULT_TOP_LOGPROBS,
        help=f"Top candidates read by the first-token method (1-{MAX_TOP_LOGPROBS}, vLLM's cap).",
    )
    parser.add_argument(
        "--answer-prefix",
        default="",
        help="Text appended after the chat template's generation prompt, before the answer "
        "(gpt-oss: '<|channel|>final<|message|>'; see the model catalog).",
    )
    parser.add_argument(
        "--variants",
        choices=[v.value for v in VariantPolicy],
        default=VariantPolicy.CASE_AND_SPACE.value,
        help="Surface forms counted as the same answer (default: case-and-space).",
    )
    reasoning = parser.add_argument_group("reasoning models (gpt-oss)")
    reasoning.add_argument(
        "--reasoning-format",
        choices=sorted(FORMATS),
        help="The model's reasoning format; omit for a model that does not reason.",
    )
    reasoning.add_argument(
        "--reasoning-mode",
        choices=[m.value for m in ReasoningMode],
        help="direct: read the answer right after the generation prompt (no reasoning); after-reasoning "
        "(default with --reasoning-format): generate the model's analysis first, then read the answer.",
    )
    reasoning.add_argument(
        "--reasoning-max-tokens",
        type=int,
        default=DEFAULT_REASONING_MAX_TOKENS,
        help=f"Token budget of the generated analysis (default {DEFAULT_REASONING_MAX_TOKENS}).",
    )
    reasoning.add_argument(
        "--reasoning-effort",
        choices=("low", "medium", "high"),
        help="Passed to the chat template (gpt-oss writes it into its system message).",
    )


def build(args: argparse.Namespace) -> ProbsPipeline:
    """The pipeline for parsed arguments; InputError (one sentence) for anything unusable."""
    study = load_study(args.study)
    tokens = None
    if args.tokens is not None:
        tokens = tuple(t for t in (part.strip() for part in args.tokens.split(",")) if t)
        if len(tokens) < 2:
            raise InputError(f"--tokens {args.tokens!r}: give at least two comma-separated options.")
    sampling = sampling_settings(study, args)
    after_reasoning = args.reasoning_format is not None and args.reasoning_mode in (
        None,
        ReasoningMode.AFTER_REASONING.value,
    )
    if not after_reasoning and args.samples is not None and args.samples != 1:
        raise InputError(
            f"--samples {args.samples}: probs reads the log-probabilities of fixed options after a fixed "
            "prompt and samples nothing, so every sample would be the same numbers; use 1 (only "
            "--reasoning-mode after-reasoning generates, and samples, the analysis before the answer)."
        )
    if args.temperature is not None:
        temperature = args.temperature
    elif after_reasoning:
        temperature = sampling.temperature  # the analysis is generated like an Experiment 1 answer
    else:
        # Nothing is generated; 1.0 is the value under which vLLM's raw and processed log-probabilities
        # agree, so the numbers do not depend on the server's logprobs mode.
        temperature = DEFAULT_TEMPERATURE
    try:
        config = ProbsConfig(
            method=Method(args.method),
            top_logprobs=args.logprobs,
            temperature=temperature,
            answer_prefix=args.answer_prefix,
            variants=VariantPolicy(args.variants),
            reasoning_format=args.reasoning_format,
            reasoning_mode=ReasoningMode(args.reasoning_mode) if args.reasoning_mode else None,
            reasoning_max_tokens=args.reasoning_max_tokens,
            reasoning_effort=args.reasoning_effort,
        )
    except ValidationError as err:
        problem = validation_problem(err)
        if not problem.location:  # a cross-field rule: its message names the flags
            raise InputError(f"{problem.sentence}") from err
        flag = {
            "top_logprobs": "--logprobs",
            "temperature": "--temperature",
            "reasoning_max_tokens": "--reasoning-max-tokens",
        }.get(problem.field, "probs")
        raise InputError(problem.for_flag(flag)) from err
    questions = questions_for(study, tokens)
    if any(q.scoring is Scoring.JOINT_COMPLETION for q in questions):
        _refuse_chat_scoring_flags(args, study)
    return ProbsPipeline(
        study,
        questions,
        config,
        marginals=consistency_for(study, questions, tokens),
        samples_per_row=sampling.samples_per_row if after_reasoning else 1,
        base_seed=sampling.base_seed,
    )


def _refuse_chat_scoring_flags(args: argparse.Namespace, study: Study) -> None:
    """InputError naming a flag that only chat scoring reads, given with a joint-completion study (the
    researchers' rule fixes the prompt form, the options and the temperature itself)."""
    given = [
        flag
        for flag, differs in (
            ("--method", args.method != Method.AUTO.value),
            ("--logprobs", args.logprobs != DEFAULT_TOP_LOGPROBS),
            ("--answer-prefix", bool(args.answer_prefix)),
            ("--variants", args.variants != VariantPolicy.CASE_AND_SPACE.value),
            ("--reasoning-format", args.reasoning_format is not None),
            ("--reasoning-mode", args.reasoning_mode is not None),
            ("--reasoning-effort", args.reasoning_effort is not None),
            ("--temperature", args.temperature not in (None, DEFAULT_TEMPERATURE)),
        )
        if differs
    ]
    if given:
        raise InputError(
            f"{given[0]}: study {study.name} is scored by joint-completion (the researchers' rule: the raw "
            "prompt, the options as written, no chat template and no temperature), which this flag does not "
            "change; leave it out."
        )
