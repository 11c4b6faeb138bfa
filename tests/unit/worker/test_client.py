"""The client's one retry layer against real HTTP faults from the fake server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from tests.support.fake_openai import FakeOpenAI, Hang, Ok, Reset, Status, Trickle, Truncate
from worker.errors import RequestRejected, RetryableError, ServerUnavailable
from worker.server.client import ModelClient, _retry_after
from worker.server.client_options import ClientOptions

REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "vllm-0.32"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def options(server: FakeOpenAI, **overrides: object) -> ClientOptions:
    values: dict[str, object] = {
        "endpoint": server.base_url,
        "model_name": "tiny",
        "timeout_s": 1.0,
        "max_retries": 3,
        "backoff_base_s": 0.01,
    }
    return ClientOptions.model_validate(values | overrides)


async def chat(server: FakeOpenAI, **overrides: object) -> tuple[int, str]:
    async with ModelClient(options(server, **overrides)) as client:
        reply = await client.chat(MESSAGES, max_tokens=4)
    return reply.attempts, reply.body["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    "fault",
    [
        *(Status(code) for code in (500, 502, 503, 408, 409)),
        Hang(3),
        Trickle(0.4),
        Truncate(),
        Reset(),
    ],
    ids=["500", "502", "503", "408", "409", "hang", "trickle", "truncated-json", "connection-reset"],
)
def test_a_transient_fault_is_retried_and_the_answer_arrives(server: FakeOpenAI, fault: object) -> None:
    server.script("/v1/chat/completions", fault)
    attempts, content = asyncio.run(chat(server))
    assert attempts == 2
    assert content == "answer to: hi"
    assert len(server.requests_to("/v1/chat/completions")) == 2


def test_the_attempt_deadline_bounds_a_trickling_server(server: FakeOpenAI) -> None:
    # 0.4 s per byte would take minutes for a whole body; the 1 s deadline must cut each attempt.
    server.script("/v1/chat/completions", Trickle(0.4), Trickle(0.4))
    started = time.monotonic()
    attempts, _ = asyncio.run(chat(server))
    assert attempts == 3
    assert time.monotonic() - started < 4.0


def test_retry_after_is_honoured(server: FakeOpenAI) -> None:
    server.script("/v1/chat/completions", Status(429, "slow down", retry_after=1))
    started = time.monotonic()
    attempts, _ = asyncio.run(chat(server))
    waited = time.monotonic() - started
    assert attempts == 2
    assert 1.0 <= waited < 2.0  # the backoff base is 10 ms: only Retry-After explains a 1 s wait


def test_retry_after_as_an_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    seconds = _retry_after({"Retry-After": format_datetime(when, usegmt=True)})
    assert seconds is not None
    assert 28 <= seconds <= 31
    assert _retry_after({"Retry-After": "garbage"}) is None
    assert _retry_after({}) is None


def test_retries_stop_at_max_retries_with_the_last_error(server: FakeOpenAI) -> None:
    server.rule(lambda request: request.path == "/v1/chat/completions", Status(500, "engine died"))
    with pytest.raises(RetryableError, match=r"gave up after 3 attempts: HTTP 500: engine died") as caught:
        asyncio.run(chat(server, max_retries=2))
    assert caught.value.attempts == 3
    assert len(server.requests_to("/v1/chat/completions")) == 3


def test_max_retries_zero_means_one_attempt(server: FakeOpenAI) -> None:
    server.script("/v1/chat/completions", Status(503))
    with pytest.raises(RetryableError, match="gave up after 1 attempts"):
        asyncio.run(chat(server, max_retries=0))
    assert len(server.requests_to("/v1/chat/completions")) == 1


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_a_refusal_is_not_retried_and_keeps_the_servers_message(server: FakeOpenAI, status: int) -> None:
    server.script("/v1/chat/completions", Status(status, f"refused with {status}"))
    with pytest.raises(RequestRejected, match=f"HTTP {status}: refused with {status}") as caught:
        asyncio.run(chat(server))
    assert caught.value.status == status
    assert caught.value.attempts == 1
    assert len(server.requests_to("/v1/chat/completions")) == 1


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/reference/vllm-0.32 not present")
@pytest.mark.parametrize(
    ("name", "status", "fatal"), [("error_unknown_model", 404, True), ("error_too_long", 400, False)]
)
def test_real_vllm_error_bodies_become_clear_errors(
    server: FakeOpenAI, name: str, status: int, fatal: bool
) -> None:
    body = json.loads((REFERENCE / f"{name}.json").read_text())
    server.handlers["/v1/chat/completions"] = lambda _request: Ok(body, status=status)
    with pytest.raises(RequestRejected) as caught:
        asyncio.run(chat(server))
    assert caught.value.message == body["error"]["message"]
    assert caught.value.fatal is fatal


def test_requests_in_flight_never_exceed_the_batch_size(server: FakeOpenAI) -> None:
    server.latency_s = 0.1

    async def many() -> None:
        async with ModelClient(options(server, batch_size=4)) as client:
            await asyncio.gather(*(client.chat(MESSAGES) for _ in range(12)))

    started = time.monotonic()
    asyncio.run(many())
    elapsed = time.monotonic() - started
    assert server.peak_in_flight == 4  # the bound, and reached: requests do run concurrently
    assert elapsed >= 0.3  # 12 requests of 0.1 s, 4 at a time: at least three waves


def test_post_json_reaches_the_server_root(server: FakeOpenAI) -> None:
    async def tokenize() -> dict[str, object]:
        async with ModelClient(options(server)) as client:
            return (await client.post_json("/tokenize", {"model": "tiny", "prompt": "one two"})).body

    body = asyncio.run(tokenize())
    assert body["count"] == 2
    assert server.requests[-1].path == "/tokenize"


def test_server_facts(server: FakeOpenAI) -> None:
    async def facts() -> tuple[bool, object, object]:
        async with ModelClient(options(server)) as client:
            return await client.health(), await client.version(), await client.model_entry()

    healthy, version, entry = asyncio.run(facts())
    assert healthy is True
    assert version == {"version": "0.32.0"}
    assert isinstance(entry, dict)
    assert entry["id"] == "tiny"
    assert entry["max_model_len"] == 512


def test_an_unknown_model_name_is_a_fatal_refusal(server: FakeOpenAI) -> None:
    async def entry() -> object:
        async with ModelClient(options(server, model_name="nope")) as client:
            return await client.model_entry()

    with pytest.raises(RequestRejected, match=r"`nope` does not exist.*served: tiny") as caught:
        asyncio.run(entry())
    assert caught.value.fatal


def test_waits_for_a_loading_server() -> None:
    with FakeOpenAI(healthy_after_s=1.0) as loading:

        async def wait() -> None:
            async with ModelClient(options(loading)) as client:
                await client.wait_until_healthy(10)

        started = time.monotonic()
        asyncio.run(wait())
        assert time.monotonic() - started >= 0.9


def test_gives_up_on_a_server_that_never_answers() -> None:
    closed = ClientOptions(endpoint="http://127.0.0.1:9/v1", model_name="tiny")  # port 9: discard, closed

    async def wait() -> None:
        async with ModelClient(closed) as client:
            await client.wait_until_healthy(0.5)

    with pytest.raises(ServerUnavailable, match=r"did not answer /health within --wait-timeout 0.5 s"):
        asyncio.run(wait())


def test_the_api_key_is_sent_as_a_bearer_token(server: FakeOpenAI) -> None:
    asyncio.run(chat(server, api_key="sk-test"))
    assert server.requests_to("/v1/chat/completions")[0].headers["authorization"] == "Bearer sk-test"
