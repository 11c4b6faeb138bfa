"""Experiment 1 (`python -m worker query`): each row's questions to the model, the raw answers.

A study's prompt has one of two forms (`worker.studies.definition`).

The chat form: one question or a conversation of turns. Turn i's user message is sent after the model's
replies to turns 0..i-1, each appended as an assistant turn, in ONE conversation, so a later question
never leaks into an earlier answer. Messages go through `worker.server.chat_messages`, so a template
without a system role (Gemma-2) gets the system text in the first user turn.

Added columns of the chat form (after the input's, in this order):
  model_name          the model that answered (the server's `model` field)
  <reply_column>      one per turn (`model_response` for a one-question study): the final answer, verbatim
                      ("" when a model without reasoning said nothing)
  <reply_column>_reasoning  the reasoning text of a reasoning model (vLLM's `reasoning`), "" otherwise
  finish_reason       "length" when any turn was cut off, else the last turn's ("stop", ...)
  finish_reasons      JSON list, each turn's finish_reason in order
  prompt_tokens       usage.prompt_tokens summed over the turns' requests
  completion_tokens   usage.completion_tokens summed over the turns' requests
  conversation        JSON list of the messages as sent, ending with the last reply
  prompt_token_ids    JSON list, per turn, of the prompt's token ids as the server's template rendered them
                      (vLLM `return_token_ids`; [] from a server that does not return them). The gpt-oss
                      template writes the current date into the prompt: this is the exact prompt.
  response_timestamp  when the last answer arrived, ISO 8601 UTC
  processing_time_ms  wall time of the row, first attempt to last answer, including retries and backoff
  attempts            HTTP attempts made over all turns (1 per turn = no retry)
  error               "" on success, else why the row failed (the server's message for a 4xx; for a
                      reasoning model whose final answer is empty, the cause)

The completion form: raw text prompts to /v1/completions with no chat template, one request after the
other, each independent of the others' replies. The body carries the researchers' Experiment 1 fields and
no others (tgmorton/knowledge-politeness-llms `src/utils/api_client.py:91-104`: prompt, temperature,
max_tokens, stop when set, seed), plus `model`: vLLM answers a request without one with its first served
model, and the worker names the model it checked against /v1/models. Its added columns:
  <reply_column>      one per request, first (as the researchers' files have them): the reply's text,
                      stripped when the study says `strip_replies`
  model_name          the model that answered (the server's `model` field)
  finish_reason       "length" when any request was cut off, else the last one's
  finish_reasons      JSON list, each request's finish_reason in order
  prompt_tokens       usage.prompt_tokens summed over the row's requests
  completion_tokens   usage.completion_tokens summed over the row's requests
  prompts             JSON list of the prompt texts sent, in order
  response_timestamp, processing_time_ms, attempts, error: as in the chat form
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from pydantic import ValidationError

from worker.errors import (
    InputError,
    RequestRejected,
    RetryableError,
    RowFailure,
    UnusableReply,
    WorkerError,
    validation_problem,
)
from worker.run.pipeline import DEFAULT_ERROR_COLUMN, Pipeline
from worker.run.sampling import Sample, replication_seed
from worker.server.chat_completions import ChatReply, answered_chat
from worker.server.chat_messages import MessageBuilder, probe_system_role
from worker.server.client import ModelClient
from worker.server.completions import (
    COMPLETIONS_PATH,
    CompletionReply,
    answered_completion,
    completion_request,
)
from worker.studies.definition import (
    GenerationParams,
    PromptForm,
    RenderedPrompt,
    SamplingSettings,
    SeedRule,
    Study,
    load_study,
    sampling_settings,
)

__all__ = [
    "REASONING_EFFORTS",
    "QueryPipeline",
    "add_arguments",
    "build",
    "output_columns",
]

# vLLM's harmony renderer accepts these (vllm/entrypoints/openai/parser/harmony_utils.py REASONING_EFFORT).
REASONING_EFFORTS = ("low", "medium", "high")
REASONING_SUFFIX = "_reasoning"


# The completion form's record of a row, after its reply columns and model_name.
COMPLETION_RECORD_COLUMNS = (
    "finish_reason",
    "finish_reasons",
    "prompt_tokens",
    "completion_tokens",
    "prompts",
    "response_timestamp",
    "processing_time_ms",
    "attempts",
    DEFAULT_ERROR_COLUMN,
)


def output_columns(study: Study) -> tuple[str, ...]:
    """The columns `query` adds for `study`, in order."""
    replies = study.prompt.reply_columns
    if study.prompt.form is PromptForm.COMPLETION:
        return (*replies, "model_name", *COMPLETION_RECORD_COLUMNS)
    return (
        "model_name",
        *replies,
        *(f"{column}{REASONING_SUFFIX}" for column in replies),
        "finish_reason",
        "finish_reasons",
        "prompt_tokens",
        "completion_tokens",
        "conversation",
        "prompt_token_ids",
        "response_timestamp",
        "processing_time_ms",
        "attempts",
        DEFAULT_ERROR_COLUMN,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("query options (override the study's generation parameters)")
    group.add_argument(
        "--max-tokens", type=int, help="Completion token budget per row (default: the study's max_tokens)."
    )
    group.add_argument(
        "--reasoning-effort",
        choices=REASONING_EFFORTS,
        help="Sent as `reasoning_effort` with every request (reasoning models such as gpt-oss; recorded in "
        "the meta file). Omitted: the server's default. Chat form only.",
    )
    group.add_argument(
        "--stop",
        metavar="JSON",
        help="Stop strings sent as `stop` with every request, a JSON list (e.g. '[\"<end_of_turn>\"]'; "
        "recorded in the meta file). Omitted: the study's generation.stop, and no `stop` key when it has "
        "none.",
    )


def build(args: argparse.Namespace) -> QueryPipeline:
    study = load_study(args.study)
    sampling = sampling_settings(study, args)
    overrides: dict[str, Any] = {"temperature": sampling.temperature}
    if args.max_tokens is not None:
        overrides["max_tokens"] = args.max_tokens
    if args.stop is not None:
        overrides["stop"] = stop_strings(args.stop)
    if study.prompt.form is PromptForm.COMPLETION and args.reasoning_effort is not None:
        raise InputError(
            f"--reasoning-effort {args.reasoning_effort!r}: study {study.name} sends raw completion prompts, "
            "with no chat template to carry a reasoning effort; leave the flag out."
        )
    return QueryPipeline(
        study=study,
        generation=_with_overrides(study.generation, overrides),
        sampling=sampling,
        reasoning_effort=args.reasoning_effort,
    )


def stop_strings(text: str) -> tuple[str, ...]:
    """`--stop`'s JSON list of stop strings; InputError naming the flag for anything else."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not value or not all(isinstance(s, str) and s for s in value):
        raise InputError(
            f"--stop {text!r}: give a non-empty JSON list of non-empty strings, e.g. '[\"<end_of_turn>\"]'; "
            "leave the flag out for no stop strings."
        )
    return tuple(value)


