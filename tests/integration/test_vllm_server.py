"""Smoke tests of the real vLLM server's shapes: what the worker relies on, checked on the server
it will meet in the cluster (same vLLM version, same flags), not on a fake.

The expected token ids come from the tokenizer.json the server loaded, read here as plain JSON,
so the server's tokenization is compared with an independent reading of the same file.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.vllm

VLLM_VERSION = "0.32.0"
MAX_MODEL_LEN = 512
# Byte-level BPE writes a leading space as "Ġ" and a newline as "Ċ" in its vocabulary.
SPACE, NEWLINE = "\u0120", "\u010a"


@pytest.fixture(scope="module")
def client(vllm_server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=vllm_server.root_url, timeout=60.0) as http:
        yield http


@pytest.fixture(scope="module")
def vocab(vllm_server) -> dict[str, int]:
    tokenizer = json.loads((Path(vllm_server.model_dir) / "tokenizer.json").read_text())
    table: dict[str, int] = dict(tokenizer["model"]["vocab"])
    for added in tokenizer["added_tokens"]:
        table[added["content"]] = added["id"]
    return table


def _tokenize(client: httpx.Client, name: str, **body: object) -> list[int]:
    resp = client.post("/tokenize", json={"model": name, **body})
    assert resp.status_code == 200, resp.text
    tokens: list[int] = resp.json()["tokens"]
    assert resp.json()["count"] == len(tokens)
    return tokens


def test_health_and_version(client):
    assert client.get("/health").status_code == 200
    assert client.get("/version").json() == {"version": VLLM_VERSION}


def test_models_lists_the_served_name_with_its_context(client, vllm_server):
    models = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in models] == [vllm_server.served_name]
    assert models[0]["max_model_len"] == MAX_MODEL_LEN
    assert Path(models[0]["root"]) == Path(vllm_server.model_dir)


@pytest.mark.parametrize("text", ["0", "1", "2", "3", " 0", " 3", "yes", " yes", "no", " no"])
def test_answer_texts_are_single_tokens(client, vllm_server, vocab, text):
    assert _tokenize(client, vllm_server.served_name, prompt=text) == [vocab[text.replace(" ", SPACE)]]


@pytest.mark.parametrize("text", ["terrible", "wasn't", "100%"])
def test_some_options_take_several_tokens(client, vllm_server, text):
    assert len(_tokenize(client, vllm_server.served_name, prompt=text)) >= 2


def test_chat_template_ends_with_the_generation_prompt(client, vllm_server, vocab):
    messages = [{"role": "system", "content": "Answer yes or no."}, {"role": "user", "content": "Is it red?"}]
    with_prompt = _tokenize(client, vllm_server.served_name, messages=messages, add_generation_prompt=True)
    without = _tokenize(client, vllm_server.served_name, messages=messages, add_generation_prompt=False)
    assert with_prompt[0] == vocab["<s>"]
    assert with_prompt[: len(without)] == without
    assert with_prompt[len(without) :] == [vocab["<|assistant|>"], vocab[NEWLINE]]


def test_completion_logprobs_shape(client, vllm_server):
    body = {"model": vllm_server.served_name, "prompt": "The answer is", "max_tokens": 1, "logprobs": 5,
            "temperature": 0}  # fmt: skip
    resp = client.post("/v1/completions", json=body)
    assert resp.status_code == 200, resp.text
    choice = resp.json()["choices"][0]
    logprobs = choice["logprobs"]
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == 1
    top = logprobs["top_logprobs"][0]
    # vLLM returns the top N plus the sampled token when it is not among them: N or N+1 entries,
    # keyed by decoded text (distinct ids can collide on the same text).
    assert 1 <= len(top) <= 6
    assert all(v <= 0.0 for v in top.values())
    # Greedy: the sampled token is the most likely one.
    assert logprobs["token_logprobs"][0] == pytest.approx(max(top.values()), abs=1e-6)
    assert resp.json()["usage"]["completion_tokens"] == 1
    # The weights are drawn wide on purpose: the distribution is far from uniform over the vocab.
    assert max(top.values()) > math.log(1 / 1024) + 1.0


def test_logprobs_are_deterministic(client, vllm_server):
    body = {"model": vllm_server.served_name, "prompt": [5, 6, 7, 8], "max_tokens": 1, "logprobs": 20,
            "temperature": 0}  # fmt: skip
    first = client.post("/v1/completions", json=body).json()["choices"][0]["logprobs"]["top_logprobs"][0]
    second = client.post("/v1/completions", json=body).json()["choices"][0]["logprobs"]["top_logprobs"][0]
    assert len(first) >= 15  # 20 requested; a few may collide on decoded text
    assert first == pytest.approx(second, abs=1e-5)


def test_echo_with_prompt_logprobs_scores_every_prompt_token(client, vllm_server):
    prompt = "It wasn't terrible"
    ids = _tokenize(client, vllm_server.served_name, prompt=prompt)
    body = {"model": vllm_server.served_name, "prompt": ids, "max_tokens": 1, "logprobs": 1, "echo": True,
            "prompt_logprobs": 1, "temperature": 0}  # fmt: skip
    resp = client.post("/v1/completions", json=body)
    assert resp.status_code == 200, resp.text
    choice = resp.json()["choices"][0]
    prompt_logprobs = choice["prompt_logprobs"]
    assert len(prompt_logprobs) == len(ids)
    assert prompt_logprobs[0] is None  # nothing conditions the first token
    for position, token_id in enumerate(ids[1:], start=1):
        entry = prompt_logprobs[position][str(token_id)]
        assert entry["logprob"] <= 0.0
        assert entry["rank"] >= 1
    echoed = choice["logprobs"]["token_logprobs"]
    assert echoed[0] is None
    assert echoed[1 : len(ids)] == pytest.approx(
        [prompt_logprobs[p][str(t)]["logprob"] for p, t in enumerate(ids[1:], start=1)], abs=1e-6
    )


def test_more_than_max_logprobs_is_a_400(client, vllm_server):
    body = {"model": vllm_server.served_name, "prompt": "hi", "max_tokens": 1, "logprobs": 21}
    resp = client.post("/v1/completions", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == 400


def test_structured_output_json_schema_is_enforced(client, vllm_server):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}, "level": {"type": "integer",
                       "enum": [0, 1, 2, 3]}},
        "required": ["answer", "level"],
        "additionalProperties": False,
    }  # fmt: skip
    body = {
        "model": vllm_server.served_name,
        "messages": [{"role": "user", "content": "Answer in JSON."}],
        "max_tokens": 40,
        "temperature": 1.0,
        "seed": 7,
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema,
                                                                   "strict": True}},
    }  # fmt: skip
    resp = client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    choice = resp.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    content = choice["message"]["content"]
    assert " " not in content  # disable_any_whitespace: compact JSON
    parsed = json.loads(content)
    assert parsed["answer"] in ("yes", "no")
    assert parsed["level"] in (0, 1, 2, 3)
    assert set(parsed) == {"answer", "level"}


def test_unknown_model_is_a_real_404(client):
    resp = client.post("/v1/completions", json={"model": "nope", "prompt": "hi", "max_tokens": 1})
    assert resp.status_code == 404
    error = resp.json()["error"]
    assert error["type"] == "NotFoundError"
    assert "nope" in error["message"]


def test_too_long_prompt_is_a_real_400(client, vllm_server, vocab):
    prompt = [vocab["yes"]] * (MAX_MODEL_LEN + 10)
    resp = client.post(
        "/v1/completions", json={"model": vllm_server.served_name, "prompt": prompt, "max_tokens": 1}
    )
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "BadRequestError"
    assert str(MAX_MODEL_LEN) in error["message"]


def test_too_many_output_tokens_is_a_real_400(client, vllm_server):
    body = {"model": vllm_server.served_name, "prompt": "hi", "max_tokens": 100_000}
    resp = client.post("/v1/completions", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "max_tokens"


def test_server_log_is_captured(vllm_server):
    if vllm_server.log_path is None:
        pytest.skip("reusing a server started elsewhere (GRACE_VLLM_URL): its log is not ours")
    assert "Application startup complete" in Path(vllm_server.log_path).read_text(errors="replace")


def test_many_seeded_requests_at_once_keep_the_server_alive(client, vllm_server):
    # Every sampled request carries its own seed. On CPU, vLLM 0.32 rewinds a seeded request's generator
    # when its prefill is split across steps, which CPU generators refuse, and the engine dies; the
    # server therefore runs without chunked prefill (scripts/tiny_vllm.py). 40 distinct ~200-token
    # prompts are more than one step's 2,048-token budget, so with chunked prefill some would be split.
    def ask(i: int) -> int:
        words = " ".join(f"w{(i * 7919 + k * 104729) % 9973}" for k in range(45))
        body = {
            "model": vllm_server.served_name,
            "messages": [{"role": "user", "content": words}],
            "max_tokens": 8,
            "temperature": 0.3,
            "seed": 1000 + i,
        }
        return client.post("/v1/chat/completions", json=body).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=40) as pool:
        statuses = list(pool.map(ask, range(40)))
    assert statuses == [200] * 40
    assert client.get("/health").status_code == 200
