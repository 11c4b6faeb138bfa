"""The approximate fallback for a server without `/tokenize` (a hosted API): one chat completion with
`max_tokens=1` and `top_logprobs`, each option matched to the candidates by text.

No token ids, no answer prefix: options longer than one token, and options outside the top N, are
reported absent, and the meta file says the result is approximate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from worker.pipelines.probs.answer_tokens import VariantPolicy, surface_variants
from worker.pipelines.probs.probs_config import Method
from worker.pipelines.probs.question_result import QuestionResult
from worker.server import logprobs as lp
from worker.server.chat_completions import ChatCandidate, read_chat_reply
from worker.server.chat_messages import MessageBuilder
from worker.server.client import ModelClient
from worker.studies.probability_section import Question

__all__ = ["ChatTopLogprobsScorer"]


@dataclass(frozen=True)
class ChatTopLogprobsScorer:
    """Matches each option's surface variants against the first answer token's top candidates."""

    top_logprobs: int  # --logprobs N
    temperature: float
    variants: VariantPolicy
    chat: MessageBuilder  # what the server's chat template accepts

    async def score(
        self, question: Question, messages: list[dict[str, str]], client: ModelClient
    ) -> QuestionResult:
        reply = await client.chat(
            self.chat.fit(messages),
            max_tokens=1,
            temperature=self.temperature,
            logprobs=True,
            top_logprobs=self.top_logprobs,
            expect=lambda body: read_chat_reply(body).top_candidates(),
        )
        candidates: list[ChatCandidate] = reply.expected
        option_logprobs: dict[str, float] = {}
        variants: dict[str, dict[str, list[int]]] = {}
        absent = []
        for option in question.options:
            forms = set(surface_variants(option.text, self.variants))
            # List entries are distinct tokens, so each matching entry is counted once.
            matched = [c for c in candidates if c.text in forms]
            option_logprobs[option.label] = lp.logsumexp(c.logprob for c in matched)
            variants[option.label] = {c.text: [] for c in matched}
            if not matched:
                absent.append(option.label)
        return QuestionResult(
            method=Method.CHAT_TOP_LOGPROBS,
            option_logprobs=option_logprobs,
            absent=tuple(absent),
            variants=variants,
            prompt_text=json.dumps(messages, ensure_ascii=False),
            prompt_token_ids=(),
        )