def _with_overrides(generation: GenerationParams, overrides: Mapping[str, Any]) -> GenerationParams:
    try:
        return GenerationParams.model_validate({**generation.model_dump(), **overrides})
    except ValidationError as err:
        problem = validation_problem(err)
        raise InputError(problem.for_flag("--" + problem.field.replace("_", "-"))) from err


@dataclass
class QueryPipeline(Pipeline):
    """One conversation per row (one chat completion per turn), or the completion form's independent raw
    text requests; prompt and sampling from the study."""

    study: Study
    generation: GenerationParams
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    reasoning_effort: str | None = None
    messages: MessageBuilder = field(default_factory=MessageBuilder)

    name = "query"
    error_column = DEFAULT_ERROR_COLUMN

    @property
    def output_columns(self) -> tuple[str, ...]:
        return output_columns(self.study)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return self.study.required_columns

    @property
    def samples_per_row(self) -> int:
        return self.sampling.samples_per_row

    @property
    def base_seed(self) -> int:
        return self.sampling.base_seed

    def sample_seed(self, row_index: int, sample_index: int) -> int:
        if self.sampling.seed_rule is SeedRule.REPLICATION:
            return replication_seed(self.base_seed, sample_index, self.sampling.seed_offset)
        return super().sample_seed(row_index, sample_index)

    @property
    def completion_form(self) -> bool:
        return self.study.prompt.form is PromptForm.COMPLETION

    @cached_property
    def request_params(self) -> dict[str, Any]:
        """The sampling fields of every request, built once (a pydantic dump per row showed in profiles)."""
        params = self.generation.request_params()
        if self.reasoning_effort is not None:
            params["reasoning_effort"] = self.reasoning_effort
        # vLLM returns the prompt's token ids as its template rendered them (ignored by other servers).
        params["return_token_ids"] = True
        return params

    def parameters(self) -> dict[str, Any]:
        # Settings left at their defaults are left out, so a chat study's parameters (the checkpoint
        # header a rerun must match) read as they did before the completion form existed.
        prompt = self.study.prompt.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        values: list[Any] = [prompt, self.study.text_replacements]
        value_settings = self._value_settings()
        if value_settings:
            values.append(value_settings)
        sampling = self.sampling.model_dump(mode="json")
        if self.sampling.seed_rule is SeedRule.DERIVED:
            del sampling["seed_rule"], sampling["seed_offset"]  # the rule of every earlier run
        common = {
            "study": self.study.name,
            "design": self.study.design,
            # Where each reply goes, so a reader of the outputs needs no study file to find the answers.
            "reply_columns": [turn.reply_column for turn in self.study.prompt.conversation],
            # The prompt's digest, so editing the YAML between a crash and the rerun is caught.
            "prompt_sha256": hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest(),
            "prompt": prompt,
        }
        if not self.completion_form:
            return {
                **common,
                "turns": [turn.name for turn in self.study.prompt.conversation],
                "text_replacements": dict(self.study.text_replacements),
                **value_settings,
                "generation": self.generation.request_params(),
                "sampling": sampling,
                **({"seed_rule": self.sampling.seed_rule_text} if "seed_rule" in sampling else {}),
                "reasoning_effort": self.reasoning_effort or "server default",
            }
        body = self._completion_body("<model>", "<prompt>", seed=0)
        return {
            **common,
            "requests": [turn.name for turn in self.study.prompt.conversation],
            "text_replacements": dict(self.study.text_replacements),
            **value_settings,
            # What every request is: its endpoint, the keys of its body in order, and their values.
            "form": PromptForm.COMPLETION.value,
            "endpoint": COMPLETIONS_PATH,
            "body_keys": list(body),
            "generation": {
                "temperature": self.generation.temperature,
                "max_tokens": self.generation.max_tokens,
                "stop": _listed(self.generation.stop),
            },
            "sampling": sampling,
            "seed_rule": self.sampling.seed_rule_text,
            "strip_replies": self.study.prompt.strip_replies,
        }

    def _value_settings(self) -> dict[str, Any]:
        """How row values are cleaned beyond text_replacements, when the study says so."""
        settings: dict[str, Any] = {}
        if self.study.strip_values:
            settings["strip_values"] = True
        if self.study.lookups:
            settings["lookups"] = {
                name: lookup.model_dump(mode="json") for name, lookup in self.study.lookups.items()
            }
        return settings

    def _completion_body(self, model: str, text: str, *, seed: int) -> dict[str, Any]:
        """One request of the completion form: the researchers' fields, no `stop` key when none is set."""
        generation = self.generation
        return completion_request(
            model,
            text,
            max_tokens=generation.max_tokens,
            temperature=generation.temperature,
            stop=generation.stop,
            seed=seed,
        )

    def server_findings(self) -> dict[str, Any]:
        return {} if self.completion_form else self.messages.findings()

    async def prepare(self, client: ModelClient) -> None:
        """Learn whether the server's chat template takes a system message (the completion form uses no
        template, so it asks nothing)."""
        if not self.completion_form:
            self.messages = await probe_system_role(client)

    async def process(
        self, row_index: int, row: Mapping[str, str], client: ModelClient, sample: Sample
    ) -> dict[str, Any]:
        if self.completion_form:
            return await self._complete(row_index, row, client, sample)
        prompt = self.study.render(row)
        turns = self.study.prompt.conversation
        # Every request of this sample carries the sample's own seed (worker.run.sampling), so the N samples
        # of a row differ and a rerun sends each with the seed it was first sent with.
        params = {**self.request_params, "seed": sample.seed}
        started = time.monotonic()
        answers: list[ChatReply] = []
        attempts = 0
        for index, turn in enumerate(turns):
            messages = self.messages.conversation(
                prompt.system, prompt.users[: index + 1], [a.text for a in answers]
            )
            failure: WorkerError | None = None
            try:
                reply = await client.chat(messages, expect=answered_chat, **params)
            except RequestRejected as err:
                if err.fatal:
                    raise  # the runner stops the run: every row would be refused the same way
                attempts, failure = attempts + err.attempts, err
            except RetryableError as err:
                attempts, failure = attempts + err.attempts, err
            else:
                attempts += reply.attempts
                answer: ChatReply = reply.expected
                if not answer.text.strip() and answer.reasoning:
                    reason = _empty_final_answer(answer.finish_reason or "", answer.completion_tokens)
                    failure = UnusableReply(reason)
                else:
                    answers.append(answer)
            if failure is not None:
                where = f"turn {turn.name}: " if len(turns) > 1 else ""
                columns = self._columns(prompt, answers, client.options.model_name, attempts, started)
                raise RowFailure(row_index, f"{where}{failure}", columns=columns) from failure
        return self._columns(prompt, answers, answers[-1].model, attempts, started)

    def _columns(
        self, prompt: RenderedPrompt, answers: list[ChatReply], model_name: str, attempts: int, started: float
    ) -> dict[str, Any]:
        turns = self.study.prompt.conversation
        replies = [a.text for a in answers]
        reasons = [a.finish_reason or "" for a in answers]
        done = len(answers)
        users = prompt.users[: done or 1]
        return {
            "model_name": model_name,
            **{turn.reply_column: a.text for turn, a in zip(turns, answers, strict=False)},
            **{
                f"{turn.reply_column}{REASONING_SUFFIX}": a.reasoning
                for turn, a in zip(turns, answers, strict=False)
            },
            "finish_reason": "length" if "length" in reasons else (reasons[-1] if reasons else ""),
            # JSON text here, not structures: the checkpoint would store dicts with sorted keys, and a
            # resumed run must write exactly the bytes a fresh one does.
            "finish_reasons": json.dumps(reasons),
            "prompt_tokens": sum(a.prompt_tokens or 0 for a in answers) if answers else None,
            "completion_tokens": sum(a.completion_tokens or 0 for a in answers) if answers else None,
            "conversation": json.dumps(
                self.messages.conversation(prompt.system, users, replies[: len(users)]), ensure_ascii=False
            ),
            "prompt_token_ids": json.dumps([a.prompt_token_ids for a in answers]),
            "response_timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "processing_time_ms": round((time.monotonic() - started) * 1000),
            "attempts": attempts,
        }

    async def _complete(
        self, row_index: int, row: Mapping[str, str], client: ModelClient, sample: Sample
    ) -> dict[str, Any]:
        """The completion form: each request's raw text on its own, one after the other, all with the
        sample's seed (the researchers' scripts send a row's requests in order and reuse one seed)."""
        texts = self.study.render(row).users
        requests = self.study.prompt.conversation
        started = time.monotonic()
        answers: list[CompletionReply] = []
        attempts = 0
        for request, text in zip(requests, texts, strict=True):
            body = self._completion_body(client.options.model_name, text, seed=sample.seed)
            failure: WorkerError | None = None
            try:
                reply = await client.post_json(COMPLETIONS_PATH, body, expect=answered_completion)
            except RequestRejected as err:
                if err.fatal:
                    raise  # the runner stops the run: every row would be refused the same way
                attempts, failure = attempts + err.attempts, err
            except RetryableError as err:
                attempts, failure = attempts + err.attempts, err
            else:
                attempts += reply.attempts
                answers.append(reply.expected)
            if failure is not None:
                where = f"request {request.name}: " if len(requests) > 1 else ""
                sent, model_name = texts[: len(answers) + 1], client.options.model_name
                columns = self._completion_columns(sent, answers, model_name, attempts, started)
                raise RowFailure(row_index, f"{where}{failure}", columns=columns) from failure
        return self._completion_columns(texts, answers, answers[-1].model, attempts, started)

    def _completion_columns(
        self,
        sent: tuple[str, ...],
        answers: list[CompletionReply],
        model_name: str,
        attempts: int,
        started: float,
    ) -> dict[str, Any]:
        requests = self.study.prompt.conversation
        strip = self.study.prompt.strip_replies
        choices = [answer.choices[0] for answer in answers]
        reasons = [choice.finish_reason or "" for choice in choices]
        return {
            **{
                request.reply_column: choice.text.strip() if strip else choice.text
                for request, choice in zip(requests, choices, strict=False)
            },
            "model_name": model_name,
            "finish_reason": "length" if "length" in reasons else (reasons[-1] if reasons else ""),
            "finish_reasons": json.dumps(reasons),
            "prompt_tokens": sum(a.prompt_tokens or 0 for a in answers) if answers else None,
            "completion_tokens": sum(a.completion_tokens or 0 for a in answers) if answers else None,
            "prompts": json.dumps(list(sent), ensure_ascii=False),
            "response_timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "processing_time_ms": round((time.monotonic() - started) * 1000),
            "attempts": attempts,
        }


def _listed(stop: tuple[str, ...] | None) -> list[str] | None:
    return None if stop is None else list(stop)


def _empty_final_answer(finish_reason: str, completion_tokens: object) -> str:
    if finish_reason == "length":
        return (
            f"empty final answer: the model's reasoning used the whole token budget ({completion_tokens} "
            "completion tokens, finish_reason=length) before it answered; raise --max-tokens or lower "
            "--reasoning-effort"
        )
    return (
        f"empty final answer: the model reasoned and then stopped (finish_reason={finish_reason}) "
        "without answering"
    )
