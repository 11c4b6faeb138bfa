"""The only module that talks HTTP: one connection pool, a bound on requests in flight, one retry layer.

Every request goes through `ModelClient._attempts`, which:
- holds one of `batch_size` slots only while a request is on the wire (not while backing off), so a slow
  request never idles the others (issue 5: `--batch-size` is requests in flight, not a lockstep batch);
- puts an overall asyncio deadline of `timeout_s` on each attempt, covering connect, headers AND body, so
  a server that trickles bytes cannot hang a row (httpx's own timeouts are per read and would not fire);
- retries connection errors, the deadline, 408/409/429 and 5xx, and bodies that are not the JSON the
  API promises, with jittered exponential backoff that honours Retry-After, up to `max_retries`;
- never retries 4xx refusals (`RequestRejected`): the same request would be refused again.
The openai client is built with `max_retries=0` so this is the only retry layer.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import httpx
import openai

from worker import constants as c
from worker.errors import RequestRejected, ResponseError, RetryableError, ServerUnavailable
from worker.options import ClientOptions

__all__ = ["ModelClient", "Reply", "RequestObserver"]

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful response."""

    body: JsonObject  # the parsed JSON body, every field the server sent (vLLM extras included)
    attempts: int  # 1 when the first attempt succeeded
    latency_s: float  # seconds the successful attempt took, excluding earlier attempts and backoff


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
    ) -> None:
        self.options = options
        self._observer = observer
        self._slots = asyncio.Semaphore(options.batch_size)
        # One pool for both APIs; enough connections that the semaphore, not the pool, is the bound.
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(options.timeout_s),
            limits=httpx.Limits(
                max_connections=options.batch_size + 4, max_keepalive_connections=options.batch_size + 4
            ),
            headers={"Authorization": f"Bearer {options.api_key.get_secret_value()}"},
        )
        self._openai = openai.AsyncOpenAI(
            base_url=options.base_url,
            api_key=options.api_key.get_secret_value(),
            max_retries=0,  # one retry layer only: ours
            timeout=options.timeout_s,
            # openai 3.x is typed for httpx2 but accepts an httpx client: one pool for both APIs.
            http_client=cast("Any", self._http),
        )

    async def __aenter__(self) -> ModelClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- the API the pipelines use -------------------------------------------------------------------

    async def chat(self, messages: Sequence[Mapping[str, Any]], **params: Any) -> Reply:
        """POST /v1/chat/completions for the configured model.

        `params` are keyword arguments of openai's `chat.completions.create` (max_tokens, temperature,
        seed, logprobs, top_logprobs, response_format, ...); vLLM-only fields go in `extra_body={...}`.
        """
        request = {"model": self.options.model_name, "messages": list(messages), **params}

        async def send() -> JsonObject:
            try:
                raw = await self._openai.chat.completions.with_raw_response.create(**request)
            except openai.APIStatusError as err:
                raise _status_error(err.response) from err
            except openai.APIConnectionError as err:
                raise RetryableError(f"connection error: {_describe(err.__cause__ or err)}") from err
            return _json_object(raw.content)

        return await self._attempts("chat completion", send)

    async def post_json(self, path: str, body: Mapping[str, Any]) -> Reply:
        """POST a JSON body to `path` relative to the server root ("/v1/completions", "/tokenize")."""
        url = self._url(path)

        async def send() -> JsonObject:
            response = await self._request("POST", url, json=dict(body))
            return _json_object(response.content)

        return await self._attempts(f"POST {path}", send)

    async def models(self) -> list[JsonObject]:
        """The `data` entries of GET /v1/models (id, root, max_model_len, ...)."""

        async def send() -> JsonObject:
            response = await self._request("GET", self._url(c.MODELS_PATH))
            return _json_object(response.content)

        reply = await self._attempts("GET /v1/models", send)
        data = reply.body.get("data")
        if not isinstance(data, list):
            raise ResponseError(f"GET {c.MODELS_PATH} returned no `data` list.")
        return [entry for entry in data if isinstance(entry, dict)]

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
            response = await self._request("GET", self._url(c.VERSION_PATH))
        except RequestRejected:
            return None
        return _json_object(response.content)

    async def health(self) -> bool:
        """One probe: True when the server answers /health with 200 (or, lacking /health, /v1/models)."""
        try:
            async with asyncio.timeout(c.HEALTH_PROBE_TIMEOUT_S):
                response = await self._http.get(self._url(c.HEALTH_PATH))
                if response.status_code == 404:  # not vLLM: a hosted API has no /health
                    response = await self._http.get(self._url(c.MODELS_PATH))
        except (httpx.HTTPError, TimeoutError) as err:
            log.debug("health probe failed: %s", err)
            return False
        return response.status_code == 200

    async def wait_until_healthy(self, timeout_s: float) -> None:
        """Poll /health until it answers or `timeout_s` passes; ServerUnavailable then."""
        deadline = time.monotonic() + timeout_s
        announced = False
        while not await self.health():
            if time.monotonic() >= deadline:
                raise ServerUnavailable(
                    f"The model server at {self.options.server_root} did not answer {c.HEALTH_PATH} "
                    f"within --wait-timeout {timeout_s:g} s."
                )
            if not announced:
                log.info("waiting for %s%s (up to %g s)", self.options.server_root, c.HEALTH_PATH, timeout_s)
                announced = True
            await asyncio.sleep(min(c.HEALTH_POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))

    # ---- one retry layer ---------------------------------------------------------------------------------

    async def _attempts(self, what: str, send: Callable[[], Awaitable[JsonObject]]) -> Reply:
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                async with self._slots, asyncio.timeout(self.options.timeout_s):
                    body = await send()
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
                raise
            else:
                usage = body.get("usage")
                self._observe(OUTCOME_OK, started, usage if isinstance(usage, dict) else None)
                return Reply(body=body, attempts=attempt, latency_s=time.monotonic() - started)

            if attempt > self.options.max_retries:
                final = RetryableError(f"gave up after {attempt} attempts: {failure}", status=failure.status)
                final.attempts = attempt
                raise final from failure
            delay = self._backoff(attempt, failure.retry_after)
            log.warning(
                "%s: attempt %d/%d failed (%s); retrying in %.2f s",
                what,
                attempt,
                self.options.max_retries + 1,
                failure,
                delay,
            )
            await asyncio.sleep(delay)

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

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, url, **kwargs)
        except httpx.HTTPError as err:
            raise RetryableError(f"connection error: {_describe(err)}") from err
        if response.is_success:
            return response
        raise _status_error(response)


