"""The client's one retry layer against real HTTP faults from the fake server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from tests.support.fake_clock import FakeClock
from tests.support.fake_openai import FakeOpenAI, Hang, Ok, Reset, Status, Trickle, Truncate
from tests.unit.worker.support import CHAT, SHARED_REFERENCE
from worker import constants as c
from worker.errors import RequestRejected, RetryableError, ServerUnavailable
from worker.server.client import OUTCOME_OK, OUTCOME_TIMEOUT, ModelClient, _retry_after
from worker.server.client_options import ClientOptions

MESSAGES = [{"role": "user", "content": "hi"}]
# Only a client that hangs trips this; every deadline a test checks is far shorter.
HANG_GUARD_S = 60


class Outcomes:
    """The client's observer: the outcome of every attempt, in order."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def attempt_finished(self, outcome: str, seconds: float, usage: Mapping[str, Any] | None) -> None:
        self.seen.append(outcome)


def options(server: FakeOpenAI, **overrides: object) -> ClientOptions:
    values: dict[str, object] = {
        "endpoint": server.base_url,
        "model_name": "tiny",
        "timeout_s": 1.0,
        "max_retries": 3,
        "backoff_base_s": 0.01,
    }
    return ClientOptions.model_validate(values | overrides)


async def chat(
    server: FakeOpenAI, clock: FakeClock | None = None, observer: Outcomes | None = None, **overrides: object
) -> tuple[int, str]:
    """One chat request; with `clock`, the client backs off on it instead of the wall clock."""
    timing: dict[str, Any] = {} if clock is None else {"clock": clock, "sleep": clock.async_sleep}
    async with asyncio.timeout(HANG_GUARD_S):
        async with ModelClient(options(server, **overrides), observer=observer, **timing) as client:
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
    server.script(CHAT, fault)
    attempts, content = asyncio.run(chat(server))
    assert attempts == 2
    assert content == "answer to: hi"
    assert len(server.requests_to(CHAT)) == 2


def test_the_attempt_deadline_bounds_a_trickling_server(server: FakeOpenAI) -> None:
    # 0.4 s per byte would take minutes for a whole body; the 1 s deadline must cut each attempt (a
    # client without it trips the hang guard instead).
    server.script(CHAT, Trickle(0.4), Trickle(0.4))
    outcomes = Outcomes()
    attempts, _ = asyncio.run(chat(server, observer=outcomes))
    assert attempts == 3
    assert outcomes.seen == [OUTCOME_TIMEOUT, OUTCOME_TIMEOUT, OUTCOME_OK]


def test_retry_after_is_honoured(server: FakeOpenAI, clock: FakeClock) -> None:
    server.script(CHAT, Status(429, "slow down", retry_after=1))
    attempts, _ = asyncio.run(chat(server, clock))
    assert attempts == 2
    assert clock.slept == [1.0]  # the backoff base is 10 ms: only Retry-After explains a 1 s wait


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 11, 28, 18, 0, 0, tzinfo=UTC)
    when = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert _retry_after({"Retry-After": when}, now=now) == 30.0


def test_retry_after_in_the_past_means_at_once() -> None:
    now = datetime(2026, 11, 28, 18, 0, 0, tzinfo=UTC)
    when = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert _retry_after({"Retry-After": when}, now=now) == 0.0


@pytest.mark.parametrize("headers", [{"Retry-After": "garbage"}, {}], ids=["unreadable", "absent"])
def test_retry_after_that_is_not_there_is_none(headers: dict[str, str]) -> None:
    assert _retry_after(headers) is None


def test_retries_stop_at_max_retries_with_the_last_error(server: FakeOpenAI) -> None:
    server.rule(lambda request: request.path == CHAT, Status(500, "engine died"))
    with pytest.raises(RetryableError, match=r"gave up after 3 attempts: HTTP 500: engine died") as caught:
        asyncio.run(chat(server, max_retries=2))
    assert caught.value.attempts == 3
    assert len(server.requests_to(CHAT)) == 3


def test_max_retries_zero_means_one_attempt(server: FakeOpenAI) -> None:
    server.script(CHAT, Status(503))
    with pytest.raises(RetryableError, match="gave up after 1 attempts"):
        asyncio.run(chat(server, max_retries=0))
    assert len(server.requests_to(CHAT)) == 1


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_a_refusal_is_not_retried_and_keeps_the_servers_message(server: FakeOpenAI, status: int) -> None:
    server.script(CHAT, Status(status, f"refused with {status}"))
    with pytest.raises(RequestRejected, match=f"HTTP {status}: refused with {status}") as caught:
        asyncio.run(chat(server))
    assert caught.value.status == status
    assert caught.value.attempts == 1
    assert len(server.requests_to(CHAT)) == 1


@pytest.mark.skipif(not SHARED_REFERENCE.is_dir(), reason="../shared/reference/vllm-0.32 not present")
@pytest.mark.parametrize(
    ("name", "status", "fatal"), [("error_unknown_model", 404, True), ("error_too_long", 400, False)]
)
def test_real_vllm_error_bodies_become_clear_errors(
    server: FakeOpenAI, name: str, status: int, fatal: bool
) -> None:
    body = json.loads((SHARED_REFERENCE / f"{name}.json").read_text())
    server.handlers[CHAT] = lambda _request: Ok(body, status=status)
    with pytest.raises(RequestRejected) as caught:
        asyncio.run(chat(server))
    assert caught.value.message == body["error"]["message"]
    assert caught.value.fatal is fatal


def test_requests_in_flight_never_exceed_the_batch_size(server: FakeOpenAI) -> None:
    # Each reply is held long enough that the client has sent the next three before the first returns,
    # even on a loaded machine (0.1 s was not: under load the fourth request could start after the first
    # reply, and the peak read 3).
    server.latency_s = 0.5

    async def many() -> None:
        async with ModelClient(options(server, batch_size=4)) as client:
            await asyncio.gather(*(client.chat(MESSAGES) for _ in range(12)))

    asyncio.run(many())
    assert len(server.requests_to(CHAT)) == 12
    assert server.peak_in_flight == 4  # the bound, and reached: requests do run concurrently


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


def test_waits_for_a_loading_server(server: FakeOpenAI, clock: FakeClock) -> None:
    server.script(c.HEALTH_PATH, Status(503, "model is loading"), Status(503, "model is loading"))

    async def wait() -> None:
        async with ModelClient(options(server), clock=clock, sleep=clock.async_sleep) as client:
            await client.wait_until_healthy(10)

    asyncio.run(wait())
    assert len(server.requests_to(c.HEALTH_PATH)) == 3  # twice loading, then up
    assert clock.slept == [c.HEALTH_POLL_INTERVAL_S] * 2


def test_gives_up_on_a_server_that_never_answers(clock: FakeClock) -> None:
    closed = ClientOptions(endpoint="http://127.0.0.1:9/v1", model_name="tiny")  # port 9: discard, closed

    async def wait() -> None:
        async with ModelClient(closed, clock=clock, sleep=clock.async_sleep) as client:
            await client.wait_until_healthy(2.5)

    with pytest.raises(ServerUnavailable, match=r"did not answer /health within --wait-timeout 2.5 s"):
        asyncio.run(wait())
    assert clock.slept == [c.HEALTH_POLL_INTERVAL_S, 0.5]  # polled until the deadline, never past it


def test_the_api_key_is_sent_as_a_bearer_token(server: FakeOpenAI) -> None:
    asyncio.run(chat(server, api_key="sk-test"))
    assert server.requests_to(CHAT)[0].headers["authorization"] == "Bearer sk-test"
