"""`--method continuation`: an option's probability is the summed log-probability of its tokens appended
to the prompt, read from `prompt_logprobs` in one batched completion per question. Exact for options of
any length.

When one option's tokens are a proper prefix of another's ("was" and "was"+"n't"), the shorter option
counts only when the answer does not continue into the longer one, so the options stay disjoint events:
P(seq and not continuing) = P(seq) * (1 - P(next)), with the continuing token(s) scored in the same batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from worker.pipelines.probs.answer_tokens import OptionPlan
from worker.pipelines.probs.probs_config import Method
from worker.pipelines.probs.question_result import QuestionResult
from worker.server import logprobs as lp
from worker.server.client import ModelClient
from worker.server.completions import COMPLETIONS_PATH, completion_request, read_completion

__all__ = ["ContinuationScorer"]


@dataclass(frozen=True)
class ContinuationScorer:
    """Scores every option's token sequences after the prompt in one batched request."""

    temperature: float

    async def score(
        self, plan: OptionPlan, prompt_ids: list[int], prompt_text: str, client: ModelClient
    ) -> QuestionResult:
        keys = [(o.label, text) for o in plan.options for text in o.sequences]
        sequences = {(o.label, text): seq for o in plan.options for text, seq in o.sequences.items()}
        prompts = [[*prompt_ids, *sequences[key]] for key in keys]
        # Where a shorter option could continue into a longer one, also score the continuing token(s).
        extension_keys = [(key, tok) for key in keys for tok in plan.continuations.get(key, ())]
        prompts += [[*prompt_ids, *sequences[key], tok] for key, tok in extension_keys]
        body = completion_request(
            client.options.model_name,
            prompts,
            max_tokens=1,
            prompt_logprobs=0,
            temperature=self.temperature,
        )
        reply = await client.post_json(
            COMPLETIONS_PATH, body, expect=lambda body: read_completion(body).prompt_token_logprobs(prompts)
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
