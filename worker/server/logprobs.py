"""Log-probabilities, pure part: read them out of vLLM's response bodies, and do the arithmetic on them.

Nothing here does I/O; `probs.py` owns the requests. The shapes this module reads, and their traps
(all visible in the recorded vLLM 0.32 bodies under ../shared/reference/vllm-0.32):

- `/v1/completions` with `logprobs: N`: `choices[i].logprobs.top_logprobs[pos]` is a JSON object keyed by
  the token's *decoded text*. It holds the N best candidates plus the sampled token (so N+1 entries when
  the sampled token is not among the N), and two tokens that decode to the same text (byte-fallback
  pieces decode to "", or to U+FFFD) share one key, so one of them silently disappears. The pipeline
  therefore always asks for `return_tokens_as_token_ids`, which makes every key `token_id:<id>`.
- `/v1/completions` with `prompt_logprobs: k` (or `echo` with `logprobs`): `choices[i].prompt_logprobs`
  is a list aligned with the prompt's tokens, `null` first (nothing predicts the first token), then an
  object keyed by the token id *as a string* holding `{logprob, rank, decoded_token}` for the prompt
  token itself plus the k best.
- `/v1/chat/completions` with `logprobs: true, top_logprobs: N`: `choices[i].logprobs.content[pos]` has a
  `top_logprobs` *list* of `{token, logprob, bytes}`; list entries never collide, but there are no token
  ids, and `token` is text, so a token that is not valid UTF-8 on its own is only recoverable from
  `bytes`.
- Impossible values: JSON has no -Infinity, so vLLM clamps every log-probability at -9999.0.

Probabilities are kept as natural-log values until the end and combined with log-sum-exp, so summing
surface variants or the tokens of a long option loses no precision. Entropies are in bits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.errors import ResponseError

__all__ = [
    "IMPOSSIBLE_LOGPROB",
    "ChatCandidate",
    "Distribution",
    "chat_top_candidates",
    "completion_top_by_token_id",
    "distribution",
    "entropy_bits",
    "logsumexp",
    "mean_and_std",
    "parse_token_id_key",
    "prompt_token_logprobs",
    "to_probability",
]

# vLLM's stand-in for log(0): `max(logprob, -9999.0)` before serialising (entrypoints/openai/*/serving.py).
IMPOSSIBLE_LOGPROB = -9999.0
TOKEN_ID_KEY_PREFIX = "token_id:"  # noqa: S105 - not a secret; the key form `return_tokens_as_token_ids` produces


def _is_impossible(logprob: float) -> bool:
    return logprob <= IMPOSSIBLE_LOGPROB


def clean_logprob(value: Any, where: str) -> float:
    """A log-probability from a response body as a float, with vLLM's -9999.0 turned back into -inf."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ResponseError(f"The server's log-probability at {where} is {value!r}, not a number.")
    logprob = float(value)
    if math.isnan(logprob) or logprob > 1e-6:
        raise ResponseError(f"The server's log-probability at {where} is {logprob}, not a log-probability.")
    return -math.inf if _is_impossible(logprob) else min(logprob, 0.0)


def to_probability(logprob: float) -> float:
    """exp(logprob), with -inf (and vLLM's -9999.0) giving exactly 0."""
    if logprob == -math.inf or _is_impossible(logprob):
        return 0.0
    return math.exp(logprob)


def logsumexp(logprobs: Iterable[float]) -> float:
    """log(sum(exp(x))) without underflow; -inf for an empty input or all -inf."""
    values = [v for v in logprobs if v != -math.inf]
    if not values:
        return -math.inf
    top = max(values)
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


def parse_token_id_key(key: str) -> int:
    """The id in a `token_id:<id>` key (vLLM's `return_tokens_as_token_ids` form)."""
    if not key.startswith(TOKEN_ID_KEY_PREFIX):
        raise ResponseError(
            f"The server keyed a top-logprobs entry by {key!r}, not 'token_id:<id>': it ignored "
            "return_tokens_as_token_ids, so the entries cannot be matched to token ids."
        )
    try:
        return int(key.removeprefix(TOKEN_ID_KEY_PREFIX))
    except ValueError:
        raise ResponseError(f"The server's top-logprobs key {key!r} does not end in a token id.") from None


