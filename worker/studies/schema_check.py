"""Extraction, pure part: turn one model reply into schema-valid fields or one explained failure.

Nothing here does I/O. The extraction pipeline (worker.pipelines.extraction) owns the requests and the
rows; this module owns the rules:

- `Backend` and `response_format_for`: how a request asks for JSON. vLLM enforces a JSON Schema while
  decoding (`response_format` `json_schema`, strict); DeepSeek only promises *some* JSON object
  (`json_object`), so there the schema and an example travel in the prompt and validation does the rest;
  `prompt` asks in words only, for servers that accept neither.
- `judge_reply`: blank content, a cut-off reply, text that holds no JSON object, a schema violation.
  Every failure is an `AttemptFailure` whose `message` is one sentence, written for two readers at once:
  the model being re-asked and the researcher reading `extraction_errors`.
- `find_json_object`: recovery of the object from prose or a Markdown code fence (json_object and prompt
  backends talk; constrained decoding does not, but recovery is harmless there).
- `SumCheck`: cross-field rules JSON Schema cannot express (Study 1 percentages sum to 100 +/- 1). They
  produce warnings, never edits: a researcher decides what to do with a distribution that sums to 90.
- `correction_messages`: the re-ask turn, carrying the exact failure back to the model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jsonschema
from jsonschema.protocols import Validator
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AttemptFailure",
    "Backend",
    "FailureKind",
    "Parsed",
    "SumCheck",
    "check_schema",
    "correction_messages",
    "cross_field_warnings",
    "find_json_object",
    "format_instructions",
    "judge_reply",
    "make_validator",
    "response_format_for",
    "schema_fields",
    "schema_name",
    "schema_violations",
]

# How much of a failed reply is echoed back in the re-ask turn. Only the last failed reply is echoed (the
# conversation does not grow with every attempt), and a cap keeps a runaway reply (whitespace padding to
# max_tokens, a model that rambles) from pushing the re-ask past the server's context length.
ECHO_LIMIT_CHARS = 600
# How much of a reply an error message quotes: enough to recognise it in the CSV, short enough to read.
QUOTE_LIMIT_CHARS = 80
# How many schema violations one message lists; the first few are what a model can act on.
MAX_LISTED_VIOLATIONS = 3
# OpenAI-style `json_schema.name`: letters, digits, underscores and dashes, at most 64 characters.
SCHEMA_NAME_MAX = 64
_SCHEMA_NAME_BAD_CHARS = re.compile(r"[^A-Za-z0-9_-]")
# strict=False lets a raw tab or newline stand inside a string. xgrammar's JSON grammar (vLLM 0.32) lets
# a model emit them, and they are the model's own characters: rejecting the whole reply for them would
# turn a readable answer into a failure.
_LENIENT_DECODER = json.JSONDecoder(strict=False)
# A Markdown code fence, optionally tagged json: ```json\n{...}\n```.
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\r?\n(.*?)```", re.DOTALL)


class Backend(StrEnum):
    """How the extraction request asks for JSON, strongest guarantee first."""

    JSON_SCHEMA = "json_schema"  # decoding constrained to the schema (vLLM): the form is enforced
    JSON_OBJECT = "json_object"  # decoding constrained to some JSON object (DeepSeek): the schema is not
    PROMPT = "prompt"  # nothing enforced by the server: the prompt asks, validation checks


class FailureKind(StrEnum):
    """Why one reply could not be accepted; each kind is worth a re-ask."""

    BLANK = "blank"
    TRUNCATED = "truncated"
    NO_JSON = "no_json"
    NOT_OBJECT = "not_object"
    SCHEMA = "schema"


@dataclass(frozen=True)
class AttemptFailure:
    """One rejected reply: the kind, and a one-sentence explanation naming what was wrong."""

    kind: FailureKind
    message: str


@dataclass(frozen=True)
class Parsed:
    """An accepted reply: the schema's fields in schema order, and whether it had to be dug out of prose."""

    fields: dict[str, Any]
    recovered: bool


