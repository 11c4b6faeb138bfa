"""What one question of one row yields, whichever way it was scored, and the columns it becomes."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from worker.pipelines.probs.probs_config import Method
from worker.pipelines.probs.reasoning import Reasoning
from worker.server import logprobs as lp
from worker.studies.probability_section import Question

__all__ = ["REASONING_IDS_SUFFIX", "REASONING_SUFFIX", "QuestionResult"]

# after-reasoning: each question's generated analysis and its token ids.
REASONING_SUFFIX = "_reasoning"
REASONING_IDS_SUFFIX = "_reasoning_token_ids"


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

    @property
    def normalised(self) -> dict[str, float]:
        """label -> the option's share of the options' total probability."""
        return lp.distribution(self.option_logprobs).normalised

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
