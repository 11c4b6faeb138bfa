"""Which structured-output form a server really enforces, found by asking it once before the rows.

Servers differ in ways their answers do not announce: vLLM enforces `response_format` json_schema;
DeepSeek rejects it (400) and only offers `json_object`; vLLM 0.32 accepts the old `guided_json` field with
HTTP 200 and ignores it, so "accepted" is not "enforced". `detect_backend` therefore sends one tiny request
per candidate form, strongest first, with a schema whose only valid object holds a value no model would
write unprompted: a reply equal to that object (whitespace aside) proves enforcement, anything else shows
the form was ignored. A refusal (400/422) moves on to the next form; any other error ends the run.

The outcome, including how the server answered, is recorded in the run's meta file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from worker.errors import InputError, RequestRejected
from worker.server.chat_completions import ChatReply, answered_chat
from worker.studies.schema_check import Backend, response_format_for

__all__ = ["BackendChoice", "ChatClient", "detect_backend"]

log = logging.getLogger(__name__)

PROBE_VALUE = "grace-probe-7f3"  # a value no model writes unless a grammar forces it
PROBE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"probe": {"type": "string", "enum": [PROBE_VALUE]}},
    "required": ["probe"],
    "additionalProperties": False,
}
PROBE_EXPECTED = json.dumps({"probe": PROBE_VALUE}, separators=(",", ":"))
# Enough for the probe object in any tokenizer we serve (the tiny test model needs about 15), few enough
# that a server padding whitespace (vLLM without disable_any_whitespace) shows itself by hitting the limit.
PROBE_MAX_TOKENS = 48
PROBE_MESSAGES = [{"role": "user", "content": "Reply with a JSON object."}]
# Statuses that mean "this server does not take this request form" rather than "this run is misconfigured".
UNSUPPORTED_STATUSES = frozenset({400, 422})
AUTH_STATUSES = frozenset({401, 403})
WHITESPACE_HINT = (
    "the server enforces json_schema but pads the JSON with whitespace up to max_tokens; start vLLM with "
    """--structured-outputs-config '{"backend":"xgrammar","disable_any_whitespace":true}' or replies """
    "will be cut off"
)


class ChatClient(Protocol):
    """What the probe needs from `worker.server.client.ModelClient`."""

    async def chat(self, messages: list[dict[str, str]], **params: Any) -> Any: ...


@dataclass(frozen=True)
class BackendChoice:
    """The form extraction will use and the evidence for it, as recorded in the meta file."""

    backend: Backend
    evidence: tuple[str, ...]  # one line per probe: what was sent and what the server did

    def as_meta(self) -> dict[str, Any]:
        return {"backend": str(self.backend), "probes": list(self.evidence)}


async def detect_backend(client: ChatClient, requested: Backend | None) -> BackendChoice:
    """The strongest form the server enforces (`requested=None`), or a check of the requested form.

    A requested form the server refuses or ignores is an InputError (exit 2): the user asked for a
    guarantee the server cannot give. `prompt` needs no probe: it asks nothing of the server.
    """
    candidates = [requested] if requested is not None else [Backend.JSON_SCHEMA, Backend.JSON_OBJECT]
    evidence: list[str] = []
    for backend in candidates:
        if backend is Backend.PROMPT:
            break
        verdict = await _probe(client, backend)
        evidence.append(f"{backend}: {verdict.note}")
        log.info("structured-output probe %s: %s", backend, verdict.note)
        if verdict.usable:
            if verdict.warning:
                log.warning("%s", verdict.warning)
            return BackendChoice(backend, tuple(evidence))
        if requested is not None:
            raise InputError(f"--backend {backend}: the server does not support it ({verdict.note}).")
    evidence.append("prompt: no server-side format; the prompt carries the schema, validation checks it")
    return BackendChoice(Backend.PROMPT, tuple(evidence))


@dataclass(frozen=True)
class _Verdict:
    usable: bool
    note: str
    warning: str | None = None


async def _probe(client: ChatClient, backend: Backend) -> _Verdict:
    response_format = response_format_for(backend, PROBE_SCHEMA, "probe")
    messages = PROBE_MESSAGES
    if backend is Backend.JSON_OBJECT:
        # DeepSeek refuses json_object unless the prompt says "json" and shows the shape.
        messages = [{"role": "user", "content": f"Reply with this json object: {PROBE_EXPECTED}"}]
    try:
        reply = await client.chat(
            messages,
            max_tokens=PROBE_MAX_TOKENS,
            temperature=0.0,
            response_format=response_format,
            expect=answered_chat,
        )
    except RequestRejected as err:
        if err.status in UNSUPPORTED_STATUSES:
            return _Verdict(False, f"refused with HTTP {err.status}: {err.message}")
        hint = " (check the key in --api-key-env)" if err.status in AUTH_STATUSES else ""
        raise InputError(
            f"the server refused the structured-output probe with HTTP {err.status}: {err.message}{hint}"
        ) from err
    answer: ChatReply = reply.expected
    content, finish_reason = answer.content, answer.finish_reason
    if backend is Backend.JSON_OBJECT:
        # Acceptance is all that can be checked: any object satisfies json_object, and a blank reply is a
        # documented DeepSeek behaviour handled per row by re-asking.
        return _Verdict(True, f"accepted (finish_reason={finish_reason}, reply {_short(content)})")
    compact = "".join((content or "").split())
    if not compact and answer.reasoning:
        # A reasoning model (gpt-oss) spends tokens on `reasoning` before vLLM applies the grammar to the
        # answer, so the probe's small budget can end before any content: not evidence of being ignored.
        return _Verdict(
            True,
            "accepted; not verified: the model spent the probe's tokens reasoning "
            f"(finish_reason={finish_reason})",
            "json_schema was accepted but could not be verified on a reasoning model; every reply is still "
            "validated",
        )
    if compact == PROBE_EXPECTED:
        return _Verdict(True, "enforced (the reply is exactly the only object the schema allows)")
    if compact and finish_reason == "length" and PROBE_EXPECTED.startswith(compact):
        return _Verdict(True, "enforced, but whitespace-padded to the token limit", WHITESPACE_HINT)
    return _Verdict(
        False,
        f"accepted but ignored (finish_reason={finish_reason}, reply {_short(content)} "
        "is not the only object the schema allows)",
    )


def _short(content: str | None) -> str:
    if content is None:
        return "missing"
    text = content if len(content) <= 60 else content[:60] + "..."
    return json.dumps(text)
