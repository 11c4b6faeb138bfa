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

The prompt is rendered by the SERVER's chat template (`POST /tokenize` with `messages` and
`add_generation_prompt`), then the answer prefix is appended (for gpt-oss the harmony final-channel header,
so the answer is read after the reasoning channel, not at its first token). The same token ids are sent
for scoring, and recorded with the decoded prompt text, so anyone can recompute every number.

Surface variants: "yes", " yes", "Yes", " Yes" are the same answer. Each option's variants are tokenized
AFTER the real generation prompt (so the tokenizer decides whether the answer position takes a leading
space), each distinct token sequence is counted once, and the variants summed are recorded. When one
option's tokens are a proper prefix of another's ("was" and "was"+"n't"), the shorter option counts only
when the answer does not continue into the longer one, so the options stay disjoint events.

The questions come from the study file (`worker.studies.probability_section`); option tokenization
rules are in `answer_tokens.py`; response parsing and the arithmetic (log-sum-exp, entropy in bits,
mean/std) in `worker.server.logprobs`. This module owns the requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from worker.errors import InputError, RequestRejected, ResponseError, RowFailure, WorkerError
from worker.pipelines.probs.answer_tokens import OptionPlan, VariantPolicy, plan_options, surface_variants
from worker.pipelines.probs.reasoning import (
    FORMATS,
    Reasoning,
    ReasoningFormat,
    ReasoningMode,
    generate_reasoning,
)
from worker.run.runner import DEFAULT_ERROR_COLUMN
from worker.run.sampling import Sample
from worker.server import logprobs as lp
from worker.server.chat_messages import TOKENIZE_PATH, MessageBuilder, probe_system_role, tokenized_ids
from worker.server.client import ModelClient
from worker.studies.definition import Study, load_study, sampling_settings
from worker.studies.probability_section import Marginal, OptionSpec, Question, consistency_for, questions_for

__all__ = ["HELP", "Method", "ProbsConfig", "ProbsPipeline", "add_arguments", "build"]

HELP = "Experiment 2: the probability of every allowed answer, from the model's log-probabilities."

COMPLETIONS_PATH = "/v1/completions"
DETOKENIZE_PATH = "/detokenize"

# vLLM's --max-logprobs default: a request for more top candidates is refused with a 400.
MAX_TOP_LOGPROBS = 20
DEFAULT_TOP_LOGPROBS = 20  # the researchers' original Jobs asked for 5, dropping options ranked 6th or lower
# gpt-oss's analysis channel for a short question: the catalog's reasoning budget
# (grace_infra/config/catalog.py).
DEFAULT_REASONING_MAX_TOKENS = 2048
# vLLM returns raw log-probabilities (logprobs_mode=raw_logprobs) unless the server is started otherwise,
# so temperature does not change them; 1.0 is the value under which "raw" and "processed" agree anyway.
DEFAULT_TEMPERATURE = 1.0
# vLLM >= 0.30 scores requested token ids at any rank (`logprob_token_ids`), up to this many per request
# (vllm/sampling_params.py MAX_LOGPROB_TOKEN_IDS); older servers ignore the field and return the top N.
MAX_REQUESTED_TOKEN_IDS = 128
# A short fixed conversation whose rendering shows what the chat template puts before the answer.
PROBE_USER_MESSAGE = "Answer with one word."
ENTROPY_UNIT = "bits"
# The served model that was scored, first among the added columns as in every pipeline's output.
MODEL_NAME_COLUMN = "model_name"
# after-reasoning: each question's generated analysis and its token ids.
REASONING_SUFFIX = "_reasoning"
REASONING_IDS_SUFFIX = "_reasoning_token_ids"


class Method(StrEnum):
    """How an option's probability is read (`--method`), plus the approximate fallback's name."""

    FIRST_TOKEN = "first-token"  # noqa: S105 - a method name, not a secret
    CONTINUATION = "continuation"
    AUTO = "auto"
    CHAT_TOP_LOGPROBS = "chat-top-logprobs"  # never requested; recorded when /tokenize is missing


