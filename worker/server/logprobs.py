"""Log-probabilities, pure part: one value as a server sends it, and the arithmetic on them.

Nothing here does I/O or reads a whole reply: the endpoints' parsers (completions.py, chat_completions.py)
read the bodies and use `clean_logprob` and `parse_token_id_key` for each value. Impossible values: JSON
has no -Infinity, so vLLM clamps every log-probability at -9999.0; they come back here as -inf.

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
    "Distribution",
    "clean_logprob",
    "distribution",
    "entropy_bits",
    "logsumexp",
    "mean_and_std",
    "parse_token_id_key",
    "softmax",
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


def softmax(logprobs: Sequence[float]) -> list[float]:
    """exp(x - max) / sum(exp(x - max)): the options' log-probabilities as a distribution, computed the
    way the researchers' ModelScorer._normalize_logprobs does (max subtracted first); NaN everywhere when
    every value is -inf (undefined)."""
    top = max(logprobs)
    if top == -math.inf:
        return [math.nan] * len(logprobs)
    weights = [math.exp(value - top) for value in logprobs]
    total = math.fsum(weights)
    return [weight / total for weight in weights]


def entropy_bits(probabilities: Iterable[float], *, floor: float = 0.0) -> float:
    """Shannon entropy in bits of a distribution that sums to 1, over the terms with p > `floor`
    (0 log 0 = 0); NaN if any value is NaN. The researchers' statistics use floor 1e-10."""
    values = list(probabilities)
    if any(math.isnan(p) for p in values):
        return math.nan
    return -math.fsum(p * math.log2(p) for p in values if p > floor) + 0.0


def mean_and_std(values: Sequence[float], probabilities: Sequence[float]) -> tuple[float, float]:
    """Mean and standard deviation of a discrete distribution (population form: it is the whole law)."""
    if len(values) != len(probabilities):
        raise ValueError(f"{len(values)} values but {len(probabilities)} probabilities.")
    if any(math.isnan(p) for p in probabilities):
        return math.nan, math.nan
    mean = math.fsum(v * p for v, p in zip(values, probabilities, strict=True))
    variance = math.fsum(p * (v - mean) ** 2 for v, p in zip(values, probabilities, strict=True))
    return mean, math.sqrt(max(variance, 0.0))
