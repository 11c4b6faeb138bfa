"""The `extraction:` section of a study file, validated, with its schema loaded: what `worker extract` does.

    extraction:
      reply_columns: [model_response]     # the Experiment 1 columns holding the model's replies
      schema: ../../schemas/chat/study1_schema.json   # relative to the study file (same layout in the pod)
      prompt: {system: ..., user: ...}    # `{column}` placeholders over the Experiment 1 row
      example: {...}                      # one valid object, shown to servers that cannot enforce the schema
      parser: [{column: ..., pattern: ..., fields: {...}}]   # rule_coder.py: codes exact-format replies
      generation: {max_tokens: 160, temperature: 0.0}
      checks: [{kind: sum, fields: [...], total: 100, tolerance: 1}]

Every problem is an InputError naming the file and key, so a bad study file stops the run with exit 2 before
any request is sent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from worker.errors import InputError, validation_problem
from worker.studies.definition import GenerationParams, PromptTemplate, Study
from worker.studies.rule_coder import ParseRule, ReplyParser
from worker.studies.schema_check import (
    SumCheck,
    check_schema,
    make_validator,
    schema_fields,
    schema_violations,
)

__all__ = ["ExtractionSection", "ExtractionSpec", "load_extraction", "load_schema_file"]

# The Experiment 1 column `worker query` writes the model's free text into.
DEFAULT_INPUT_COLUMN = "model_response"
# Columns `worker extract` adds after the schema's fields. Also reserved: a schema property of the same
# name would collide with them.
ERRORS_COLUMN = "extraction_errors"
ATTEMPTS_COLUMN = "extraction_attempts"
WARNINGS_COLUMN = "extraction_warnings"
# Several warnings in one CSV cell: a separator that no warning sentence contains.
WARNING_SEPARATOR = " | "
# Which coder coded the row: "parser" (worker.studies.rule_coder) or the extractor model's name.
METHOD_COLUMN = "extraction_method"
# True where the coder is the model that wrote the replies (its `model_name`): a studied model coding its
# own answers, which an analysis may want to set apart. False for the parser and for any other coder.
SELF_CODED_COLUMN = "extraction_self_coded"
STATUS_COLUMNS = (METHOD_COLUMN, SELF_CODED_COLUMN, ERRORS_COLUMN, ATTEMPTS_COLUMN, WARNINGS_COLUMN)


class ExtractionSection(BaseModel):
    """The YAML section as written. Paths are still relative; `load_extraction` resolves them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reply_columns: tuple[str, ...] = Field(
        default=(DEFAULT_INPUT_COLUMN,),
        min_length=1,
        description="Experiment 1 columns holding the model's replies (one per question turn).",
    )
    schema_path: str = Field(
        alias="schema", min_length=1, description="JSON Schema file, relative to the study file."
    )
    prompt: PromptTemplate = Field(description="Extraction messages; `{column}` placeholders over the row.")
    example: dict[str, Any] | None = Field(
        default=None,
        description="A schema-valid example object, put in the prompt when the server "
        "cannot enforce the schema (DeepSeek asks for one). Required unless --schema replaces the schema.",
    )
    generation: GenerationParams = Field(
        default_factory=lambda: GenerationParams(max_tokens=160, temperature=0.0),
        description="Sampling for extraction; greedy by default so a rerun extracts the same values.",
    )
    checks: tuple[SumCheck, ...] = Field(default=(), description="Cross-field rules, reported as warnings.")
    parser: tuple[ParseRule, ...] = Field(
        default=(), description="Rules coding replies in the study's own format without a model."
    )

    def render(self, row: Mapping[str, str], study: Study) -> list[dict[str, str]]:
        """The extraction messages for one row. Study columns get the study's text clean-up (the survey's
        <br>); the model's response is shown exactly as Experiment 1 recorded it."""
        replies = set(self.reply_columns)
        values = {
            column: row[column] if column in replies else study.clean(row[column])
            for column in self.prompt.columns
        }
        assert self.prompt.user is not None  # _prompt_shows_the_replies
        messages = []
        if self.prompt.system:
            messages.append({"role": "system", "content": self.prompt.system.format_map(values)})
        messages.append({"role": "user", "content": self.prompt.user.format_map(values)})
        return messages

    @model_validator(mode="after")
    def _prompt_shows_the_replies(self) -> ExtractionSection:
        if self.prompt.user is None:
            raise ValueError("the prompt needs user (extraction sends one request per row), not turns")
        for column in self.reply_columns:
            if column not in self.prompt.columns:
                raise ValueError(f"the prompt never shows {{{column}}}, a reply to extract from")
        for number, rule in enumerate(self.parser):
            if rule.column not in self.reply_columns:
                raise ValueError(f"parser.{number}.column {rule.column!r} is not one of reply_columns")
        return self


