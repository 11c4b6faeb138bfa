"""`POST /v1/completions`: the one request builder and the one reply parser.

Two kinds of prompt. Experiment 2 scores prompts it has tokenized itself, so its requests send token ids.
Experiment 1's completion form sends raw text, as the researchers' scripts did: the server tokenizes it
with no chat template. What a reply holds, and its traps (all visible in the recorded vLLM 0.32 bodies
under tests/fixtures/vllm-0.32):

- with `logprobs: N`: `choices[i].logprobs.top_logprobs[pos]` is a JSON object keyed by the token's
  *decoded text*. It holds the N best candidates plus the sampled token (so N+1 entries when the sampled
  token is not among the N), and two tokens that decode to the same text (byte-fallback pieces decode to
  "", or to U+FFFD) share one key, so one of them silently disappears. Requests therefore always ask for
  `return_tokens_as_token_ids`, which makes every key `token_id:<id>`.
- with `prompt_logprobs: k` (or `echo` with `logprobs`): `choices[i].prompt_logprobs` is a list aligned
  with the prompt's tokens, `null` first (nothing predicts the first token), then an object keyed by the
  token id *as a string* holding `{logprob, rank, decoded_token}` for the prompt token itself plus the k
  best.
- with `echo` and `max_tokens: 0`: `choices[i].text` is the prompt's text and nothing follows it (vLLM
  still runs one decoding step internally; vllm/entrypoints/openai/completion/protocol.py maps 0 to 1 and
  serving.py drops the step's token from the reply).
- with `return_token_ids`: `choices[i].token_ids`, the generated tokens (ending with the stop token when
  one stopped the generation).
- a batched request (a list of prompts) gets one choice per prompt, matched by `index`, not by order.
- `usage` counts the prompt's and the generated tokens, summed over the choices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker import constants as c
from worker.errors import ResponseError
from worker.server.logprobs import clean_logprob, parse_token_id_key

__all__ = [
    "COMPLETIONS_PATH",
    "CompletionChoice",
    "CompletionReply",
    "answered_completion",
    "completion_request",
    "read_completion",
]

COMPLETIONS_PATH = c.COMPLETIONS_PATH

TokenIds = Sequence[int]


def completion_request(
    model: str,
    prompt: str | TokenIds | Sequence[TokenIds],
    *,
    max_tokens: int,
    temperature: float,
    logprobs: int | None = None,
    prompt_logprobs: int | None = None,
    token_ids_as_keys: bool = False,
    logprob_token_ids: Sequence[int] | None = None,
    stop: Sequence[str] | None = None,
    stop_token_ids: Sequence[int] | None = None,
    return_token_ids: bool = False,
    skip_special_tokens: bool | None = None,
    seed: int | None = None,
    echo: bool = False,
) -> dict[str, Any]:
    """The body of a completion: `prompt` is raw text, token ids, or a list of token-id prompts in one
    batch.

    max_tokens           0 only with `echo`: the prompt is scored and nothing is returned after it
    logprobs             the top N candidates at each generated position
    prompt_logprobs      the log-probability of every prompt token (plus its top k)
    echo                 the reply's text starts with the prompt
    token_ids_as_keys    `return_tokens_as_token_ids`: top candidates keyed `token_id:<id>`, not by text
    logprob_token_ids    vLLM >= 0.30: also score these token ids, at any rank (older servers ignore it)
    stop                 stop at any of these strings
    stop_token_ids       stop at any of these tokens
    return_token_ids     the generated tokens' ids in the reply (`choices[i].token_ids`)
    skip_special_tokens  False keeps special tokens in the reply's text
    seed                 the sampling seed
    Fields left unset are not sent, so the server's defaults apply.
    """
    body: dict[str, Any] = {"model": model, "prompt": prompt, "max_tokens": max_tokens}
    if logprobs is not None:
        body["logprobs"] = logprobs
    if prompt_logprobs is not None:
        body["prompt_logprobs"] = prompt_logprobs
    body["temperature"] = temperature
    if token_ids_as_keys:
        body["return_tokens_as_token_ids"] = True
    if logprob_token_ids is not None:
        body["logprob_token_ids"] = list(logprob_token_ids)
    if stop is not None:
        body["stop"] = list(stop)
    if stop_token_ids is not None:
        body["stop_token_ids"] = list(stop_token_ids)
    if return_token_ids:
        body["return_token_ids"] = True
    if skip_special_tokens is not None:
        body["skip_special_tokens"] = skip_special_tokens
    if seed is not None:
        body["seed"] = seed
    if echo:
        body["echo"] = True
    return body


@dataclass(frozen=True)
class CompletionChoice:
    """One choice of a completion, read once; the log-probabilities are read on demand."""

    index: int  # which prompt of a batched request this choice answers
    text: str  # the generated text ("" when absent)
    finish_reason: str | None  # "stop", "length", ...
    token_ids: tuple[int, ...] | None  # the generated tokens (`return_token_ids`); None when not sent
    logprobs: Mapping[str, Any] | None  # the choice's `logprobs` object
    prompt_logprobs: list[Any] | None  # the choice's `prompt_logprobs` list

    def top_by_token_id(self, position: int = 0) -> dict[int, float]:
        """Token id -> log-probability of the candidates at generated position `position`.

        Needs a request sent with `token_ids_as_keys`. The result holds the N requested candidates and,
        when it was not among them, the sampled token as well (OpenAI's N+1 rule).
        """
        if self.logprobs is None:
            raise ResponseError("The server's completion has no logprobs although they were requested.")
        tops = self.logprobs.get("top_logprobs")
        if not isinstance(tops, list) or len(tops) <= position or not isinstance(tops[position], Mapping):
            raise ResponseError(
                f"The server's completion has no top_logprobs at generated position {position}."
            )
        return {
            parse_token_id_key(str(key)): clean_logprob(value, f"top_logprobs[{position}][{key!r}]")
            for key, value in tops[position].items()
        }


@dataclass(frozen=True)
class CompletionReply:
    """A completion's choices, in prompt order."""

    choices: tuple[CompletionChoice, ...]
    model: str = ""  # the server's `model` field ("" when absent)
    prompt_tokens: int | None = None  # usage.prompt_tokens
    completion_tokens: int | None = None  # usage.completion_tokens

    def top_by_token_id(self, position: int = 0) -> dict[int, float]:
        """The first choice's top candidates by token id (CompletionChoice.top_by_token_id)."""
        return self.choices[0].top_by_token_id(position)

    def prompt_token_logprobs(self, prompts: Sequence[Sequence[int]]) -> list[list[float]]:
        """For each prompt sent in one batched request, the log-probability of each prompt token.

        `prompts[i]` are the token ids sent as prompt i; the request must have asked for `prompt_logprobs`
        (0 is enough: the prompt token itself is always included). Entry j of the result is log P(token j
        | tokens < j); the first token has no prediction and is reported as 0.0 (callers only read
        positions after the shared prompt). An entry that does not hold the token that was sent means the
        body does not belong to these prompts, which is an error, never a silent zero.
        """
        return [[0.0, *tail] for tail in self.prompt_tail_logprobs(prompts, [1] * len(prompts))]

    def prompt_tail_logprobs(
        self, prompts: Sequence[Sequence[int]], starts: Sequence[int]
    ) -> list[list[float]]:
        """For each prompt of a batched request, log P(token j | tokens < j) for j from `starts[i]` (at
        least 1: nothing predicts the first token) to the prompt's end; the positions before are not read.

        The same checks as `prompt_token_logprobs`: one choice per prompt, `prompt_logprobs` aligned with
        the prompt's tokens, and every position read holding the token that was sent.
        """
        if len(starts) != len(prompts):
            raise ValueError(f"{len(starts)} start positions for {len(prompts)} prompts.")
        if len(self.choices) != len(prompts):
            raise ResponseError(
                f"The server returned {len(self.choices)} choices for {len(prompts)} prompts."
            )
        results: list[list[float]] = []
        for i, (choice, token_ids, start) in enumerate(zip(self.choices, prompts, starts, strict=True)):
            positions = choice.prompt_logprobs
            if positions is None or len(positions) != len(token_ids):
                raise ResponseError(
                    f"Choice {i} has no prompt_logprobs aligned with its {len(token_ids)} prompt tokens."
                )
            row = []
            for j in range(max(start, 1), len(token_ids)):
                entry = positions[j]
                candidate = entry.get(str(token_ids[j])) if isinstance(entry, Mapping) else None
                if not isinstance(candidate, Mapping):
                    raise ResponseError(
                        f"Choice {i}'s prompt_logprobs at position {j} do not include the token "
                        f"{token_ids[j]} that was sent."
                    )
                row.append(clean_logprob(candidate.get("logprob"), f"choice {i} prompt position {j}"))
            results.append(row)
        return results


def read_completion(body: Mapping[str, Any]) -> CompletionReply:
    """The reply's choices, sorted by `index`, with its model and usage; ResponseError when it has no
    choices."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not all(isinstance(x, Mapping) for x in choices):
        raise ResponseError("The server's response has no choices.")
    usage = body.get("usage")
    usage = usage if isinstance(usage, Mapping) else {}
    return CompletionReply(
        tuple(sorted((_choice(x) for x in choices), key=lambda choice: choice.index)),
        model=str(body.get("model", "")),
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
    )


def answered_completion(body: Mapping[str, Any]) -> CompletionReply:
    """The `expect` of a text completion that wants an answer: read_completion(body), every choice
    holding a `text`. ResponseError (the request is sent again) when one does not."""
    reply = read_completion(body)
    if not all(isinstance(choice.get("text"), str) for choice in body["choices"]):
        raise ResponseError("The server's completion has a choice without text.")
    return reply


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _choice(choice: Mapping[str, Any]) -> CompletionChoice:
    try:
        index = int(choice.get("index", 0))
    except (TypeError, ValueError):
        raise ResponseError(f"The server's choice index {choice.get('index')!r} is not a number.") from None
    text = choice.get("text")
    finish_reason = choice.get("finish_reason")
    ids = choice.get("token_ids")
    valid_ids = isinstance(ids, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in ids)
    logprobs = choice.get("logprobs")
    prompt_logprobs = choice.get("prompt_logprobs")
    return CompletionChoice(
        index=index,
        text=text if isinstance(text, str) else "",
        finish_reason=None if finish_reason is None else str(finish_reason),
        token_ids=tuple(ids) if valid_ids and isinstance(ids, list) else None,
        logprobs=logprobs if isinstance(logprobs, Mapping) else None,
        prompt_logprobs=prompt_logprobs if isinstance(prompt_logprobs, list) else None,
    )
