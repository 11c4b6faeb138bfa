"""Experiment 1 (`python -m worker query`): each row's conversation with the model, the raw answers.

A study's prompt is one question or a conversation of turns (`worker.studies.definition`): turn i's user
message is sent after the model's replies to turns 0..i-1, each appended as an assistant turn, in ONE
conversation, so a later question never leaks into an earlier answer. Messages go through
`worker.server.chat_messages`, so a template without a system role (Gemma-2) gets the system text in the
first user turn.

Added columns (after the input's, in this order):
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
from worker.run.sampling import Sample
from worker.server.chat_completions import ChatReply, answered_chat
from worker.server.chat_messages import MessageBuilder, probe_system_role
from worker.server.client import ModelClient
from worker.studies.definition import (
    GenerationParams,
    RenderedPrompt,
    SamplingSettings,
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


def output_columns(study: Study) -> tuple[str, ...]:
    """The columns `query` adds for `study`, in order."""
    replies = [turn.reply_column for turn in study.prompt.conversation]
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
        "the meta file). Omitted: the server's default.",
    )


def build(args: argparse.Namespace) -> QueryPipeline:
    study = load_study(args.study)
    sampling = sampling_settings(study, args)
    overrides: dict[str, Any] = {"temperature": sampling.temperature}
    if args.max_tokens is not None:
        overrides["max_tokens"] = args.max_tokens
    return QueryPipeline(
        study=study,
        generation=_with_overrides(study.generation, overrides),
        sampling=sampling,
        reasoning_effort=args.reasoning_effort,
    )


def _with_overrides(generation: GenerationParams, overrides: Mapping[str, Any]) -> GenerationParams:
    try:
        return GenerationParams.model_validate({**generation.model_dump(), **overrides})
    except ValidationError as err:
        problem = validation_problem(err)
        raise InputError(problem.for_flag("--" + problem.field.replace("_", "-"))) from err


@dataclass
class QueryPipeline(Pipeline):
    """One conversation per row (one chat completion per turn), prompt and sampling from the study."""

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
        prompt = self.study.prompt.model_dump(exclude_none=True)
        return {
            "study": self.study.name,
            # The prompt's digest, so editing the YAML between a crash and the rerun is caught.
            "prompt_sha256": hashlib.sha256(
                json.dumps([prompt, self.study.text_replacements], sort_keys=True).encode()
            ).hexdigest(),
            "prompt": prompt,
            "turns": [turn.name for turn in self.study.prompt.conversation],
            "text_replacements": dict(self.study.text_replacements),
            "generation": self.generation.request_params(),
            "sampling": self.sampling.model_dump(),
            "reasoning_effort": self.reasoning_effort or "server default",
        }

    def server_findings(self) -> dict[str, Any]:
        return self.messages.findings()

    async def prepare(self, client: ModelClient) -> None:
        """Learn whether the server's chat template takes a system message."""
        self.messages = await probe_system_role(client)

    async def process(
        self, row_index: int, row: Mapping[str, str], client: ModelClient, sample: Sample
    ) -> dict[str, Any]:
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
