"""`POST /v1/chat/completions`: the one request builder and the one reply parser every pipeline uses.

What a reply holds, as vLLM 0.32 sends it (recorded bodies in tests/fixtures/vllm-0.32):
- `choices[0].message.content`: the final answer; null when a reasoning model spent its whole budget on
  reasoning, or from a server that sent only reasoning.
- `choices[0].message.reasoning`: a reasoning model's reasoning (vllm/entrypoints/openai/chat_completion/
  protocol.py, ChatMessage); older vLLM and DeepSeek's API call it `reasoning_content`.
- `choices[0].logprobs.content[pos].top_logprobs`: with `logprobs: true, top_logprobs: N`, a *list* of
  `{token, logprob, bytes}`; entries never collide, but there are no token ids, and `token` is text, so a
  token that is not valid UTF-8 on its own is only recoverable from `bytes`.
- `prompt_token_ids` (top level): the prompt as the server's template rendered it, when the request
  asked for `return_token_ids`.

Reasoning is kept verbatim: a reasoning field holding only whitespace is still reasoning (the model wrote
it), so a reply with that and no content is complete, and its reasoning is recorded as sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.errors import ResponseError
from worker.server.logprobs import clean_logprob

__all__ = ["ChatCandidate", "ChatReply", "answered_chat", "chat_request", "read_chat_reply"]

# vLLM 0.32's field first, then the name older vLLM and DeepSeek's API use.
REASONING_KEYS = ("reasoning", "reasoning_content")


def chat_request(model: str, messages: Sequence[Mapping[str, Any]], **params: Any) -> dict[str, Any]:
    """The body of a chat completion: the model, the messages, then `params` as given.

    `params` are the request's other JSON fields: OpenAI's (max_tokens, temperature, seed, logprobs,
    top_logprobs, response_format, ...) and vLLM's own (top_k, return_token_ids, ...) alike.
    """
    return {"model": model, "messages": messages, **params}


@dataclass(frozen=True, slots=True)
class ChatCandidate:
    """One entry of a chat completion's `top_logprobs` list."""

    text: str  # the token's text, rebuilt from its UTF-8 `bytes` when the server sent them
    logprob: float  # natural log; -inf for vLLM's -9999.0


@dataclass(frozen=True)
class ChatReply:
    """The first choice of a chat completion, read once."""

    model: str  # the server's `model` field ("" when absent)
    has_message: bool  # the first choice carries a `message` object
    content: str | None  # the final answer verbatim; None when the server sent none
    reasoning: str  # the reasoning verbatim (REASONING_KEYS); "" when the model wrote none
    finish_reason: str | None  # "stop", "length", ...; None when absent
    prompt_tokens: int | None  # usage.prompt_tokens
    completion_tokens: int | None  # usage.completion_tokens
    prompt_token_ids: list[int]  # vLLM `return_token_ids`; [] from a server that does not return them
    logprobs: Mapping[str, Any] | None  # the choice's `logprobs` object, read by top_candidates

    @property
    def text(self) -> str:
        """The final answer, "" when there is none."""
        return self.content if self.content is not None else ""

    def answered(self) -> ChatReply:
        """This reply, when it holds what a chat completion promises: a message with content or, from a
        reasoning model, reasoning. ResponseError (the request is sent again) otherwise."""
        if not self.has_message:
            raise ResponseError("the chat completion's first choice has no message")
        if self.content is None and not self.reasoning:
            raise ResponseError("the chat completion's message has neither content nor reasoning")
        return self

    def top_candidates(self, position: int = 0) -> list[ChatCandidate]:
        """The `top_logprobs` list at generated position `position` (a request with `logprobs: true`)."""
        content = self.logprobs.get("content") if self.logprobs is not None else None
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
                bytes(raw).decode("utf-8", errors="replace")
                if isinstance(raw, list)
                else str(top.get("token"))
            )
            candidates.append(
                ChatCandidate(text=text, logprob=clean_logprob(top.get("logprob"), f"chat top {k}"))
            )
        return candidates


def read_chat_reply(body: Mapping[str, Any]) -> ChatReply:
    """The reply's first choice as a ChatReply; ResponseError when the body has no choices.

    Reads without judging: `answered()` and `top_candidates()` check what a request promised.
    """
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise ResponseError("the chat completion has no choices")
    choice = choices[0]
    message = choice.get("message")
    has_message = isinstance(message, Mapping)
    fields: Mapping[str, Any] = message if isinstance(message, Mapping) else {}
    content = fields.get("content")
    finish_reason = choice.get("finish_reason")
    usage = body.get("usage")
    usage = usage if isinstance(usage, Mapping) else {}
    ids = body.get("prompt_token_ids")
    logprobs = choice.get("logprobs")
    return ChatReply(
        model=str(body.get("model", "")),
        has_message=has_message,
        content=content if isinstance(content, str) else None,
        reasoning=_reasoning(fields),
        finish_reason=None if finish_reason is None else str(finish_reason),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        prompt_token_ids=ids if isinstance(ids, list) else [],
        logprobs=logprobs if isinstance(logprobs, Mapping) else None,
    )


def answered_chat(body: Mapping[str, Any]) -> ChatReply:
    """The `expect` of a request that wants an answer: read_chat_reply(body).answered()."""
    return read_chat_reply(body).answered()


def _reasoning(message: Mapping[str, Any]) -> str:
    """The first reasoning field holding text, verbatim (whitespace too: see the module docstring)."""
    for key in REASONING_KEYS:
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return ""