@dataclass(frozen=True)
class ExtractionSpec:
    """Everything extraction needs from the study, resolved and checked against each other."""

    study: Study
    section: ExtractionSection
    schema: dict[str, Any]
    schema_file: Path
    schema_sha256: str
    example: dict[str, Any] | None
    parser: ReplyParser

    def with_generation(self, generation: GenerationParams) -> ExtractionSpec:
        """The same spec with other sampling parameters (a command-line override)."""
        section = self.section.model_copy(update={"generation": generation})
        return dataclasses.replace(self, section=section)

    @property
    def fields(self) -> tuple[str, ...]:
        """The columns the schema adds, in schema order."""
        return schema_fields(self.schema)

    @property
    def row_columns(self) -> set[str]:
        """Experiment 1 columns the extraction reads: the prompt's placeholders."""
        return set(self.section.prompt.columns)

    def render(self, row: dict[str, str]) -> list[dict[str, str]]:
        """The extraction messages for one row (ExtractionSection.render)."""
        return self.section.render(row, self.study)


def load_schema_file(path: Path, what: str) -> tuple[dict[str, Any], str]:
    """A schema file's JSON and SHA-256; InputError naming `what` (the flag or key) when it is unusable."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputError(f"{what} {path}: cannot be read ({err.strerror or err}).") from err
    try:
        schema = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{what} {path}: not a JSON file ({err}).") from err
    problems = check_schema(schema)
    if problems:
        raise InputError(f"{what} {path}: cannot drive extraction: {'; '.join(problems)}.")
    reserved = sorted(set(schema["properties"]) & set(STATUS_COLUMNS))
    if reserved:
        raise InputError(f"{what} {path}: property {', '.join(reserved)} collides with an output column.")
    return schema, hashlib.sha256(raw).hexdigest()


def load_extraction(study: Study, study_file: Path, schema_override: Path | None = None) -> ExtractionSpec:
    """Validate the study's `extraction:` section and load its schema (or `--schema`'s)."""
    where = f"study file {study_file}: extraction"
    if study.extraction is None:
        raise InputError(f"study file {study_file} has no extraction: section; `worker extract` needs one.")
    try:
        section = ExtractionSection.model_validate(study.extraction)
    except ValidationError as err:
        problem = validation_problem(err)
        key = problem.key
        raise InputError(f"{where}{'.' if key else ''}{key}: {problem.sentence}") from err
    if schema_override is not None:
        schema_file, what = schema_override, "--schema"
    else:
        schema_file, what = (study_file.parent / section.schema_path).resolve(), f"{where}.schema"
    schema, digest = load_schema_file(schema_file, what)
    example = section.example
    if example is not None:
        violations = schema_violations(make_validator(schema), example)
        if violations:
            if schema_override is None:
                raise InputError(f"{where}.example does not match {schema_file}: {violations[0]}.")
            # A replacement schema with a different shape: the study's example would mislead the model.
            example = None
    for number, check in enumerate(section.checks):
        unknown = [name for name in check.fields if name not in schema["properties"]]
        if unknown:
            raise InputError(
                f"{where}.checks.{number}.fields: {', '.join(unknown)} is not a property of {schema_file}."
            )
    try:
        parser = ReplyParser(section.parser, schema, make_validator(schema))
    except ValueError as err:
        if schema_override is None:
            raise InputError(f"{where}.parser: {err} ({schema_file}).") from err
        # A replacement schema with other fields: the study's rules cannot code it; the model codes all.
        parser = ReplyParser((), schema, make_validator(schema))
    overlap = sorted(set(schema["properties"]) & (set(study.required_columns) | set(section.reply_columns)))
    if overlap:
        raise InputError(
            f"{what} {schema_file}: property {', '.join(overlap)} would overwrite an Experiment 1 column."
        )
    return ExtractionSpec(
        study=study,
        section=section,
        schema=schema,
        schema_file=schema_file,
        schema_sha256=digest,
        example=example,
        parser=parser,
    )