class SumCheck(BaseModel):
    """A cross-field rule: the stated values of `fields` add up to `total`, within `tolerance`.

    Only checked when every field is stated: a partly stated distribution is reported as such instead,
    because its sum means nothing.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(default="sum", pattern="^sum$", description="Rule kind; `sum` is the only one so far.")
    fields: tuple[str, ...] = Field(min_length=2, description="Schema fields whose values are added.")
    total: float = Field(description="The value they should add up to, e.g. 100 for percentages.")
    tolerance: float = Field(default=0.0, ge=0, description="Allowed distance from `total` (rounding).")

    @model_validator(mode="after")
    def _distinct(self) -> SumCheck:
        if len(set(self.fields)) != len(self.fields):
            raise ValueError(f"sum check lists a field twice: {list(self.fields)}")
        return self

    def warning(self, fields: Mapping[str, Any]) -> str | None:
        """One sentence when the rule does not hold for these fields, else None."""
        stated = [name for name in self.fields if fields.get(name) is not None]
        if not stated:
            return None
        if len(stated) < len(self.fields):
            missing = [name for name in self.fields if name not in stated]
            return f"only {len(stated)} of {len(self.fields)} values stated (null: {', '.join(missing)})"
        total = sum(float(fields[name]) for name in self.fields)
        if abs(total - self.total) <= self.tolerance:
            return None
        return (
            f"{'+'.join(self.fields)} = {_number(total)}, "
            f"expected {_number(self.total)} +/- {_number(self.tolerance)}"
        )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# ---------------------------------------------------------------------------------------------------------
# Schemas


def check_schema(schema: Any) -> list[str]:
    """Why `schema` cannot drive extraction, as sentences; empty when it can.

    Extraction needs a flat object schema: its top-level properties become CSV columns, and strict
    mode (OpenAI's, and what vLLM's json_schema form is measured against) needs every property
    required and no others allowed. Nullable-but-required is how "not stated" is expressed.
    """
    if not isinstance(schema, dict):
        return ["the schema is not a JSON object"]
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return [f"it is not a valid JSON Schema: {exc.message}"]
    problems = []
    properties = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(properties, dict) or not properties:
        problems.append('its top level must be {"type": "object"} with at least one property')
        return problems
    if schema.get("additionalProperties") is not False:
        problems.append('it must set "additionalProperties": false (strict mode; no invented columns)')
    required = schema.get("required", [])
    not_required = [name for name in properties if name not in required]
    if not_required:
        problems.append(
            "every property must be required (nullable instead of optional, for strict mode); "
            f"not required: {', '.join(not_required)}"
        )
    return problems


def schema_fields(schema: Mapping[str, Any]) -> tuple[str, ...]:
    """The output columns a schema adds, in the schema's own property order."""
    return tuple(schema["properties"])


def schema_name(schema: Mapping[str, Any], fallback: str) -> str:
    """The `json_schema.name` to send: the schema's title, made to fit the API's name rule."""
    raw = str(schema.get("title") or fallback)
    return _SCHEMA_NAME_BAD_CHARS.sub("_", raw)[:SCHEMA_NAME_MAX] or "extraction"


def make_validator(schema: Mapping[str, Any]) -> Validator:
    """A validator for the schema's own draft (2020-12 when it names none)."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


# ---------------------------------------------------------------------------------------------------------
# Requests


def response_format_for(backend: Backend, schema: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The `response_format` request field for a backend, None when the backend sends none.

    The OpenAI-standard `response_format` is used rather than vLLM's own `structured_outputs` field: both
    are enforced by vLLM 0.32, the standard one also works elsewhere, and sending both is a 400. The old
    `guided_json` field is never used: vLLM 0.32 accepts it with HTTP 200 and ignores it.
    """
    if backend is Backend.JSON_SCHEMA:
        return {"type": "json_schema", "json_schema": {"name": name, "schema": dict(schema), "strict": True}}
    if backend is Backend.JSON_OBJECT:
        return {"type": "json_object"}
    return None


def format_instructions(
    backend: Backend, schema: Mapping[str, Any], example: Mapping[str, Any] | None
) -> str:
    """Text appended to the system prompt so the model knows the output format, or "" when none is needed.

    With json_schema the grammar already fixes the form, and repeating the schema in the prompt only
    costs context (the tiny test model has 512 tokens). With json_object and prompt nothing on the server
    knows the schema; DeepSeek also requires the word "json" and an example in the prompt.
    """
    if backend is Backend.JSON_SCHEMA:
        return ""
    text = (
        "Reply with one JSON object and nothing else: no prose, no code fence. "
        "Use null for any value the response does not state; never guess.\n"
        f"The JSON object must match this JSON Schema:\n{json.dumps(schema, separators=(',', ':'))}"
    )
    if example is not None:
        # Lower-case "json" on purpose: DeepSeek's JSON mode insists on the word, and a case-sensitive
        # check must not be what rejects the prompt.
        text += f"\nExample of the expected json output:\n{json.dumps(example)}"
    return text


# ---------------------------------------------------------------------------------------------------------
# Replies


def find_json_object(text: str) -> tuple[Any, bool]:
    """The JSON value in a reply and whether it had to be recovered from surrounding text.

    Order: the whole reply; the first fenced block that parses; the first `{` from which a complete JSON
    object decodes (prose before and after is ignored). Raises ValueError with a sentence when none does.
    """
    stripped = text.strip()
    decoder = _LENIENT_DECODER
    try:
        return decoder.decode(stripped), False
    except json.JSONDecodeError as exc:
        whole_error = exc
    for block in _FENCE.findall(stripped):
        try:
            return decoder.decode(block.strip()), True
        except json.JSONDecodeError:
            continue
    position = stripped.find("{")
    while position != -1:
        try:
            value, _end = decoder.raw_decode(stripped, position)
        except json.JSONDecodeError:
            position = stripped.find("{", position + 1)
            continue
        if isinstance(value, dict):
            return value, True
        position = stripped.find("{", position + 1)
    reason = whole_error.msg.removesuffix(" at")
    raise ValueError(
        f"the reply is not valid JSON ({reason} at character {whole_error.pos}) "
        f"and contains no complete JSON object: {_quote(stripped)}"
    )


