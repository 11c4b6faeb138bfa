"""The only module that talks HTTP: one connection pool, a bound on requests in flight, one retry layer.

Every request goes through `ModelClient._attempts`, which:
- holds one of `batch_size` slots only while a request is on the wire (not while backing off), so a slow
  request never idles the others (`--batch-size` is requests in flight, not a lockstep batch);
- puts an overall asyncio deadline of `timeout_s` on each attempt, covering connect, headers AND body, so
  a server that trickles bytes cannot hang a row (socket read timeouts reset on every byte);
- retries connection errors, the deadline, 408/409/429 and 5xx, and bodies that are not the JSON the
  API promises, with jittered exponential backoff that honours Retry-After, up to `max_retries`;
- never retries 4xx refusals (`RequestRejected`): the same request would be refused again;
- treats a 2xx chat or text completion without `choices` as a bad body (`ResponseError`, retried), and
  runs the request's own `expect` (what its pipeline asked the reply to contain: logprobs, token ids, an
  answer) inside the same loop, so a reply missing a promised field is retried with the same backoff and
  tallied the same way on every pipeline: the one taxonomy of worker.errors, in one place;
- given `outage_wait_s`, tells a server that is away from a request that failed: a connection error, an
  attempt deadline or a 502/503/504 makes it ask /health once (shared by every request in flight); if
  /health fails too, every request pauses while the client waits for /health to come back (a vLLM
  restart or a node drain takes minutes on NRP) and the failed attempt does not count as a retry. Past
  `outage_wait_s` every request raises ServerUnavailable, so the run stops with the rows unsent instead
  of recording each as failed after burning its retries in seconds.

Which requests gave up after every retry is tallied per work item (`tally_requests`), so the runner can
tell a row that failed for transport reasons (sent again by the next run) from one that failed for its
own (kept), whatever a pipeline wraps the error in.

It speaks the OpenAI wire protocol itself over aiohttp, not through the `openai` client over httpx,
because both cost too much CPU to keep a server saturated (benchmarks/worker_throughput.py),
measured on this project's 2-core machine with 64 requests in flight against a local instant server:
  openai chat.completions.create   ~12 ms CPU per request (its parameter transform introspects TypedDicts)
  httpx, one 64-connection pool    ~5.7 ms (httpcore scans every connection on every request event)
  httpx, 64 one-connection pools   ~2.1-3.4 ms
  aiohttp, one 64-connection pool  ~0.4-0.5 ms
Without the openai client there is also exactly one retry layer by construction.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp

from worker import constants as c
from worker.errors import RequestRejected, ResponseError, RetryableError, ServerUnavailable
from worker.server.chat_completions import chat_request
from worker.server.client_options import ClientOptions

__all__ = ["Expectation", "ModelClient", "Reply", "RequestObserver", "RequestTally", "tally_requests"]

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

# What a request promises its reply will contain: reads the body and returns what the pipeline needs from
# it, or raises ResponseError naming the missing field (then the request is sent again). It must raise
# nothing else: a complete reply that is unusable for the row is the pipeline's to judge afterwards.
Expectation = Callable[[JsonObject], Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful response."""

    body: JsonObject  # the parsed JSON body, every field the server sent (vLLM extras included)
    attempts: int  # 1 when the first attempt succeeded
    latency_s: float  # seconds the successful attempt took, excluding earlier attempts and backoff
    expected: Any = None  # what the request's `expect` returned for the body (None without one)


@dataclass(slots=True)
class RequestTally:
    """The fate of one work item's requests (asyncio tasks a pipeline starts share their parent's)."""

    gave_up: int = 0  # requests that failed every attempt with a transient error
    rejected: int = 0  # requests refused with a 4xx


_TALLY: ContextVar[RequestTally | None] = ContextVar("grace_request_tally", default=None)


def tally_requests() -> RequestTally:
    """Start counting the requests of the current task (and the tasks it starts); returns the tally."""
    tally = RequestTally()
    _TALLY.set(tally)
    return tally


class RequestObserver(Protocol):
    """Receives one call per attempt; the runner's metrics implement it."""

    def attempt_finished(self, outcome: str, seconds: float, usage: Mapping[str, Any] | None) -> None: ...


