"""`--method first-token`: an option's probability is its first token's, from one completion with
`max_tokens=1` on the prompt's token ids.

Exact only when every option (and every surface variant of it) is ONE token for this model's tokenizer,
all distinct, and all scored: the top N candidates hold them, or the server scores the options' own token
ids at any rank (vLLM's `logprob_token_ids`, probed once before the rows). A variant outside what the
server returned leaves its option a lower bound, and the result says so (`complete=False`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.errors import InputError, RequestRejected
from worker.pipelines.probs.answer_tokens import OptionPlan
from worker.pipelines.probs.probs_config import Method
from worker.pipelines.probs.question_result import QuestionResult
from worker.server import logprobs as lp
from worker.server.client import ModelClient
from worker.server.completions import COMPLETIONS_PATH, completion_request, read_completion
from worker.studies.probability_section import Question

__all__ = ["FirstTokenScorer", "check_first_tokens_distinct", "server_scores_requested_ids"]

# vLLM >= 0.30 scores requested token ids at any rank (`logprob_token_ids`), up to this many per request
# (vllm/sampling_params.py MAX_LOGPROB_TOKEN_IDS); older servers ignore the field and return the top N.
MAX_REQUESTED_TOKEN_IDS = 128


def top_by_token_id(body: Mapping[str, Any]) -> dict[int, float]:
    """The `expect` of a first-token request: the candidates at the first generated position."""
    return read_completion(body).top_by_token_id()


@dataclass(frozen=True)
class FirstTokenScorer:
    """Reads each option's first token from the top candidates (or the requested ids) of one completion."""

    top_logprobs: int  # --logprobs N
    temperature: float
    scores_requested_ids: bool  # the server honours logprob_token_ids (probed before the rows)

    async def score(
        self, plan: OptionPlan, prompt_ids: list[int], prompt_text: str, client: ModelClient
    ) -> QuestionResult:
        body = completion_request(
            client.options.model_name,
            prompt_ids,
            max_tokens=1,
            logprobs=self.top_logprobs,
            temperature=self.temperature,
            # Keys become token_id:<id>: decoded-text keys collide and cannot be matched to ids.
            token_ids_as_keys=True,
            logprob_token_ids=self._requested_ids(plan),
        )
        top = (await client.post_json(COMPLETIONS_PATH, body, expect=top_by_token_id)).expected
        option_logprobs: dict[str, float] = {}
        absent: list[str] = []
        variants: dict[str, dict[str, list[int]]] = {}
        for option in plan.options:
            firsts = {text: seq[0] for text, seq in option.sequences.items()}
            seen = {text: tok for text, tok in firsts.items() if tok in top}
            # Each distinct token once: two variants may start with the same token (multi-token options).
            option_logprobs[option.label] = lp.logsumexp(top[tok] for tok in set(seen.values()))
            variants[option.label] = {text: [tok] for text, tok in seen.items()}
            if not seen:
                absent.append(option.label)
        return QuestionResult(
            method=Method.FIRST_TOKEN,
            option_logprobs=option_logprobs,
            absent=tuple(absent),
            variants=variants,
            prompt_text=prompt_text,
            prompt_token_ids=tuple(prompt_ids),
            complete=all(tok in top for o in plan.options for tok in (s[0] for s in o.sequences.values())),
        )

    def _requested_ids(self, plan: OptionPlan) -> list[int] | None:
        """Ask for the options' own first tokens, so none can fall outside the top N, where supported."""
        ids = sorted({seq[0] for o in plan.options for seq in o.sequences.values()})
        if not self.scores_requested_ids or len(ids) > MAX_REQUESTED_TOKEN_IDS:
            return None
        return ids


async def server_scores_requested_ids(
    prompt_ids: list[int], answer_prefix_ids: tuple[int, ...], client: ModelClient
) -> bool:
    """Does the server score requested token ids (vLLM's logprob_token_ids) instead of the top N?

    Asked once, on a rendered conversation (`prompt_ids`) followed by the answer prefix.
    """

    # Greedy, one candidate: a server that ignores the field returns only the argmax token, so two
    # other ids (taken from the prompt: valid for this vocabulary) come back only if it scored them.
    def greedy(requested: list[int] | None) -> dict[str, Any]:
        return completion_request(
            client.options.model_name,
            [*prompt_ids, *answer_prefix_ids],
            max_tokens=1,
            logprobs=1,
            temperature=0.0,
            token_ids_as_keys=True,
            logprob_token_ids=requested,
        )

    try:
        argmax = set(
            (await client.post_json(COMPLETIONS_PATH, greedy(None), expect=top_by_token_id)).expected
        )
        wanted = [token for token in dict.fromkeys(prompt_ids) if token not in argmax][:2]
        reply = await client.post_json(COMPLETIONS_PATH, greedy(wanted), expect=top_by_token_id)
    except RequestRejected:
        return False  # the field is unknown here, or probing is refused: read the top N as before
    return set(wanted) <= set(reply.expected)


def check_first_tokens_distinct(question: Question, plan: OptionPlan) -> None:
    """--method first-token on multi-token options reads each option's first token, as asked, but only
    when the first tokens tell the options apart; InputError otherwise (the numbers would mean nothing)."""
    owner: dict[int, str] = {}
    for option in plan.options:
        for seq in option.sequences.values():
            if owner.setdefault(seq[0], option.label) != option.label:
                raise InputError(
                    f"--method first-token: options {owner[seq[0]]!r} and {option.label!r} of question "
                    f"{question.name!r} start with the same token for this model; use --method "
                    "continuation (or auto)."
                )
