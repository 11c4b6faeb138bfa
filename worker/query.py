"""Experiment 1 (`python -m worker query`): each row's prompt, one chat completion, the raw answer.

Added columns (after the input's, in this order):
  model_name          the model that answered (the server's `model` field)
  model_response      the assistant message text, verbatim ("" when the model said nothing)
  finish_reason       "stop" | "length" | ... as the server reported it
  prompt_tokens       usage.prompt_tokens
  completion_tokens   usage.completion_tokens
  response_timestamp  when the answer arrived, ISO 8601 UTC
  processing_time_ms  wall time of the row, first attempt to answer, including retries and backoff
  attempts            HTTP attempts made (1 = no retry)
  error               "" on success, else why the row failed (the server's message for a 4xx)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from pydantic import ValidationError

from worker.client import ModelClient, Reply
from worker.errors import InputError, RequestRejected, ResponseError, RetryableError, RowFailure
from worker.runner import DEFAULT_ERROR_COLUMN
from worker.sampling import Sample
from worker.studies import GenerationParams, Study, load_study

__all__ = ["HELP", "OUTPUT_COLUMNS", "QueryPipeline", "add_arguments", "build"]

HELP = "Experiment 1: ask each row's question and record the model's raw answer."

OUTPUT_COLUMNS = (
    "model_name",
    "model_response",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
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
        "--temperature", type=float, help="Sampling temperature (default: the study's temperature)."
    )
    group.add_argument("--seed", type=int, help="Sampling seed (default: the study's seed).")


def build(args: argparse.Namespace) -> QueryPipeline:
    study = load_study(args.study)
    overrides = {
        name: value
        for name, value in (
            ("max_tokens", args.max_tokens),
            ("temperature", args.temperature),
            ("seed", args.seed),
        )
        if value is not None
    }
    return QueryPipeline(study=study, generation=_with_overrides(study.generation, overrides))


def _with_overrides(generation: GenerationParams, overrides: Mapping[str, Any]) -> GenerationParams:
    try:
        return GenerationParams.model_validate({**generation.model_dump(), **overrides})
    except ValidationError as err:
        first = err.errors()[0]
        flag = "--" + str(first["loc"][0]).replace("_", "-")
        raise InputError(f"{flag} {first.get('input')!r}: {first['msg']}.") from err


@dataclass(frozen=True)
class QueryPipeline:
    """One chat completion per row, prompt and sampling from the study."""

    study: Study
    generation: GenerationParams

    name = "query"
    output_columns = OUTPUT_COLUMNS
    error_column = DEFAULT_ERROR_COLUMN
    samples_per_row = 1
    base_seed = 0

    @property
    def required_columns(self) -> tuple[str, ...]:
        return self.study.required_columns

    @cached_property
    def request_params(self) -> dict[str, Any]:
        """The sampling fields of every request, built once (a pydantic dump per row showed in profiles)."""
        return self.generation.request_params()

    def parameters(self) -> dict[str, Any]:
        prompt = self.study.prompt.model_dump()
        return {
            "study": self.study.name,
            # The prompt's digest, so editing the YAML between a crash and the rerun is caught.
            "prompt_sha256": hashlib.sha256(
                json.dumps([prompt, self.study.text_replacements], sort_keys=True).encode()
            ).hexdigest(),
            "prompt": prompt,
            "text_replacements": dict(self.study.text_replacements),
            "generation": self.generation.request_params(),
        }

    async def prepare(self, client: ModelClient) -> None:
        """Nothing to probe: the runner has already checked the server and the model name."""

    async def process(
        self,
        row_index: int,
        row: Mapping[str, str],
        client: ModelClient,
        sample: Sample,  # noqa: ARG002
    ) -> dict[str, Any]:
        messages = self.study.render(row)
        started = time.monotonic()
        try:
            reply = await client.chat(messages, **self.request_params)
        except RequestRejected as err:
            if err.fatal:
                raise  # the runner stops the run: every row would be refused the same way
            raise RowFailure(row_index, err, columns=_failure_columns(client, err.attempts, started)) from err
        except RetryableError as err:
            raise RowFailure(row_index, err, columns=_failure_columns(client, err.attempts, started)) from err
        try:
            answer = _answer(reply)
        except ResponseError as err:
            raise RowFailure(
                row_index, err, columns=_failure_columns(client, reply.attempts, started)
            ) from err
        return {
            **answer,
            "response_timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "processing_time_ms": round((time.monotonic() - started) * 1000),
            "attempts": reply.attempts,
        }


def _answer(reply: Reply) -> dict[str, Any]:
    """The answer's columns from a chat completion body; ResponseError when it is not one."""
    body = reply.body
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ResponseError("the chat completion has no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise ResponseError("the chat completion's first choice has no message")
    content = message.get("content")
    usage = body.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    return {
        "model_name": body.get("model", ""),
        # None happens when a reasoning model spends every token on `reasoning`; the answer is then empty.
        "model_response": content if isinstance(content, str) else "",
        "finish_reason": choices[0].get("finish_reason") or "",
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
    }


def _failure_columns(client: ModelClient, attempts: int, started: float) -> dict[str, Any]:
    return {
        "model_name": client.options.model_name,
        "response_timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "processing_time_ms": round((time.monotonic() - started) * 1000),
        "attempts": attempts,
    }