class _HttpResponse(Protocol):
    """What classification reads from a response; httpx and openai's httpx2 responses both have it."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def text(self) -> str: ...
    @property
    def reason_phrase(self) -> str: ...
    def json(self) -> Any: ...


def _describe(err: BaseException) -> str:
    """httpx errors often have empty messages (a reset is `ReadError('')`): name the type too."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _status_error(response: _HttpResponse) -> RetryableError | RequestRejected:
    """Classify a non-2xx response: retry the transient ones, refuse the rest with the server's message."""
    status = response.status_code
    message = _server_message(response)
    if status in c.RETRYABLE_STATUSES or status >= 500:
        return RetryableError(
            f"HTTP {status}: {message}", status=status, retry_after=_retry_after(response.headers)
        )
    return RequestRejected(status, message)


def _server_message(response: _HttpResponse) -> str:
    """The `error.message` of an OpenAI/vLLM error body, else the start of whatever the body was."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return str(body)[:200]


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    value = headers.get("retry-after") or headers.get("Retry-After")
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
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _json_object(content: bytes) -> JsonObject:
    try:
        body = json.loads(content)
    except ValueError as err:
        raise ResponseError(f"the server's response is not valid JSON ({len(content)} bytes): {err}") from err
    if not isinstance(body, dict):
        raise ResponseError(f"the server's response is JSON but not an object: {str(body)[:100]}")
    return body