# Attempt outcomes, the label values of the requests metric.
OUTCOME_OK = "ok"
OUTCOME_REJECTED = "rejected"
OUTCOME_TIMEOUT = "timeout"
OUTCOME_CONNECTION = "connection_error"
OUTCOME_HTTP = "http_error"
OUTCOME_BAD_BODY = "bad_body"


class ModelClient:
    """A client for one OpenAI-compatible server. Use as `async with ModelClient(options) as client:`."""

    def __init__(
        self,
        options: ClientOptions,
        *,
        observer: RequestObserver | None = None,
        outage_wait_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.options = options
        self._observer = observer
        # What the client waits by: the clock of --wait-timeout and outage_wait_s, and the sleep between
        # attempts and between /health polls (a test passes its own; the per-attempt deadline is the
        # event loop's asyncio.timeout, and latencies are always measured on the real clock).
        self._clock = clock
        self._sleep = sleep
        self._slots = asyncio.Semaphore(options.batch_size)
        self._session: aiohttp.ClientSession | None = None
        self._outage_wait_s = outage_wait_s  # None: no outage detection, every failure is a retry
        self._outage_lock = asyncio.Lock()
        self._last_check_at = float("-inf")  # when /health was last asked after a failure ...
        self._last_check_found_outage = False  # ... and whether the server was away then
        self.outages = 0  # outages waited out
        self.unavailable: ServerUnavailable | None = None  # set once an outage outlasted outage_wait_s

    async def __aenter__(self) -> ModelClient:
        # aiohttp sessions belong to the running event loop, so the session is made here, not in __init__.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self.options.batch_size,
                limit_per_host=self.options.batch_size,
                ttl_dns_cache=c.DNS_CACHE_S,
            ),
            # The per-attempt deadline is ours alone (asyncio.timeout in _attempts): aiohttp's own socket
            # timeouts would arm two more timers per request for nothing (profiled on the benchmark).
            timeout=aiohttp.ClientTimeout(total=None),
            headers={"Authorization": f"Bearer {self.options.api_key.get_secret_value()}"},
            raise_for_status=False,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use ModelClient as `async with ModelClient(options) as client:`")
        return self._session

    # ---- the API the pipelines use -------------------------------------------------------------------

    async def chat(
        self, messages: Sequence[Mapping[str, Any]], *, expect: Expectation | None = None, **params: Any
    ) -> Reply:
        """POST /v1/chat/completions for the configured model (worker.server.chat_completions builds it).

        `params` are the request's other JSON fields, passed through as given: OpenAI's (max_tokens,
        temperature, seed, logprobs, top_logprobs, response_format, ...) and vLLM's own (top_k,
        structured_outputs, ...) alike. `expect` checks the reply holds what the request asked for.
        """
        body = chat_request(self.options.model_name, messages, **params)
        return await self.post_json(c.CHAT_PATH, body, expect=expect)

    async def post_json(
        self, path: str, body: Mapping[str, Any], *, expect: Expectation | None = None
    ) -> Reply:
        """POST a JSON body to `path` relative to the server root ("/v1/completions", "/tokenize").

        `expect` reads the reply inside the retry loop (a ResponseError from it is retried); what it
        returns is the reply's `expected`.
        """
        return await self._attempts("POST", path, body, expect)

    async def models(self) -> list[JsonObject]:
        """The `data` entries of GET /v1/models (id, root, max_model_len, ...)."""
        return (await self._attempts("GET", c.MODELS_PATH, expect=_model_entries)).expected

    async def model_entry(self) -> JsonObject:
        """The /v1/models entry of the configured model; RequestRejected(404) when the server lacks it."""
        entries = await self.models()
        for entry in entries:
            if entry.get("id") == self.options.model_name:
                return entry
        served = ", ".join(str(entry.get("id")) for entry in entries) or "none"
        raise RequestRejected(
            404,
            f"The model `{self.options.model_name}` does not exist at {self.options.base_url} "
            f"(served: {served}).",
        )

    async def version(self) -> JsonObject | None:
        """GET /version (vLLM's own endpoint); None when the server has no such endpoint."""
        try:
            return (await self._attempts("GET", c.VERSION_PATH)).body
        except RequestRejected:
            return None

    async def health(self) -> bool:
        """One probe: True when /health answers 200, or 404 (a hosted API without vLLM's /health is up)."""
        try:
            async with asyncio.timeout(c.HEALTH_PROBE_TIMEOUT_S):
                status = await self._status_of(c.HEALTH_PATH)
        except (aiohttp.ClientError, TimeoutError) as err:
            log.debug("health probe failed: %s", _describe(err))
            return False
        return status in {200, 404}

    async def _status_of(self, path: str) -> int:
        async with self.session.get(self._url(path)) as response:
            await response.read()
            return response.status

    async def wait_until_healthy(self, timeout_s: float, *, purpose: str = "to start") -> None:
        """Poll /health until it answers or `timeout_s` passes; ServerUnavailable then.

        Logs what it waits for and how long is left when it starts waiting and every WAIT_LOG_INTERVAL_S.
        """
        started = self._clock()
        deadline = started + timeout_s
        next_log = started
        where = f"{self.options.server_root}{c.HEALTH_PATH}"
        while not await self.health():
            now = self._clock()
            if now >= deadline:
                raise ServerUnavailable(
                    f"The model server at {self.options.server_root} did not answer {c.HEALTH_PATH} "
                    f"within --wait-timeout {timeout_s:g} s."
                )
            if now >= next_log:
                log.info(
                    "waiting for the model server %s: %s, %.0f s of --wait-timeout %g s left",
                    purpose,
                    where,
                    deadline - now,
                    timeout_s,
                )
                next_log = now + c.WAIT_LOG_INTERVAL_S
            await self._sleep(min(c.HEALTH_POLL_INTERVAL_S, max(0.0, deadline - self._clock())))

    async def _server_went_away(self, failed_at: float) -> bool:
        """After a failed attempt: True when the server was away and has come back (do not count it).

        One /health probe answers for every request that failed before it; while the server is away the
        lock holds every other failing request here. ServerUnavailable when it stays away too long.
        """
        if self._outage_wait_s is None:
            return False
        async with self._outage_lock:
            if self.unavailable is not None:
                raise self.unavailable
            if self._last_check_at >= failed_at:
                return self._last_check_found_outage
            away = not await self.health()
            if away:
                started = self._clock()
                log.warning(
                    "the model server at %s stopped answering; requests pause until %s answers again",
                    self.options.server_root,
                    c.HEALTH_PATH,
                )
                try:
                    await self.wait_until_healthy(self._outage_wait_s, purpose="to come back")
                except ServerUnavailable as err:
                    self.unavailable = err
                    raise
                self.outages += 1
                log.info("the model server is back after %.0f s; resuming", self._clock() - started)
            self._last_check_at = self._clock()
            self._last_check_found_outage = away
            return away

    # ---- one retry layer ---------------------------------------------------------------------------------

    async def _attempts(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        expect: Expectation | None = None,
    ) -> Reply:
        """Send until a JSON object holding every promised field comes back, a refusal, or no retries."""
        url = self._url(path)
        payload = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                # The slot is held only while on the wire, never during backoff; the deadline and the
                # latency start once the request has its slot.
                async with self._slots:
                    started = time.monotonic()
                    async with asyncio.timeout(self.options.timeout_s):
                        answer = await self._send(method, url, payload)
                    _check_promised_fields(path, answer)
                    expected = None if expect is None else expect(answer)
            except TimeoutError as err:
                failure: RetryableError = RetryableError(
                    f"no complete response within the {self.options.timeout_s:g} s attempt deadline"
                )
                failure.__cause__ = err
                self._observe(OUTCOME_TIMEOUT, started, None)
            except ResponseError as err:
                failure = err
                self._observe(OUTCOME_BAD_BODY, started, None)
            except RetryableError as err:
                failure = err
                self._observe(OUTCOME_HTTP if err.status else OUTCOME_CONNECTION, started, None)
            except RequestRejected as err:
                self._observe(OUTCOME_REJECTED, started, None)
                err.attempts = attempt
                if (tally := _TALLY.get()) is not None:
                    tally.rejected += 1
                raise
            else:
                usage = answer.get("usage")
                self._observe(OUTCOME_OK, started, usage if isinstance(usage, dict) else None)
                return Reply(
                    body=answer, attempts=attempt, latency_s=time.monotonic() - started, expected=expected
                )

            if _server_away_hint(failure) and await self._server_went_away(self._clock()):
                attempt -= 1  # the server was away, not this request wrong: the outage was waited out
                continue
            if attempt > self.options.max_retries:
                final = RetryableError(f"gave up after {attempt} attempts: {failure}", status=failure.status)
                final.attempts = attempt
                if (tally := _TALLY.get()) is not None:
                    tally.gave_up += 1
                raise final from failure
            delay = self._backoff(attempt, failure.retry_after)
            log.warning(
                "%s %s: attempt %d/%d failed (%s); retrying in %.2f s",
                method,
                path,
                attempt,
                self.options.max_retries + 1,
                failure,
                delay,
            )
            await self._sleep(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, c.RETRY_AFTER_CAP_S)
        ceiling = min(c.BACKOFF_CAP_S, self.options.backoff_base_s * 2 ** (attempt - 1))
        # "Equal jitter": at least half the exponential delay, so retries still back off, plus a random
        # half so the 64 rows that failed together do not all come back together.
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not cryptography

    def _observe(self, outcome: str, started: float, usage: Mapping[str, Any] | None) -> None:
        if self._observer is not None:
            self._observer.attempt_finished(outcome, time.monotonic() - started, usage)

    # ---- plumbing ----------------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.options.server_root}/{path.lstrip('/')}"

    async def _send(self, method: str, url: str, payload: bytes | None) -> JsonObject:
        headers = {"Content-Type": "application/json"} if payload is not None else None
        try:
            async with self.session.request(method, url, data=payload, headers=headers) as response:
                content = await response.read()
        except aiohttp.ClientError as err:
            raise RetryableError(f"connection error: {_describe(err)}") from err
        if not 200 <= response.status < 300:
            raise _status_error(response.status, response.headers, content, response.reason)
        return _json_object(content)


