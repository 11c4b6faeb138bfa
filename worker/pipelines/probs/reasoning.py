"""Experiment 2 on a reasoning model: read the answer with or without the model's reasoning before it.

A reasoning model (gpt-oss, harmony format: https://cookbook.openai.com/articles/openai-harmony) writes an
analysis channel before its final answer. Where the answer's probability is read decides what is measured:

- `direct`: the final-channel header right after the generation prompt. The model answers with no
  reasoning at all: a forced answer, labelled as such in every output.
- `after-reasoning` (the default for reasoning models): the analysis channel is generated first
  (`/v1/completions`, sampled with a recorded seed, stopped at the channel's end token), then the options
  are scored after the final-channel header that follows it. The analysis text and its token ids are
  recorded, so the exact scored prompt can be rebuilt.

A reasoning that runs out of tokens before its end token never reached an answer: the question fails
with that cause instead of scoring options after an unfinished thought.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from worker.errors import ResponseError, UnusableReply
from worker.server.client import ModelClient
from worker.server.completions import COMPLETIONS_PATH, CompletionChoice, completion_request, read_completion

__all__ = ["FORMATS", "Reasoning", "ReasoningFormat", "ReasoningMode", "generate_reasoning"]


class ReasoningMode(StrEnum):
    """Where a reasoning model's answer is read (`--reasoning-mode`)."""

    DIRECT = "direct"  # right after the generation prompt: no reasoning
    AFTER_REASONING = "after-reasoning"  # after the model's own analysis channel


@dataclass(frozen=True)
class ReasoningFormat:
    """The special text of one reasoning format around the generation prompt."""

    name: str
    analysis_prefix: str  # opens the reasoning right after the generation prompt
    analysis_end: str  # closes it; one special token
    direct_answer_prefix: str  # opens the answer right after the generation prompt
    answer_prefix_after_reasoning: str  # opens the answer after analysis_end


# gpt-oss's chat template ends the generation prompt with "<|start|>assistant"; the model then writes
# "<|channel|>analysis<|message|>...<|end|>" and "<|start|>assistant<|channel|>final<|message|>...".
HARMONY = ReasoningFormat(
    name="harmony",
    analysis_prefix="<|channel|>analysis<|message|>",
    analysis_end="<|end|>",
    direct_answer_prefix="<|channel|>final<|message|>",
    answer_prefix_after_reasoning="<|start|>assistant<|channel|>final<|message|>",
)
FORMATS = {HARMONY.name: HARMONY}


@dataclass(frozen=True)
class Reasoning:
    """One generated analysis channel."""

    text: str
    token_ids: tuple[int, ...]  # the analysis itself, without the opening prefix or the end token
    seed: int | None


async def generate_reasoning(
    client: ModelClient,
    prompt_ids: Sequence[int],
    end_ids: Sequence[int],
    *,
    max_tokens: int,
    temperature: float,
    seed: int | None,
) -> Reasoning:
    """Let the model reason after `prompt_ids` (which end with the analysis prefix) until `end_ids`.

    ResponseError (retried by the client) when the server did not return token ids; UnusableReply when
    the reasoning ran out of tokens (the same seed and budget would run out again).
    """
    body = completion_request(
        client.options.model_name,
        list(prompt_ids),
        max_tokens=max_tokens,
        temperature=temperature,
        stop_token_ids=end_ids,
        # The exact tokens, not a re-tokenization of the text: the scored prompt is built from them.
        return_token_ids=True,
        skip_special_tokens=False,
        seed=seed,
    )
    reply = await client.post_json(COMPLETIONS_PATH, body, expect=reasoning_choice)
    return parse_reasoning(reply.expected, end_ids, max_tokens=max_tokens, seed=seed)


def reasoning_choice(body: Mapping[str, Any]) -> CompletionChoice:
    """The first choice of a reasoning completion with the `token_ids` it promises (else ResponseError)."""
    choice = read_completion(body).choices[0]
    if choice.token_ids is None:
        raise ResponseError(
            f"POST {COMPLETIONS_PATH} returned no token_ids for the reasoning (the server ignores "
            "return_token_ids), so the scored prompt cannot be rebuilt exactly"
        )
    return choice


def parse_reasoning(
    choice: CompletionChoice, end_ids: Sequence[int], *, max_tokens: int, seed: int | None
) -> Reasoning:
    """The analysis from a completion's choice (vLLM 0.32: `token_ids` ends with the stop token)."""
    ids = list(choice.token_ids or ())
    end = list(end_ids)
    if choice.finish_reason == "length" and ids[-len(end) :] != end:
        raise UnusableReply(
            f"the reasoning ran out of tokens: {len(ids)} of --reasoning-max-tokens {max_tokens} used "
            "without closing the analysis channel, so the model never reached its answer"
        )
    if ids[-len(end) :] == end:
        ids = ids[: -len(end)]
    return Reasoning(text=choice.text, token_ids=tuple(ids), seed=seed)
