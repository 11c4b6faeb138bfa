"""`probability.scoring: joint-completion`: the researchers' own scoring rule, computed through vLLM.

Their `ModelScorer.score_completion` (tgmorton/knowledge-politeness-llms, src/utils/model_scorer.py) scores
an option after a raw prompt (no chat template, no system message) with a Hugging Face model:
`p = tokenizer(prompt)`, `f = tokenizer(prompt + option)` (the option appended with no separator, the
tokenizer's default special tokens, so one BOS where the tokenizer adds one); log P(option) is the sum, over
i from len(p) to len(f) - 1, of log_softmax(logits[i - 1])[f[i]], and -100.0 when len(f) <= len(p).
`score_options` then takes a softmax over the options (max subtracted). Per question and row here:

1. `/tokenize` the prompt text and every prompt+option text, each with the server's default
   `add_special_tokens` (true for text: the tokenizer's own special tokens, as `tokenizer(text)` adds).
2. One `/v1/completions` request whose `prompt` is every option's f (a list of token-id lists), with
   `echo`, `max_tokens: 0` and `prompt_logprobs: 0`; an option's log-probability is the plain sum of its
   tokens' `prompt_logprobs` from position len(p) on. Nothing checks that f starts with p: where the
   option merges with the prompt's last tokens, the tokens beyond len(p) are still the ones scored, as
   theirs are, and the option is listed in `<q>_boundary_merged`. An option with no token beyond len(p)
   gets their -100.0 and is not sent.
3. The softmax over the options, and their statistics (`worker.server.logprobs`: mean and population
   standard deviation of the option values, entropy in bits over the terms with p > 1e-10).

No surface variants are summed and no option set is refused: the options are scored as written, as theirs
are. Where their script writes a uniform distribution as data after an error, the row fails here (its
`error` column names the question and the cause) and that question's columns stay empty.

Prefix reuse: vLLM 0.32 never reads its prefix cache for a request that asks for prompt log-probabilities
(vllm/sampling_params.py: `skip_reading_prefix_cache = prompt_logprobs is not None`, which a completion
request cannot override), so every option costs its whole f. Sending all the options of a question in one
request saves the round trips, not the tokens; docs/probabilities.md has the measured numbers.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from worker.errors import InputError, RequestRejected
from worker.server import logprobs as lp
from worker.server.client import ModelClient
from worker.server.completions import COMPLETIONS_PATH, completion_request, read_completion
from worker.server.tokenization import TOKENIZE_PATH, read_tokens, tokenize_request
from worker.studies.probability_section import Question, Scoring

__all__ = [
    "ENTROPY_FLOOR",
    "NO_TOKENS_LOGPROB",
    "JointCompletionResult",
    "JointCompletionScorer",
    "probe_tokenizer",
]

# ModelScorer.score_completion's value for an option that adds no token after the prompt: not -inf, so
# the option keeps a tiny share (e^-100 relative) in the softmax.
NO_TOKENS_LOGPROB = -100.0
# compute_distribution_stats (src/utils/api_client.py) and the knowledge/response entropies: terms with
# p <= 1e-10 are left out of the entropy.
ENTROPY_FLOOR = 1e-10
# ModelScorer has no temperature (a plain log_softmax of the logits); vLLM's raw log-probabilities do not
# depend on it either, and 1.0 is where raw and processed agree.
TEMPERATURE = 1.0

# What the meta file says about the rule, beside the parameters.
RULE = (
    "ModelScorer.score_completion: p = tokenize(prompt), f = tokenize(prompt + option) with the tokenizer's "
    "default special tokens; log P(option) = sum of log P(f[i] | f[:i]) for i in [len(p), len(f)), "
    f"{NO_TOKENS_LOGPROB} when len(f) <= len(p); softmax over the options; entropy in bits over p > "
    f"{ENTROPY_FLOOR:g}; population standard deviation"
)


@dataclass(frozen=True)
class JointCompletionResult:
    """One question of one row scored by the researchers' rule, and the columns it becomes."""

    option_logprobs: dict[str, float]  # label -> summed natural-log probability; NO_TOKENS_LOGPROB if none
    option_token_ids: dict[str, list[int]]  # label -> the scored ids f[len(p):]
    boundary_merged: tuple[str, ...]  # labels whose f does not start with p
    prompt_text: str  # the raw prompt, as tokenized
    prompt_token_ids: tuple[int, ...]  # p

    @property
    def normalised(self) -> dict[str, float]:
        """The softmax over the options, in the question's option order."""
        labels = list(self.option_logprobs)
        return dict(zip(labels, lp.softmax([self.option_logprobs[k] for k in labels]), strict=True))

    def columns(self, question: Question) -> dict[str, Any]:
        normalised = self.normalised
        out: dict[str, Any] = {question.prob_columns[o.label]: normalised[o.label] for o in question.options}
        probabilities = [normalised[o.label] for o in question.options]
        if question.mean_column or question.std_column:
            values = [float(o.value) for o in question.options if o.value is not None]
            mean, std = lp.mean_and_std(values, probabilities)
            if question.mean_column:
                out[question.mean_column] = mean
            if question.std_column:
                out[question.std_column] = std
        out[question.entropy_column] = lp.entropy_bits(probabilities, floor=ENTROPY_FLOOR)
        raw = {label: lp.to_probability(value) for label, value in self.option_logprobs.items()}
        name = question.name
        out[f"{name}_method"] = Scoring.JOINT_COMPLETION.value
        out[f"{name}_coverage"] = math.fsum(raw.values())
        out[f"{name}_boundary_merged"] = ";".join(self.boundary_merged)
        out[f"{name}_raw"] = json.dumps(raw)
        out[f"{name}_logprobs"] = json.dumps(
            {k: None if math.isinf(v) else v for k, v in self.option_logprobs.items()}
        )
        out[f"{name}_option_token_ids"] = json.dumps(self.option_token_ids)
        out[f"{name}_prompt"] = self.prompt_text
        out[f"{name}_prompt_token_ids"] = json.dumps(list(self.prompt_token_ids))
        return out