def _choices(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not all(isinstance(c, Mapping) for c in choices):
        raise ResponseError("The server's response has no choices.")
    return sorted(choices, key=lambda choice: int(choice.get("index", 0)))


def completion_top_by_token_id(body: Mapping[str, Any], position: int = 0) -> dict[int, float]:
    """Token id -> log-probability of the candidates at generated position `position` of choice 0.

    Needs a request sent with `return_tokens_as_token_ids: true`. The result holds the N requested
    candidates and, when it was not among them, the sampled token as well (OpenAI's N+1 rule).
    """
    logprobs = _choices(body)[0].get("logprobs")
    if not isinstance(logprobs, Mapping):
        raise ResponseError("The server's completion has no logprobs although they were requested.")
    tops = logprobs.get("top_logprobs")
    if not isinstance(tops, list) or len(tops) <= position or not isinstance(tops[position], Mapping):
        raise ResponseError(f"The server's completion has no top_logprobs at generated position {position}.")
    return {
        parse_token_id_key(str(key)): clean_logprob(value, f"top_logprobs[{position}][{key!r}]")
        for key, value in tops[position].items()
    }


def prompt_token_logprobs(body: Mapping[str, Any], prompts: Sequence[Sequence[int]]) -> list[list[float]]:
    """For each prompt sent in one batched completions request, the log-probability of each prompt token.

    `prompts[i]` are the token ids sent as prompt i; the request must have asked for `prompt_logprobs`
    (0 is enough: the prompt token itself is always included). Entry j of the result is log P(token j |
    tokens < j); the first token has no prediction and is reported as 0.0 (callers only read positions
    after the shared prompt). An entry that does not hold the token that was sent means the body does not
    belong to these prompts, which is an error, never a silent zero.
    """
    choices = _choices(body)
    if len(choices) != len(prompts):
        raise ResponseError(f"The server returned {len(choices)} choices for {len(prompts)} prompts.")
    results: list[list[float]] = []
    for i, (choice, token_ids) in enumerate(zip(choices, prompts, strict=True)):
        positions = choice.get("prompt_logprobs")
        if not isinstance(positions, list) or len(positions) != len(token_ids):
            raise ResponseError(
                f"Choice {i} has no prompt_logprobs aligned with its {len(token_ids)} prompt tokens."
            )
        row = [0.0]
        for j in range(1, len(token_ids)):
            entry = positions[j]
            candidate = entry.get(str(token_ids[j])) if isinstance(entry, Mapping) else None
            if not isinstance(candidate, Mapping):
                raise ResponseError(
                    f"Choice {i}'s prompt_logprobs at position {j} do not include the token {token_ids[j]} "
                    "that was sent."
                )
            row.append(clean_logprob(candidate.get("logprob"), f"choice {i} prompt position {j}"))
        results.append(row)
    return results


@dataclass(frozen=True, slots=True)
class ChatCandidate:
    """One entry of a chat completion's `top_logprobs` list."""

    text: str  # the token's text, rebuilt from its UTF-8 `bytes` when the server sent them
    logprob: float  # natural log; -inf for vLLM's -9999.0


def chat_top_candidates(body: Mapping[str, Any], position: int = 0) -> list[ChatCandidate]:
    """The `top_logprobs` list at generated position `position` of a chat completion's first choice."""
    logprobs = _choices(body)[0].get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    if (
        not isinstance(content, list)
        or len(content) <= position
        or not isinstance(content[position], Mapping)
    ):
        raise ResponseError(f"The chat completion has no logprobs content at position {position}.")
    tops = content[position].get("top_logprobs")
    if not isinstance(tops, list):
        raise ResponseError("The chat completion's logprobs have no top_logprobs list.")
    candidates = []
    for k, top in enumerate(tops):
        if not isinstance(top, Mapping):
            raise ResponseError(f"Chat top_logprobs entry {k} is not an object.")
        raw = top.get("bytes")
        # `token` may be a lossy rendering of a partial UTF-8 sequence; the bytes are the truth.
        text = (
            bytes(raw).decode("utf-8", errors="replace") if isinstance(raw, list) else str(top.get("token"))
        )
        candidates.append(
            ChatCandidate(text=text, logprob=clean_logprob(top.get("logprob"), f"chat top {k}"))
        )
    return candidates


@dataclass(frozen=True, slots=True)
class Distribution:
    """A closed set of options with their raw probabilities under the model, and the renormalised view."""

    raw: dict[str, float]  # option label -> P(option | prompt), as the model gives it
    coverage: float  # sum of raw: how much of the model's mass falls on the allowed options
    normalised: dict[str, float]  # raw / coverage; NaN everywhere when coverage is 0 (undefined)


def distribution(option_logprobs: Mapping[str, float]) -> Distribution:
    """Raw probabilities, coverage and the renormalised distribution of option label -> log-probability.

    Renormalisation is done in log space (subtracting the log of the total) so that options far below
    the others keep their relative precision; the result sums to 1 up to float rounding.
    """
    raw = {label: to_probability(lp) for label, lp in option_logprobs.items()}
    log_total = logsumexp(option_logprobs.values())
    if log_total == -math.inf:
        return Distribution(raw=raw, coverage=0.0, normalised=dict.fromkeys(raw, math.nan))
    normalised = {label: to_probability(lp - log_total) for label, lp in option_logprobs.items()}
    return Distribution(raw=raw, coverage=math.fsum(raw.values()), normalised=normalised)


def entropy_bits(probabilities: Iterable[float]) -> float:
    """Shannon entropy in bits of a distribution that sums to 1 (0 log 0 = 0); NaN if any value is NaN."""
    values = list(probabilities)
    if any(math.isnan(p) for p in values):
        return math.nan
    return -math.fsum(p * math.log2(p) for p in values if p > 0.0) + 0.0


def mean_and_std(values: Sequence[float], probabilities: Sequence[float]) -> tuple[float, float]:
    """Mean and standard deviation of a discrete distribution (population form: it is the whole law)."""
    if len(values) != len(probabilities):
        raise ValueError(f"{len(values)} values but {len(probabilities)} probabilities.")
    if any(math.isnan(p) for p in probabilities):
        return math.nan, math.nan
    mean = math.fsum(v * p for v, p in zip(values, probabilities, strict=True))
    variance = math.fsum(p * (v - mean) ** 2 for v, p in zip(values, probabilities, strict=True))
    return mean, math.sqrt(max(variance, 0.0))