def _server_away_hint(failure: RetryableError) -> bool:
    """A failure a server that is away gives: no connection, no answer in time, or a proxy's 502/503/504."""
    if isinstance(failure, ResponseError):
        return False
    return failure.status is None or failure.status in c.SERVER_AWAY_STATUSES


def _check_promised_fields(path: str, body: JsonObject) -> None:
    """A 2xx chat or text completion promises a non-empty `choices` list of objects (the OpenAI API)."""
    if path in c.COMPLETION_PATHS:
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not all(isinstance(x, dict) for x in choices):
            raise ResponseError(f"POST {path} answered 2xx without `choices` (body: {str(body)[:120]})")


def _model_entries(body: JsonObject) -> list[JsonObject]:
    data = body.get("data")
    if not isinstance(data, list):
        raise ResponseError(f"GET {c.MODELS_PATH} returned no `data` list.")
    return [entry for entry in data if isinstance(entry, dict)]


def _describe(err: BaseException) -> str:
    """Connection errors often have empty messages (a reset can be bare): name the type too."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _status_error(
    status: int, headers: Mapping[str, str], content: bytes, reason: str | None
) -> RetryableError | RequestRejected:
    """Classify a non-2xx response: retry the transient ones, refuse the rest with the server's message."""
    message = _server_message(content, reason)
    if status in c.RETRYABLE_STATUSES or status >= 500:
        return RetryableError(f"HTTP {status}: {message}", status=status, retry_after=_retry_after(headers))
    return RequestRejected(status, message)


def _server_message(content: bytes, reason: str | None) -> str:
    """The `error.message` of an OpenAI/vLLM error body, else the start of whatever the body was."""
    try:
        body = json.loads(content)
    except ValueError:
        return content[:200].decode("utf-8", errors="replace").strip() or reason or "no message"
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return str(body)[:200]


def _retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110 section 10.2.3), counted
    from `now` (the current time unless given)."""
    value = headers.get("Retry-After")  # case-insensitive in aiohttp's and httpx's headers
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _json_object(content: bytes) -> JsonObject:
    try:
        body = json.loads(content)
    except ValueError as err:
        raise ResponseError(f"the server's response is not valid JSON ({len(content)} bytes): {err}") from err
    if not isinstance(body, dict):
        raise ResponseError(f"the server's response is JSON but not an object: {str(body)[:100]}")
    return body
