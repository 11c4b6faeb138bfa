"""Prompts in token ids, as the server's own tokenizer and chat template make them.

Experiment 2 never lets the server re-tokenize text it scores: a conversation is rendered by the server's
chat template (`/tokenize` with the messages and the generation prompt), pieces of text are tokenized on
their own (no special tokens added, so they can be appended), and the ids sent for scoring are decoded
back (`/detokenize`) so the exact prompt can be recorded beside them.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.server.chat_messages import MessageBuilder
from worker.server.client import ModelClient
from worker.server.tokenization import (
    DETOKENIZE_PATH,
    TOKENIZE_PATH,
    detokenize_request,
    read_detokenized,
    read_tokens,
    tokenize_request,
)

__all__ = ["chat_prompt_ids", "detokenize", "text_ids"]


async def chat_prompt_ids(
    messages: list[dict[str, str]], client: ModelClient, *, chat: MessageBuilder, reasoning_effort: str | None
) -> list[int]:
    """The conversation as the chat template renders it, ending with the generation prompt."""
    # gpt-oss's chat template reads reasoning_effort into its system message.
    kwargs = None if reasoning_effort is None else {"reasoning_effort": reasoning_effort}
    body = tokenize_request(client.options.model_name, chat.fit(messages), chat_template_kwargs=kwargs)
    return (await client.post_json(TOKENIZE_PATH, body, expect=read_tokens)).expected


async def text_ids(text: str, client: ModelClient) -> list[int]:
    """`text` on its own, without special tokens ([] for no text, without asking)."""
    if not text:
        return []
    body = tokenize_request(client.options.model_name, text)
    return (await client.post_json(TOKENIZE_PATH, body, expect=read_tokens)).expected


async def detokenize(token_ids: Sequence[int], client: ModelClient) -> str:
    """The text of `token_ids`, special tokens included."""
    body = detokenize_request(client.options.model_name, token_ids)
    return (await client.post_json(DETOKENIZE_PATH, body, expect=read_detokenized)).expected
