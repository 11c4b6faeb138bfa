"""A fault-injecting OpenAI-compatible HTTP server on 127.0.0.1, for tests and the benchmark.

It is a real HTTP/1.1 server (asyncio streams, keep-alive) in a background thread, so the worker under
test uses its real client and connection pool, in-process or as a subprocess. Response bodies follow the
shapes vLLM 0.32 returns (../shared/reference/vllm-0.32): chat completions, /v1/models, /version,
/health, /tokenize, and the `{"error": {...}}` body of 4xx replies.

Usage
-----
    with FakeOpenAI() as server:                      # free port; server.base_url ends in /v1
        server.script("/v1/chat/completions", Status(500), Status(429, retry_after=1), Hang(5))
        ...                                           # the next three chat requests fail so, then OK
        server.rule(lambda req: "ROW-7" in req.text, Status(400))   # every request matching, forever
        server.requests                               # every Request received, in order

Behaviours (one per response): `Ok(body)`, `Status(code, message=..., retry_after=...)`, `Hang(seconds)`
(answer after a delay longer than the client's deadline), `Trickle(interval)` (headers, then the body a
byte at a time), `Truncate()` (complete headers, JSON cut in half), `Reset()` (close the connection with
no response). `latency_s` delays every response (the benchmark's 200 ms server).

Extending it
-----------------------------
`server.handlers[path] = fn` where `fn(request: Request) -> Ok | Status | Reset` answers a path the
default set does not (or replaces one): e.g. `/v1/completions` with logprobs, or a chat answer carrying
a JSON object.
`server.chat_content = fn(request) -> str` changes only the assistant text of the default chat handler.
Scripts and rules apply before handlers, so faults work on every path.

Standalone (the benchmark runs it in its own process so its CPU is not counted as the worker's):
    python -m tests.support.fake_openai --latency-ms 200      # prints "PORT <n>" then serves until killed
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Behaviour",
    "FakeOpenAI",
    "Hang",
    "Ok",
    "Request",
    "Reset",
    "Status",
    "Trickle",
    "Truncate",
    "chat_completion_body",
    "text_completion_body",
]

MODEL = "tiny"  # the served name of the reference server
VERSION = "0.32.0"
MAX_MODEL_LEN = 512


@dataclass(frozen=True)
class Request:
    """One request as received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.monotonic()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True)
class Ok:
    body: Any  # a JSON-serialisable object (or bytes, sent verbatim)
    status: int = 200


@dataclass(frozen=True)
class Status:
    """An error status with vLLM's error body; 429/503 may carry Retry-After (seconds)."""

    code: int
    message: str = ""
    retry_after: float | None = None


@dataclass(frozen=True)
class Hang:
    seconds: float  # then answer normally (the client should have given up by then)


@dataclass(frozen=True)
class Trickle:
    interval_s: float = 0.5  # seconds between body bytes


@dataclass(frozen=True)
class Truncate:
    """Valid headers whose Content-Length matches a body that is only the first half of the JSON."""


@dataclass(frozen=True)
class Reset:
    """Read the request, then close the socket with RST and no response."""


Behaviour = Ok | Status | Hang | Trickle | Truncate | Reset
Handler = Callable[[Request], Behaviour]

_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 413: "BadRequestError", 422: "BadRequestError"}
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def error_body(code: int, message: str) -> dict[str, Any]:
    """vLLM 0.32's error shape (reference error_unknown_model.json, error_too_long.json)."""
    kind = _ERROR_TYPES.get(code, "InternalServerError" if code >= 500 else "BadRequestError")
    return {"error": {"message": message or f"fake error {code}", "type": kind, "param": None, "code": code}}


def chat_completion_body(request: Request, content: str, *, model: str = MODEL) -> dict[str, Any]:
    """A chat completion shaped like vLLM 0.32's (reference chat_plain.json)."""
    payload = request.json() or {}
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in payload.get("messages", []))
    completion_tokens = max(1, len(content.split()))
    return {
        "id": f"chatcmpl-fake{int(request.received_at * 1e6)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": payload.get("model", model),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None, "reasoning": None},
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
        },
        "system_fingerprint": f"vllm-{VERSION}-fake",
    }