# ---- configuration ---------------------------------------------------------------------------------------


class ProbsConfig(BaseModel):
    """The `probs` subcommand's own settings (the shared run options live in worker.run.run_options)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Method = Field(default=Method.AUTO, description="first-token, continuation or auto.")
    top_logprobs: int = Field(
        default=DEFAULT_TOP_LOGPROBS, ge=1, le=MAX_TOP_LOGPROBS, description="--logprobs N (first-token)."
    )
    temperature: float = Field(default=DEFAULT_TEMPERATURE, ge=0, description="Sent with every request.")
    answer_prefix: str = Field(default="", description="Text appended after the generation prompt.")
    variants: VariantPolicy = Field(default=VariantPolicy.CASE_AND_SPACE, description="Surface variants.")
    reasoning_format: str | None = Field(
        default=None,
        description="The model's reasoning format (harmony for gpt-oss); None: not a reasoning model.",
    )
    reasoning_mode: ReasoningMode | None = Field(
        default=None, description="direct or after-reasoning; after-reasoning when a format is given."
    )
    reasoning_max_tokens: int = Field(
        default=DEFAULT_REASONING_MAX_TOKENS, gt=0, description="Token budget of the generated reasoning."
    )
    reasoning_effort: str | None = Field(
        default=None, description="Passed to the chat template (gpt-oss writes it into its system message)."
    )

    @model_validator(mode="after")
    def _reasoning_is_consistent(self) -> ProbsConfig:
        if self.reasoning_format is not None and self.reasoning_format not in FORMATS:
            raise ValueError(
                f"--reasoning-format {self.reasoning_format}: unknown (known: {', '.join(FORMATS)})"
            )
        if self.reasoning_mode is not None and self.reasoning_format is None:
            raise ValueError("--reasoning-mode needs --reasoning-format (the model's reasoning format)")
        if self.mode is ReasoningMode.AFTER_REASONING and self.answer_prefix:
            raise ValueError(
                "--answer-prefix applies to --reasoning-mode direct only: after reasoning, the format's own "
                "final-channel header opens the answer"
            )
        return self

    @property
    def format(self) -> ReasoningFormat | None:
        return FORMATS[self.reasoning_format] if self.reasoning_format else None

    @property
    def mode(self) -> ReasoningMode | None:
        """The reasoning mode in force: after-reasoning by default for a reasoning model, None otherwise."""
        if self.reasoning_format is None:
            return None
        return self.reasoning_mode or ReasoningMode.AFTER_REASONING

    @property
    def direct_prefix(self) -> str:
        """What follows the generation prompt when no reasoning is generated."""
        if self.answer_prefix or self.format is None:
            return self.answer_prefix
        return self.format.direct_answer_prefix

    @field_validator("method")
    @classmethod
    def _requestable(cls, method: Method) -> Method:
        if method is Method.CHAT_TOP_LOGPROBS:
            raise ValueError("--method chat-top-logprobs is chosen automatically when /tokenize is missing")
        return method


# ---- results ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuestionResult:
    """Everything recorded for one question of one row."""

    method: Method
    option_logprobs: dict[str, float]  # label -> natural log P(option | prompt); -inf when unseen
    absent: tuple[str, ...]  # labels with no variant among the top-N (first-token, chat fallback)
    variants: dict[str, dict[str, list[int]]]  # label -> variant text -> token ids that were summed
    prompt_text: str
    prompt_token_ids: tuple[int, ...]
    # False when some variant's token was outside the top N: its (small) mass is missing from the option.
    complete: bool = True
    reasoning: Reasoning | None = None  # after-reasoning: the analysis generated before the answer

    def columns(self, question: Question) -> dict[str, Any]:
        dist = lp.distribution(self.option_logprobs)
        out: dict[str, Any] = {
            question.prob_columns[label]: dist.normalised[label] for label in question.prob_columns
        }
        normalised = [dist.normalised[o.label] for o in question.options]
        if question.mean_column or question.std_column:
            values = [float(o.value) for o in question.options if o.value is not None]
            mean, std = lp.mean_and_std(values, normalised)
            if question.mean_column:
                out[question.mean_column] = mean
            if question.std_column:
                out[question.std_column] = std
        out[question.entropy_column] = lp.entropy_bits(normalised)
        name = question.name
        out[f"{name}_method"] = self.method.value
        out[f"{name}_coverage"] = dist.coverage
        out[f"{name}_absent"] = ";".join(self.absent)
        out[f"{name}_raw"] = json.dumps(dist.raw)
        out[f"{name}_logprobs"] = json.dumps({k: _json_float(v) for k, v in self.option_logprobs.items()})
        out[f"{name}_variants"] = json.dumps(self.variants, ensure_ascii=False)
        out[f"{name}_prompt"] = self.prompt_text
        out[f"{name}_prompt_token_ids"] = json.dumps(list(self.prompt_token_ids))
        if self.reasoning is not None:
            out[f"{name}{REASONING_SUFFIX}"] = self.reasoning.text
            out[f"{name}{REASONING_IDS_SUFFIX}"] = json.dumps(list(self.reasoning.token_ids))
        return out


def _json_float(value: float) -> float | None:
    # JSON has no -Infinity; null means "probability 0 / not seen" and is explained in docs/probabilities.md.
    return None if math.isinf(value) else value


# ---- the pipeline ----------------------------------------------------------------------------------------


class ProbsPipeline:
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
        self.samples_per_row = samples_per_row
        self.base_seed = base_seed
        # Learned from the server in prepare(); recorded in the meta file.
        self._tokenize_available = True
        self._prefix_ids: tuple[int, ...] = ()  # between the generation prompt and the answer (planning)
        self._analysis_prefix_ids: tuple[int, ...] = ()  # after-reasoning: opens the analysis channel
        self._analysis_end_ids: tuple[int, ...] = ()  # after-reasoning: closes it
        self._after_reasoning_ids: tuple[int, ...] = ()  # after-reasoning: opens the answer
        self._plans: dict[str, OptionPlan] = {}
        self._messages = MessageBuilder()
        self._scores_requested_ids = False  # the server honours logprob_token_ids (probed in prepare)
        self.server_findings: dict[str, Any] = {}

    # -- what the runner asks --
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
        """JSON evidence and prompts, written after every analysis column (worker.run.runner reads this)."""
        return [column for question in self.questions for column in question.provenance_columns]

    def parameters(self) -> dict[str, Any]:
        """Everything that determines the numbers, for the checkpoint header and the meta file."""
        return {
            "study": self.study.name,
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
        self._messages = await probe_system_role(client)
        probe = [{"role": "user", "content": PROBE_USER_MESSAGE}]
        if self.questions[0].system:
            probe.insert(0, {"role": "system", "content": self.questions[0].system})
        try:
            probe_ids = await self._chat_prompt_ids(probe, client)
        except RequestRejected as err:
            if err.status != 404 or err.fatal:
                raise
            self._tokenize_available = False
        if not self._tokenize_available:
            self.server_findings = {
                **self._messages.findings(),
                "method": Method.CHAT_TOP_LOGPROBS.value,
                "approximate": True,
                "why": (
                    "The server has no /tokenize endpoint, so the prompt's token ids and the options' "
                    "tokenization are unknown: probabilities come from chat completions' top_logprobs "
                    "matched by text; options longer than one token, and options outside the top "
                    f"{self.config.top_logprobs}, are reported absent; no answer prefix is applied."
                ),
            }
            return
        self._prefix_ids = tuple(await self._tokenize_text(self.config.direct_prefix, client))
        reasoning_format = self.config.format
        if self.config.mode is ReasoningMode.AFTER_REASONING and reasoning_format is not None:
            self._analysis_prefix_ids = tuple(
                await self._tokenize_text(reasoning_format.analysis_prefix, client)
            )
            self._analysis_end_ids = tuple(await self._tokenize_text(reasoning_format.analysis_end, client))
            if len(self._analysis_end_ids) != 1:
                # vLLM stops at ANY of the stop token ids: a multi-token end would cut the reasoning short.
                raise InputError(
                    f"--reasoning-format {reasoning_format.name}: {reasoning_format.analysis_end} is "
                    f"{len(self._analysis_end_ids)} tokens for this model, not one special token; the "
                    f"model does not speak {reasoning_format.name}."
                )
            self._after_reasoning_ids = tuple(
                await self._tokenize_text(reasoning_format.answer_prefix_after_reasoning, client)
            )
            # Options are planned (and the server probed) after an empty analysis: the answer prefix ends
            # in a special token, so what comes before it does not change how the options tokenize.
            self._prefix_ids = (
                *self._analysis_prefix_ids,
                *self._analysis_end_ids,
                *self._after_reasoning_ids,
            )
        context = await self._detokenize([*probe_ids, *self._prefix_ids], client)
        plans: dict[tuple[str, ...], OptionPlan] = {}
        for question in self.questions:
            key = tuple(o.text for o in question.options)
            if key not in plans:
                plans[key] = await self._plan_for(question.options, context, client)
            self._plans[question.name] = plans[key]
            if self.config.method is Method.FIRST_TOKEN and not plans[key].first_token_exact:
                # Asked for explicitly on multi-token options: each option's first token is read, as
                # asked, but only when first tokens are distinct; otherwise the numbers mean nothing.
                self._check_first_tokens_distinct(question, plans[key])
        self._scores_requested_ids = await self._probe_requested_ids(probe_ids, client)
        self.server_findings = {
            "approximate": False,
            "first_token_reads": self._first_token_reads(),
            **self._messages.findings(),
            "answer_prefix_token_ids": list(self._prefix_ids),
            # Per question before any row; a row's own <q>_method says what was used (auto may rescore a
            # first-token row by continuation when a variant falls outside the top N).
            "planned_methods": {q.name: self._method_for(q) for q in self.questions},
            "option_tokens": {q.name: self._plans[q.name].describe() for q in self.questions},
            "temperature": await self._probe_temperature(probe_ids, client),
        }

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
            normalised[question.name] = lp.distribution(result.option_logprobs).normalised
        for marginal in self.marginals:
            out.update(marginal.values(normalised[marginal.source]))
        return out

    # -- one question --
    def _method_for(self, question: Question) -> str:
        plan = self._plans[question.name]
        if self.config.method is Method.AUTO:
            return (Method.FIRST_TOKEN if plan.first_token_exact else Method.CONTINUATION).value
        return self.config.method.value

    async def _ask(
        self, question: Question, row: Mapping[str, str], client: ModelClient, seed: int
    ) -> QuestionResult:
        messages = question.messages(row, self.study)
        if not self._tokenize_available:
            return await self._chat_fallback(question, messages, client)
        reasoning = None
        if self.config.mode is ReasoningMode.AFTER_REASONING:
            reasoning, prompt_ids = await self._after_reasoning(messages, client, seed)
        else:
            prompt_ids = [*await self._chat_prompt_ids(messages, client), *self._prefix_ids]
        prompt_text = await self._detokenize(prompt_ids, client)
        plan = self._plans[question.name]
        method = Method(self._method_for(question))
        if method is Method.FIRST_TOKEN:
            result = await self._first_token(plan, prompt_ids, prompt_text, client)
            # auto promises exact numbers: a variant outside the top N means the option is only a lower
            # bound, so that row is scored again by continuation.
            if result.complete or self.config.method is not Method.AUTO:
                return replace(result, reasoning=reasoning)
        result = await self._continuation(plan, prompt_ids, prompt_text, client)
        return replace(result, reasoning=reasoning)

    async def _after_reasoning(
        self, messages: list[dict[str, str]], client: ModelClient, seed: int
    ) -> tuple[Reasoning, list[int]]:
        """Generate the analysis channel; the prompt ids at which the answer is then read."""
        opened = [*await self._chat_prompt_ids(messages, client), *self._analysis_prefix_ids]
        reasoning = await generate_reasoning(
            client,
            opened,
            self._analysis_end_ids,
            max_tokens=self.config.reasoning_max_tokens,
            temperature=self.config.temperature,
            seed=seed,
        )
        return reasoning, [*opened, *reasoning.token_ids, *self._analysis_end_ids, *self._after_reasoning_ids]

    async def _first_token(
        self, plan: OptionPlan, prompt_ids: list[int], prompt_text: str, client: ModelClient
    ) -> QuestionResult:
        reply = await client.post_json(
            COMPLETIONS_PATH,
            {
                "model": client.options.model_name,
                "prompt": prompt_ids,
                "max_tokens": 1,
                "logprobs": self.config.top_logprobs,
                "temperature": self.config.temperature,
                # Keys become token_id:<id>: decoded-text keys collide and cannot be matched to ids.
                "return_tokens_as_token_ids": True,
                **self._requested_ids(plan),
            },
            expect=lp.completion_top_by_token_id,
        )
        top: dict[int, float] = reply.expected
        option_logprobs: dict[str, float] = {}
        absent: list[str] = []
        variants: dict[str, dict[str, list[int]]] = {}
        for option in plan.options:
            firsts = {text: seq[0] for text, seq in option.sequences.items()}
            seen = {text: tok for text, tok in firsts.items() if tok in top}
            # Each distinct token once: two variants may start with the same token (multi-token options).
            option_logprobs[option.label] = lp.logsumexp(top[tok] for tok in set(seen.values()))
            variants[option.label] = {text: [tok] for text, tok in seen.items()}
            if not seen:
                absent.append(option.label)
        return QuestionResult(
            method=Method.FIRST_TOKEN,
            option_logprobs=option_logprobs,
            absent=tuple(absent),
            variants=variants,
            prompt_text=prompt_text,
            prompt_token_ids=tuple(prompt_ids),
            complete=all(tok in top for o in plan.options for tok in (s[0] for s in o.sequences.values())),
        )

    async def _continuation(
        self, plan: OptionPlan, prompt_ids: list[int], prompt_text: str, client: ModelClient
    ) -> QuestionResult:
        keys = [(o.label, text) for o in plan.options for text in o.sequences]
        sequences = {(o.label, text): seq for o in plan.options for text, seq in o.sequences.items()}
        prompts = [[*prompt_ids, *sequences[key]] for key in keys]
        # Where a shorter option could continue into a longer one, also score the continuing token(s).
        extension_keys = [(key, tok) for key in keys for tok in plan.continuations.get(key, ())]
        prompts += [[*prompt_ids, *sequences[key], tok] for key, tok in extension_keys]
        reply = await client.post_json(
            COMPLETIONS_PATH,
            {
                "model": client.options.model_name,
                "prompt": prompts,
                "max_tokens": 1,
                "prompt_logprobs": 0,
                "temperature": self.config.temperature,
            },
            expect=lambda body: lp.prompt_token_logprobs(body, prompts),
        )
        per_token: list[list[float]] = reply.expected
        start = len(prompt_ids)
        seq_logprob = {key: math.fsum(per_token[i][start:]) for i, key in enumerate(keys)}
        next_logprob: dict[tuple[str, str], list[float]] = {}
        for j, (key, _) in enumerate(extension_keys):
            next_logprob.setdefault(key, []).append(per_token[len(keys) + j][-1])
        option_logprobs: dict[str, float] = {}
        for option in plan.options:
            terms = []
            for text in option.sequences:
                value = seq_logprob[(option.label, text)]
                if (option.label, text) in next_logprob:
                    # P(seq and the answer does not go on into another option) = P(seq) * (1 - P(next)).
                    leak = lp.to_probability(lp.logsumexp(next_logprob[(option.label, text)]))
                    value = value + math.log1p(-leak) if leak < 1.0 else -math.inf
                terms.append(value)
            option_logprobs[option.label] = lp.logsumexp(terms)
        return QuestionResult(
            method=Method.CONTINUATION,
            option_logprobs=option_logprobs,
            absent=(),
            variants={o.label: {t: list(s) for t, s in o.sequences.items()} for o in plan.options},
            prompt_text=prompt_text,
            prompt_token_ids=tuple(prompt_ids),
        )

    async def _chat_fallback(
        self, question: Question, messages: list[dict[str, str]], client: ModelClient
    ) -> QuestionResult:
        reply = await client.chat(
            self._messages.fit(messages),
            max_tokens=1,
            temperature=self.config.temperature,
            logprobs=True,
            top_logprobs=self.config.top_logprobs,
            expect=lp.chat_top_candidates,
        )
        candidates: list[lp.ChatCandidate] = reply.expected
        option_logprobs: dict[str, float] = {}
        variants: dict[str, dict[str, list[int]]] = {}
        absent = []
        for option in question.options:
            forms = set(surface_variants(option.text, self.config.variants))
            # List entries are distinct tokens, so each matching entry is counted once.
            matched = [c for c in candidates if c.text in forms]
            option_logprobs[option.label] = lp.logsumexp(c.logprob for c in matched)
            variants[option.label] = {c.text: [] for c in matched}
            if not matched:
                absent.append(option.label)
        return QuestionResult(
            method=Method.CHAT_TOP_LOGPROBS,
            option_logprobs=option_logprobs,
            absent=tuple(absent),
            variants=variants,
            prompt_text=json.dumps(messages, ensure_ascii=False),
            prompt_token_ids=(),
        )

    def _first_token_reads(self) -> str:
        if not any(self._method_for(q) == Method.FIRST_TOKEN for q in self.questions):
            return "not used: every question is scored by continuation"
        if self._scores_requested_ids:
            return "the options' own token ids (logprob_token_ids): exact at any rank"
        return f"the top {self.config.top_logprobs} candidates only"

    def _requested_ids(self, plan: OptionPlan) -> dict[str, list[int]]:
        """Ask for the options' own first tokens, so none can fall outside the top N, where supported."""
        ids = sorted({seq[0] for o in plan.options for seq in o.sequences.values()})
        if not self._scores_requested_ids or len(ids) > MAX_REQUESTED_TOKEN_IDS:
            return {}
        return {"logprob_token_ids": ids}

    async def _probe_requested_ids(self, prompt_ids: list[int], client: ModelClient) -> bool:
        """Does the server score requested token ids (vLLM's logprob_token_ids) instead of the top N?"""
        uses_first_token = any(self._method_for(q) == Method.FIRST_TOKEN for q in self.questions)
        if not uses_first_token:
            return False
        # Greedy, one candidate: a server that ignores the field returns only the argmax token, so two
        # other ids (taken from the prompt: valid for this vocabulary) come back only if it scored them.
        body = {
            "model": client.options.model_name,
            "prompt": [*prompt_ids, *self._prefix_ids],
            "max_tokens": 1,
            "logprobs": 1,
            "temperature": 0.0,
            "return_tokens_as_token_ids": True,
        }
        try:
            top = lp.completion_top_by_token_id
            argmax = set((await client.post_json(COMPLETIONS_PATH, body, expect=top)).expected)
            wanted = [token for token in dict.fromkeys(prompt_ids) if token not in argmax][:2]
            body = {**body, "logprob_token_ids": wanted}
            reply = await client.post_json(COMPLETIONS_PATH, body, expect=top)
        except RequestRejected:
            return False  # the field is unknown here, or probing is refused: read the top N as before
        return set(wanted) <= set(reply.expected)

    @staticmethod
    def _check_first_tokens_distinct(question: Question, plan: OptionPlan) -> None:
        owner: dict[int, str] = {}
        for option in plan.options:
            for seq in option.sequences.values():
                if owner.setdefault(seq[0], option.label) != option.label:
                    raise InputError(
                        f"--method first-token: options {owner[seq[0]]!r} and {option.label!r} of question "
                        f"{question.name!r} start with the same token for this model; use --method "
                        "continuation (or auto)."
                    )

    # -- server helpers --
    async def _chat_prompt_ids(self, messages: list[dict[str, str]], client: ModelClient) -> list[int]:
        body: dict[str, Any] = {
            "model": client.options.model_name,
            "messages": self._messages.fit(messages),
            "add_generation_prompt": True,
        }
        if self.config.reasoning_effort is not None:
            # gpt-oss's chat template reads reasoning_effort into its system message.
            body["chat_template_kwargs"] = {"reasoning_effort": self.config.reasoning_effort}
        return (await client.post_json(TOKENIZE_PATH, body, expect=tokenized_ids)).expected

    async def _tokenize_text(self, text: str, client: ModelClient) -> list[int]:
        if not text:
            return []
        reply = await client.post_json(
            TOKENIZE_PATH,
            {"model": client.options.model_name, "prompt": text, "add_special_tokens": False},
            expect=tokenized_ids,
        )
        return reply.expected

    async def _detokenize(self, token_ids: Sequence[int], client: ModelClient) -> str:
        reply = await client.post_json(
            DETOKENIZE_PATH,
            {"model": client.options.model_name, "tokens": list(token_ids)},
            expect=_detokenized_text,
        )
        return reply.expected

    async def _plan_for(self, options: Sequence[OptionSpec], context: str, client: ModelClient) -> OptionPlan:
        """Tokenize every variant right after the generation prompt, as the model would write it."""
        base = await self._tokenize_text(context, client)
        sequences: dict[str, dict[str, list[int]]] = {}
        for option in options:
            sequences[option.label] = {}
            for text in surface_variants(option.text, self.config.variants):
                full = await self._tokenize_text(context + text, client)
                if full[: len(base)] == base and len(full) > len(base):
                    sequences[option.label][text] = full[len(base) :]
                else:
                    # The variant merges with the prompt's last token; scored on its own tokens instead.
                    sequences[option.label][text] = await self._tokenize_text(text, client)
        return plan_options(sequences)

    async def _probe_temperature(self, prompt_ids: list[int], client: ModelClient) -> dict[str, Any]:
        """Ask the server whether --temperature changes the log-probabilities it returns."""
        finding: dict[str, Any] = {"requested": self.config.temperature}
        if self.config.temperature == 1.0:
            finding["scaled_by_server"] = "not measurable at temperature 1.0"
            return finding
        tops = []
        for temperature in (1.0, self.config.temperature):
            reply = await client.post_json(
                COMPLETIONS_PATH,
                {
                    "model": client.options.model_name,
                    "prompt": [*prompt_ids, *self._prefix_ids],
                    "max_tokens": 1,
                    "logprobs": self.config.top_logprobs,
                    "temperature": temperature,
                    "return_tokens_as_token_ids": True,
                },
                expect=lp.completion_top_by_token_id,
            )
            tops.append(reply.expected)
        shared = set(tops[0]) & set(tops[1])
        scaled = any(abs(tops[0][t] - tops[1][t]) > 1e-4 for t in shared)
        finding["scaled_by_server"] = scaled
        finding["note"] = (
            "the returned log-probabilities depend on temperature (server logprobs_mode processed)"
            if scaled
            else "the server returns raw log-probabilities; temperature does not change the numbers"
        )
        return finding


def _detokenized_text(body: Mapping[str, Any]) -> str:
    text = body.get("prompt")
    if not isinstance(text, str):
        raise ResponseError(f"POST {DETOKENIZE_PATH} returned no prompt text.")
    return text


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
        "(as the researchers' original Jobs asked, e.g. 0,1,2,3,yes,no); without it the study's probability "
        "questions are asked.",
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
        first = err.errors()[0]
        if not first["loc"]:  # a cross-field rule: its message names the flags
            raise InputError(f"{first['msg'].removeprefix('Value error, ')}.") from err
        flag = {
            "top_logprobs": "--logprobs",
            "temperature": "--temperature",
            "reasoning_max_tokens": "--reasoning-max-tokens",
        }.get(str(first["loc"][0]), "probs")
        raise InputError(f"{flag} {first.get('input')!r}: {first['msg']}.") from err
    questions = questions_for(study, tokens)
    return ProbsPipeline(
        study,
        questions,
        config,
        marginals=consistency_for(study, questions, tokens),
        samples_per_row=sampling.samples_per_row if after_reasoning else 1,
        base_seed=sampling.base_seed,
    )
