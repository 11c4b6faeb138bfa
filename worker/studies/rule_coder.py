"""The deterministic coder: a reply written exactly in the format the study asked for is coded by rule.

A study's `extraction.parser` lists one rule per reply column:

    parser:
      - column: model_response
        pattern: "it (?P<was_wasnt>was|wasn't) (?P<assessment>terrible|bad|good|amazing)"
        fields: {response_cleaned: "It {was_wasnt} {assessment}"}

The WHOLE reply must match the pattern (case-insensitive; surrounding whitespace, quotes and one final
full stop are ignored, typographic apostrophes read as "'"). Each named group becomes the schema field of
the same name, lower-cased, and an integer where the schema allows one; `fields` builds further fields
from the groups. A row is coded by the parser only when every rule matches and the object satisfies the
schema; otherwise the extractor model codes the whole row, so one row is never coded half by each.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jsonschema.protocols import Validator
from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.studies.definition import template_fields
from worker.studies.schema_check import schema_violations

__all__ = ["PARSER_METHOD", "ParseRule", "ReplyParser"]

# The extraction_method of a row the rules coded (a model-coded row carries the extractor's model name).
PARSER_METHOD = "parser"
# Wrapping a reply may carry without changing what it says: quotes (straight and typographic) and one
# final full stop, as in GPT-4's '"It was good."'.
_QUOTES = "\"'\u201c\u201d\u2018\u2019`"
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


class ParseRule(BaseModel):
    """One reply column's expected format."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    column: str = Field(min_length=1, description="The reply column the rule reads.")
    pattern: str = Field(min_length=1, description="Regular expression the whole reply must match.")
    fields: dict[str, str] = Field(
        default_factory=dict, description="Further fields as templates over the named groups."
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            compiled = re.compile(pattern)
        except re.error as err:
            raise ValueError(f"pattern {pattern!r} is not a regular expression ({err})") from None
        if not compiled.groupindex:
            raise ValueError(f"pattern {pattern!r} has no named group (?P<field>...) to code")
        return pattern

    @property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern, re.IGNORECASE | re.DOTALL)

    @property
    def produces(self) -> set[str]:
        return set(self.regex.groupindex) | set(self.fields)

    def code(self, reply: str) -> dict[str, str] | None:
        """The fields this one reply states (groups lower-cased, then the `fields` templates), or None when
        the whole reply is not in the format. Untyped: the schema types them (ReplyParser)."""
        match = self.regex.fullmatch(normalise_reply(reply))
        if match is None:
            return None
        groups = {name: value.lower() for name, value in match.groupdict().items() if value is not None}
        return {**groups, **{name: template.format_map(groups) for name, template in self.fields.items()}}

    def template_groups(self) -> set[str]:
        return {name for template in self.fields.values() for name in template_fields(template)}


def normalise_reply(text: str) -> str:
    """The reply without the wrapping that does not change its content."""
    text = text.translate(_APOSTROPHES).strip()
    for _ in range(2):  # '"It was good."' and '"It was good".' both
        text = text.strip().removesuffix(".").strip()
        if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
            text = text[1:-1]
    return text.strip()


@dataclass(frozen=True)
class ReplyParser:
    """The study's rules, checked against its schema; `code(row)` returns the fields or None."""

    rules: tuple[ParseRule, ...]
    schema: Mapping[str, Any]
    validator: Validator

    def __post_init__(self) -> None:
        properties = self.schema["properties"]
        for rule in self.rules:
            groups = set(rule.regex.groupindex)
            unknown = sorted((rule.produces - set(properties)) | (rule.template_groups() - groups))
            if unknown:
                raise ValueError(f"rule for {rule.column}: {unknown[0]} is not a schema field or a group")
        covered = set().union(*(rule.produces for rule in self.rules)) if self.rules else set()
        missing = sorted(set(properties) - covered)
        if self.rules and missing:
            raise ValueError(f"the parser rules never code {', '.join(missing)}")

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(rule.column for rule in self.rules)

    def code(self, row: Mapping[str, Any]) -> dict[str, Any] | None:
        """Every schema field when each rule matches its whole reply and the result is schema-valid."""
        if not self.rules:
            return None
        fields: dict[str, Any] = {}
        for rule in self.rules:
            reply = row.get(rule.column)
            coded = rule.code(reply) if isinstance(reply, str) else None
            if coded is None:
                return None
            # The templates' text stays text; a group's value takes the schema's type.
            fields.update({k: v if k in rule.fields else self._typed(k, v) for k, v in coded.items()})
        ordered = {name: fields.get(name) for name in self.schema["properties"]}
        if schema_violations(self.validator, ordered):
            return None
        return ordered

    def _typed(self, name: str, value: str) -> Any:
        if value.isdigit() and "integer" in _types(self.schema["properties"][name]):
            return int(value)
        return value


def _types(prop: Mapping[str, Any]) -> set[str]:
    """Every JSON type a (possibly anyOf-nullable) schema property allows."""
    found: set[str] = set()
    declared = prop.get("type")
    if isinstance(declared, str):
        found.add(declared)
    elif isinstance(declared, Sequence):
        found.update(str(t) for t in declared)
    for option in prop.get("anyOf", ()):
        found |= _types(option)
    return found
