"""worker.server's request builders and reply parsers, one per endpoint, on the real vLLM 0.32 bodies.

The builders must make the requests the recordings were made with (tests/fixtures/vllm-0.32/*.request.json
where the worker sends that shape); the chat parser is the one place a reply's answer and reasoning are
read, so its rule for reasoning is pinned here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from worker.errors import ResponseError
from worker.server.chat_completions import answered_chat, chat_request, read_chat_reply
from worker.server.completions import answered_completion, completion_request, read_completion
from worker.server.tokenization import read_detokenized, read_tokens, tokenize_request

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "vllm-0.32"


def body(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def request(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.request.json").read_text(encoding="utf-8"))


def with_message(**message: Any) -> dict[str, Any]:
    """The real chat body with its first message replaced."""
    reply = copy.deepcopy(body("chat_logprobs_top5"))
    reply["choices"][0]["message"] = {"role": "assistant", **message}
    return reply


# ---- builders ---------------------------------------------------------------------------------------------


def test_the_builders_make_the_recorded_requests() -> None:
    recorded = request("completions_stop_token_ids")
    built = completion_request(
        "tiny",
        recorded["prompt"],
        max_tokens=40,
        temperature=1.0,
        seed=7,
        stop_token_ids=[505],
        return_token_ids=True,
        skip_special_tokens=False,
    )
    assert built == recorded
    assert tokenize_request("tiny", request("tokenize_system_role_refused")["messages"]) == request(
        "tokenize_system_role_refused"
    )
    chat = request("chat_roles_not_alternating")
    assert chat_request("tiny", chat["messages"], max_tokens=3) == chat


def test_a_completion_body_sends_only_the_fields_asked_for_in_one_order() -> None:
    # The order is part of the bytes on the wire; unset fields are left to the server's defaults.
    built = completion_request(
        "m", [1, 2], max_tokens=1, logprobs=5, temperature=1.0, token_ids_as_keys=True, logprob_token_ids=[]
    )
    assert json.dumps(built) == (
        '{"model": "m", "prompt": [1, 2], "max_tokens": 1, "logprobs": 5, "temperature": 1.0, '
        '"return_tokens_as_token_ids": true, "logprob_token_ids": []}'
    )
    assert tokenize_request("m", "yes") == {"model": "m", "prompt": "yes", "add_special_tokens": False}


def test_a_raw_text_completion_carries_the_researchers_fields_and_no_others() -> None:
    # Their client sends prompt, temperature, max_tokens, then stop and seed when set (api_client.py:91-104).
    built = completion_request("m", "Q?\n\nYour answer is:", max_tokens=100, temperature=0.3,
                               stop=["<end_of_turn>"], seed=42)  # fmt: skip
    assert json.dumps(built, ensure_ascii=False) == (
        '{"model": "m", "prompt": "Q?\\n\\nYour answer is:", "max_tokens": 100, "temperature": 0.3, '
        '"stop": ["<end_of_turn>"], "seed": 42}'
    )
    assert list(completion_request("m", "Q", max_tokens=50, temperature=0.3)) == [
        "model", "prompt", "max_tokens", "temperature",
    ]  # fmt: skip


# ---- chat completions -------------------------------------------------------------------------------------


def test_the_real_chat_reply_is_read_once_into_one_result() -> None:
    reply = read_chat_reply(body("chat_logprobs_top5"))
    assert (reply.model, reply.content, reply.reasoning) == ("tiny", "nment", "")
    assert reply.finish_reason == "length"
    assert (reply.prompt_tokens, reply.completion_tokens, reply.prompt_token_ids) == (10, 1, [])
    assert [c.text for c in reply.top_candidates()][:2] == ["nment", "<|assistant|>"]


@pytest.mark.parametrize("reasoning", ["\n", "  ", "Let me think."], ids=["newline", "spaces", "text"])
def test_reasoning_is_kept_verbatim_even_when_it_is_only_whitespace(reasoning: str) -> None:
    # The one rule every pipeline now shares: a reasoning field holding text (whitespace too) is reasoning,
    # so a reply with it and no content is complete, and the reasoning is recorded as the model wrote it.
    reply = answered_chat(with_message(content=None, reasoning=reasoning))
    assert (reply.content, reply.text, reply.reasoning) == (None, "", reasoning)


def test_older_servers_reasoning_content_is_read_too() -> None:
    reply = answered_chat(with_message(content="yes", reasoning=None, reasoning_content="because"))
    assert reply.reasoning == "because"


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({"content": None, "reasoning": ""}, "neither content nor reasoning"),
        ({"content": None}, "neither content nor reasoning"),
        (None, "has no message"),
    ],
)
def test_a_reply_without_an_answer_is_a_response_error(message: dict[str, Any] | None, problem: str) -> None:
    reply = body("chat_logprobs_top5")
    reply["choices"][0]["message"] = message
    with pytest.raises(ResponseError, match=problem):
        answered_chat(reply)
    read_chat_reply(reply)  # reading alone never judges: only a request that wants an answer does


# ---- tokenize and detokenize ------------------------------------------------------------------------------


def test_tokenize_replies_promise_token_ids() -> None:
    assert read_tokens(body("tokenize")) == body("tokenize")["tokens"]
    with pytest.raises(ResponseError, match="no `tokens` list"):
        read_tokens({"tokens": [1, True]})
    assert read_detokenized({"prompt": "yes"}) == "yes"
    with pytest.raises(ResponseError, match="no prompt text"):
        read_detokenized({"prompt": None})


# ---- completions ------------------------------------------------------------------------------------------


def test_the_generated_token_ids_of_a_stopped_completion_are_read() -> None:
    reply = body("completions_stop_token_ids")
    (choice,) = read_completion(reply).choices
    assert choice.token_ids == tuple(reply["choices"][0]["token_ids"])
    assert choice.token_ids is not None
    assert choice.token_ids[-1] == 505
    assert choice.text == reply["choices"][0]["text"]


def test_a_choice_index_that_is_not_a_number_is_a_response_error() -> None:
    reply = body("completions_stop_token_ids")
    reply["choices"][0]["index"] = "first"
    with pytest.raises(ResponseError, match="index"):
        read_completion(reply)


def test_a_completion_reply_carries_its_model_and_usage() -> None:
    reply = answered_completion(body("completions_stop_token_ids"))
    assert (reply.model, reply.prompt_tokens, reply.completion_tokens) == ("tiny", 8, 3)


def test_a_completion_without_text_is_a_response_error() -> None:
    reply = body("completions_stop_token_ids")
    del reply["choices"][0]["text"]
    assert read_completion(reply).choices[0].text == ""  # read without judging ...
    with pytest.raises(ResponseError, match="without text"):
        answered_completion(reply)  # ... but a request that wants an answer is sent again