def text_completion_body(
    request: Request, text: str, *, finish_reason: str = "stop", model: str = MODEL
) -> dict[str, Any]:
    """A completion on a raw text prompt shaped like vLLM 0.32's (reference completions_logprobs5.json,
    without logprobs). Install it with `server.handlers["/v1/completions"] = lambda r: Ok(...)`."""
    payload = request.json() or {}
    prompt_tokens = len(str(payload.get("prompt", "")).split())
    completion_tokens = max(1, len(text.split()))
    return {
        "id": f"cmpl-fake{int(request.received_at * 1e6)}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": payload.get("model", model),
        "choices": [
            {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish_reason,
                "stop_reason": None,
                "prompt_logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
        },
        "system_fingerprint": f"vllm-{VERSION}-fake",
    }


def default_chat_content(request: Request) -> str:
    """A deterministic answer that names the last user message, so tests can match answers to rows."""
    messages = (request.json() or {}).get("messages", [])
    last = str(messages[-1].get("content", "")) if messages else ""
    return f"answer to: {last[:60]}"


@dataclass
class _Rule:
    matches: Callable[[Request], bool]
    behaviour: Behaviour
    times: int | None  # None: forever


@dataclass
class FakeOpenAI:
    """The server; start with `with FakeOpenAI() as server:` or `start()`/`stop()`."""

    model: str = MODEL
    latency_s: float = 0.0
    healthy_after_s: float = 0.0  # /health answers 503 until this long after start (a loading model)
    record: bool = True  # keep every Request in `requests` (the benchmark turns this off)
    chat_content: Callable[[Request], str] = default_chat_content
    handlers: dict[str, Handler] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    in_flight: int = 0  # requests received and not yet answered
    peak_in_flight: int = 0  # the most there ever were at once (the client's concurrency, measured)

    def __post_init__(self) -> None:
        self._scripts: dict[str, deque[Behaviour]] = {}
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._started = 0.0
        self._connections: set[asyncio.StreamWriter] = set()
        defaults: dict[str, Handler] = {
            "/health": self._health,
            "/version": lambda _r: Ok({"version": VERSION}),
            "/v1/models": self._models,
            "/v1/chat/completions": lambda r: Ok(
                chat_completion_body(r, self.chat_content(r), model=self.model)
            ),
            "/tokenize": self._tokenize,
        }
        self.handlers = {**defaults, **self.handlers}

    # ---- control ----------------------------------------------------------------------------------------

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def script(self, path: str, *behaviours: Behaviour) -> None:
        """The next requests to `path` get these behaviours, in order; later ones get the handler."""
        with self._lock:
            self._scripts.setdefault(path, deque()).extend(behaviours)

    def rule(
        self, matches: Callable[[Request], bool], behaviour: Behaviour, times: int | None = None
    ) -> None:
        """Every request `matches` accepts gets `behaviour` (`times` times, or forever)."""
        with self._lock:
            self._rules.append(_Rule(matches, behaviour, times))

    def requests_to(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def start(self) -> FakeOpenAI:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- serving ----------------------------------------------------------------------------------------

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", self.port, backlog=1024)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._started = time.monotonic()
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                if self.record:
                    with self._lock:
                        self.requests.append(request)
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                try:
                    keep_open = await self._respond(request, writer)
                finally:
                    self.in_flight -= 1
                if not keep_open:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return  # shutdown while a Hang or Trickle was in progress: nothing left to answer
        finally:
            self._connections.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    def _choose(self, request: Request) -> Behaviour:
        with self._lock:
            for rule in self._rules:
                if rule.matches(request) and rule.times != 0:
                    if rule.times is not None:
                        rule.times -= 1
                    return rule.behaviour
            script = self._scripts.get(request.path)
            if script:
                return script.popleft()
        return self._handle(request)

    def _handle(self, request: Request) -> Behaviour:
        handler = self.handlers.get(request.path)
        return handler(request) if handler is not None else Status(404, f"Not Found: {request.path}")

    async def _respond(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        """Send the chosen behaviour; False when the connection must not be reused."""
        behaviour = self._choose(request)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if isinstance(behaviour, Hang):
            await asyncio.sleep(behaviour.seconds)
            behaviour = self._handle(request)
        if isinstance(behaviour, Truncate | Trickle):
            normal = self._handle(request)
            body = _encode(normal.body) if isinstance(normal, Ok) else b"{}"
            if isinstance(behaviour, Truncate):
                await _send(writer, 200, body[: len(body) // 2])
                return True
            writer.write(_head(200, len(body), {}))
            for index in range(len(body)):
                writer.write(body[index : index + 1])
                await writer.drain()
                await asyncio.sleep(behaviour.interval_s)
            return True
        if isinstance(behaviour, Reset):
            sock = writer.get_extra_info("socket")
            if sock is not None:  # SO_LINGER 0: close() sends RST, as a crashed proxy would
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if isinstance(behaviour, Status):
            headers = {}
            if behaviour.retry_after is not None:
                headers["Retry-After"] = f"{behaviour.retry_after:g}"
            body = _encode(error_body(behaviour.code, behaviour.message))
            await _send(writer, behaviour.code, body, headers)
            return True
        await _send(writer, behaviour.status, _encode(behaviour.body))
        return True

    # ---- default handlers -------------------------------------------------------------------------------

    def _health(self, _request: Request) -> Behaviour:
        if time.monotonic() - self._started < self.healthy_after_s:
            return Status(503, "model is loading")
        return Ok(b"")

    def _models(self, _request: Request) -> Behaviour:
        return Ok(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.model,
                        "object": "model",
                        "created": int(time.time()),
                        "owned_by": "vllm",
                        "root": f"/models/{self.model}",
                        "parent": None,
                        "max_model_len": MAX_MODEL_LEN,
                    }
                ],
            }
        )

    def _tokenize(self, request: Request) -> Behaviour:
        payload = request.json() or {}
        words = str(payload.get("prompt", "")).split()
        tokens = [sum(word.encode()) % 32000 for word in words]
        return Ok(
            {"count": len(tokens), "max_model_len": MAX_MODEL_LEN, "tokens": tokens, "token_strs": None}
        )


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return Request(method, target.split("?", 1)[0], headers, body, time.monotonic())


def _encode(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def _head(status: int, length: int, headers: dict[str, str]) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
        "content-type: application/json",
        f"content-length: {length}",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send(
    writer: asyncio.StreamWriter, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    writer.write(_head(status, len(body), headers or {}) + body)
    await writer.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the fake OpenAI-compatible server until killed.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="Fixed delay before every response.")
    parser.add_argument("--model", default=MODEL)
    args = parser.parse_args()
    server = FakeOpenAI(
        model=args.model, latency_s=args.latency_ms / 1000, port=args.port, record=False
    ).start()
    print(f"PORT {server.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