async def _ids(text: str, client: ModelClient) -> list[int]:
    """`text` as the server's tokenizer makes it with its default special tokens."""
    body = tokenize_request(client.options.model_name, text, special_tokens=True)
    return (await client.post_json(TOKENIZE_PATH, body, expect=read_tokens)).expected


async def probe_tokenizer(client: ModelClient) -> dict[str, Any]:
    """Before the first row: the tokens the tokenizer adds to any text (its BOS, if it has one), for the
    meta file. InputError when the server cannot tokenize (a hosted API): the rule needs token ids."""
    try:
        added = await _ids("", client)
    except RequestRejected as err:
        if err.status != 404 or err.fatal:
            raise
        raise InputError(
            "joint-completion scoring needs the server's tokenizer (POST /tokenize), which this server "
            "does not have; the researchers' rule cannot be reproduced without token ids."
        ) from err
    return {
        "scoring": Scoring.JOINT_COMPLETION.value,
        "rule": RULE,
        "special_tokens_added": added,
        "requests": (
            "per question and row: /tokenize for the prompt and for each prompt+option, then one "
            "/v1/completions request carrying every option's tokens (echo, max_tokens 0, prompt_logprobs 0)"
        ),
        "prefix_cache": (
            "not read: vLLM skips its prefix cache for requests with prompt_logprobs "
            "(vllm/sampling_params.py), so every option's prompt is computed in full"
        ),
    }


@dataclass(frozen=True)
class JointCompletionScorer:
    """Scores every option of one question after its raw prompt, by the researchers' rule."""

    async def score(self, question: Question, prompt_text: str, client: ModelClient) -> JointCompletionResult:
        texts = [prompt_text, *(prompt_text + option.text for option in question.options)]
        prompt_ids, *joint = await asyncio.gather(*(_ids(text, client) for text in texts))
        start = len(prompt_ids)
        labels = [option.label for option in question.options]
        scored = {label: ids[start:] for label, ids in zip(labels, joint, strict=True)}
        sent = [(label, ids) for label, ids in zip(labels, joint, strict=True) if len(ids) > start]
        sums = await self._sums([ids for _, ids in sent], start, client) if sent else []
        option_logprobs = dict.fromkeys(labels, NO_TOKENS_LOGPROB)
        option_logprobs.update((label, total) for (label, _), total in zip(sent, sums, strict=True))
        return JointCompletionResult(
            option_logprobs=option_logprobs,
            option_token_ids=scored,
            boundary_merged=tuple(
                label for label, ids in zip(labels, joint, strict=True) if ids[:start] != prompt_ids
            ),
            prompt_text=prompt_text,
            prompt_token_ids=tuple(prompt_ids),
        )

    @staticmethod
    async def _sums(prompts: Sequence[list[int]], start: int, client: ModelClient) -> list[float]:
        """Each prompt's log-probability from position `start` on, all prompts in one request."""
        body = completion_request(
            client.options.model_name,
            prompts,
            max_tokens=0,
            echo=True,
            prompt_logprobs=0,
            temperature=TEMPERATURE,
        )
        starts = [start] * len(prompts)
        reply = await client.post_json(
            COMPLETIONS_PATH,
            body,
            expect=lambda body: read_completion(body).prompt_tail_logprobs(prompts, starts),
        )
        tails: list[list[float]] = reply.expected
        # A left-to-right float sum, as score_completion accumulates `total_logprob += ...`.
        return [sum(tail, 0.0) for tail in tails]
