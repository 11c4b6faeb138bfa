"""vLLM's `POST /tokenize` and `POST /detokenize`: the one request builder and the one reply parser each.

`/tokenize` takes either a chat conversation, which it renders with the server's own chat template (with
`add_generation_prompt`, exactly the prompt a chat completion would see), or plain text. Both answer
`{"tokens": [...], "count": ..., "max_model_len": ...}`. `/detokenize` takes token ids and answers
`{"prompt": "<text>"}`. Neither generates anything, so both are cheap. These are vLLM's own endpoints
(served at the root, not under /v1); a hosted API answers 404.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from worker.errors import ResponseError

__all__ = [
    "DETOKENIZE_PATH",
    "TOKENIZE_PATH",
    "detokenize_request",
    "read_detokenized",
    "read_tokens",
    "tokenize_request",
]

TOKENIZE_PATH = "/tokenize"
DETOKENIZE_PATH = "/detokenize"


def tokenize_request(
    model: str,
    content: str | Sequence[Mapping[str, str]],
    *,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    special_tokens: bool = False,
) -> dict[str, Any]:
    """The body that tokenizes `content`: a conversation as the chat template renders it, ending with the
    generation prompt; or text as it is. Text gets no special tokens, so it can be appended to a prompt,
    unless `special_tokens`: then `add_special_tokens` is left out and the server's default (true for
    text) adds what the tokenizer adds on its own, as Hugging Face's `tokenizer(text)` does (one BOS for
    Gemma-2 and Llama-3, none for gpt-oss)."""
    if isinstance(content, str):
        if special_tokens:
            return {"model": model, "prompt": content}
        return {"model": model, "prompt": content, "add_special_tokens": False}
    body: dict[str, Any] = {"model": model, "messages": content, "add_generation_prompt": True}
    if chat_template_kwargs is not None:
        body["chat_template_kwargs"] = dict(chat_template_kwargs)
    return body


def read_tokens(body: Mapping[str, Any]) -> list[int]:
    """The `tokens` every /tokenize reply promises; ResponseError (retried) when it has none."""
    tokens = body.get("tokens")
    if not isinstance(tokens, list) or any(isinstance(t, bool) or not isinstance(t, int) for t in tokens):
        raise ResponseError(f"POST {TOKENIZE_PATH} returned no `tokens` list of token ids.")
    return tokens


def detokenize_request(model: str, token_ids: Sequence[int]) -> dict[str, Any]:
    """The body that turns `token_ids` back into text."""
    return {"model": model, "tokens": list(token_ids)}


def read_detokenized(body: Mapping[str, Any]) -> str:
    """The text a /detokenize reply promises; ResponseError (retried) when it has none."""
    text = body.get("prompt")
    if not isinstance(text, str):
        raise ResponseError(f"POST {DETOKENIZE_PATH} returned no prompt text.")
    return text