def judge_reply(
    content: str | None,
    finish_reason: str | None,
    schema: Mapping[str, Any],
    validator: Validator | None,
) -> Parsed | AttemptFailure:
    """Accept one reply or say why not. `validator=None` parses without checking the schema.

    Blank content is a failure even with finish_reason=stop: DeepSeek's JSON mode replaces output it cannot
    read as JSON with spaces. finish_reason=length is a failure only when the reply does not hold a complete
    valid object: a model that closed its object and then rambled to the limit still answered.
    """
    text = content or ""
    if not text.strip():
        return AttemptFailure(
            FailureKind.BLANK, f"the reply was blank (finish_reason={finish_reason or 'none'})"
        )
    truncated = finish_reason == "length"
    try:
        value, recovered = find_json_object(text)
    except ValueError as exc:
        if truncated:
            return AttemptFailure(
                FailureKind.TRUNCATED,
                "the reply was cut off at the token limit (finish_reason=length) before the JSON object "
                f"was complete: {_quote(text.strip())}",
            )
        return AttemptFailure(FailureKind.NO_JSON, str(exc))
    if not isinstance(value, dict):
        return AttemptFailure(
            FailureKind.NOT_OBJECT, f"the reply is JSON but not an object: {_quote(json.dumps(value))}"
        )
    if validator is not None:
        violations = schema_violations(validator, value)
        if violations:
            listed = "; ".join(violations[:MAX_LISTED_VIOLATIONS])
            more = len(violations) - MAX_LISTED_VIOLATIONS
            suffix = f"; and {more} more" if more > 0 else ""
            return AttemptFailure(FailureKind.SCHEMA, f"the JSON does not match the schema: {listed}{suffix}")
    fields = {name: _plain_number(value.get(name)) for name in schema_fields(schema)}
    return Parsed(fields=fields, recovered=recovered)


def _plain_number(value: Any) -> Any:
    # JSON Schema counts 50.0 as an integer; writing it as 50 keeps integer columns integer in the CSV.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def schema_violations(validator: Validator, value: dict[str, Any]) -> list[str]:
    """Schema violations as short phrases, missing properties first and gathered into one phrase."""
    missing: list[str] = []
    others: list[str] = []
    for error in sorted(validator.iter_errors(value), key=lambda error: list(error.absolute_path)):
        if error.validator == "required" and not error.absolute_path:
            missing.extend(name for name in error.validator_value if name not in value)
        elif error.validator == "additionalProperties" and not error.absolute_path:
            extra = sorted(set(value) - set(error.schema.get("properties", {})))
            others.append(f"unexpected properties {', '.join(extra)}")
        else:
            others.append(_violation(error))
    head = [f"missing properties {', '.join(dict.fromkeys(missing))}"] if missing else []
    return head + others


def _violation(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
    return f"{where}: {_short_violation(error)}"


def _short_violation(error: jsonschema.ValidationError) -> str:
    # anyOf (how nullable fields are written) reports "is not valid under any of the given schemas",
    # which tells a model nothing; the branch errors say what was expected.
    if error.validator == "anyOf" and error.context:
        reasons = sorted({child.message for child in error.context})
        return f"{json.dumps(error.instance)} is not allowed ({' or '.join(reasons)})"
    return error.message


def _quote(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= QUOTE_LIMIT_CHARS:
        return repr(flat)
    return repr(flat[:QUOTE_LIMIT_CHARS]) + "..."


def cross_field_warnings(checks: Sequence[SumCheck], fields: Mapping[str, Any]) -> list[str]:
    """Every broken cross-field rule for an accepted reply, as sentences (empty when all hold)."""
    return [warning for check in checks if (warning := check.warning(fields)) is not None]


def correction_messages(failure: AttemptFailure, reply: str | None) -> list[dict[str, str]]:
    """The turns appended to the original messages to re-ask after `failure`.

    The failed reply goes back as the assistant turn (capped), followed by the error and the instruction to
    answer again. It is omitted when blank (some servers reject an empty assistant turn) and when cut off
    at the token limit: that reply is as long as the context allows, echoing it would push the re-ask
    past the context length, and the error already quotes its start.
    """
    turns: list[dict[str, str]] = []
    text = (reply or "").strip()
    if text and failure.kind is not FailureKind.TRUNCATED:
        shown = text if len(text) <= ECHO_LIMIT_CHARS else text[:ECHO_LIMIT_CHARS] + " [...]"
        turns.append({"role": "assistant", "content": shown})
    turns.append(
        {
            "role": "user",
            "content": (
                f"That reply could not be used: {failure.message}. "
                "Reply again with only the JSON object, complete and matching the schema, "
                "using null for any value the response does not state."
            ),
        }
    )
    return turns
