"""Study definitions as data: `jobs/studies/<name>.yaml` parsed into one validated model.

A new study needs only a new YAML file. Experiment 1's prompt has one of two forms:

- `chat` (the default): messages rendered by the model's chat template, one question or a conversation of
  turns (each reply appended as an assistant turn before the next question, each recorded in its own
  column);
- `completion`: raw text prompts sent with no chat template, as independent single-turn requests (none
  sees another's reply), each reply in its own column.

The `probability:` and `extraction:` sections are kept here as opaque mappings: their pipelines validate
them, so they can grow without this module changing.
"""

from __future__ import annotations

import os
import string
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from worker import contract
from worker.constants import SEED_LIMIT
from worker.errors import InputError, validation_problem

__all__ = [
    "SINGLE_REPLY_COLUMN",
    "Deviation",
    "GenerationParams",
    "Lookup",
    "PromptForm",
    "PromptTemplate",
    "RawPrompt",
    "RenderedPrompt",
    "SamplingSettings",
    "SeedRule",
    "Study",
    "Turn",
    "load_study",
    "sampling_settings",
    "study_search_path",
]

# The repository's studies, for runs from a checkout.
REPO_STUDIES_DIR = Path(__file__).resolve().parents[2] / "jobs" / contract.STUDIES_SUBDIR


def template_fields(template: str) -> set[str]:
    """The `{column}` names a template uses (`{{` and `}}` are literal braces)."""
    return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}


def _plain_placeholders(template: str) -> str:
    for field in template_fields(template):
        if not field.isidentifier():
            raise ValueError(
                f"placeholder {{{field}}} is not a plain column name (write {{{{ and }}}} for braces)"
            )
    return template


def _plain_column(column: str) -> str:
    if not column.isidentifier():
        raise ValueError(f"reply_column {column!r} is not a plain column name")
    return column


# The reply column of a study that asks one question (`prompt.user`): the Experiment 1 answer.
SINGLE_REPLY_COLUMN = "model_response"


class Turn(BaseModel):
    """One question of a conversation; the model's reply is recorded in `reply_column`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="Short name of the question, e.g. story.")
    user: str = Field(min_length=1, description="User message template (`{column}` placeholders).")
    reply_column: str = Field(min_length=1, description="Output column that holds the model's reply.")

    @field_validator("user")
    @classmethod
    def _placeholders_are_plain_names(cls, template: str) -> str:
        return _plain_placeholders(template)

    @field_validator("reply_column")
    @classmethod
    def _column_is_a_name(cls, column: str) -> str:
        return _plain_column(column)


class RawPrompt(BaseModel):
    """One independent request of the completion form: a raw text prompt, its reply in `reply_column`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="Short name of the request, e.g. quantity.")
    text: str = Field(min_length=1, description="The prompt text template (`{column}` placeholders).")
    reply_column: str = Field(min_length=1, description="Output column that holds the model's reply.")

    @field_validator("text")
    @classmethod
    def _placeholders_are_plain_names(cls, template: str) -> str:
        return _plain_placeholders(template)

    @field_validator("reply_column")
    @classmethod
    def _column_is_a_name(cls, column: str) -> str:
        return _plain_column(column)


class PromptForm(StrEnum):
    """How Experiment 1's prompt reaches the model."""

    CHAT = "chat"  # messages, rendered by the model's chat template: POST /v1/chat/completions
    COMPLETION = "completion"  # raw text, no chat template and no system message: POST /v1/completions


class PromptTemplate(BaseModel):
    """What one row asks: `{column}` placeholders filled from the row's values.

    The chat form: either `user` (one question, reply in `model_response`) or `turns` (a conversation: each
    turn's user message is sent after the model's replies to the turns before it, in the same conversation),
    with an optional `system` message. The completion form: `requests`, raw text prompts sent one after the
    other as independent single-turn requests, each reply in its own column.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    form: PromptForm = Field(default=PromptForm.CHAT, description="chat (the default) or completion.")
    system: str | None = Field(default=None, description="System message; omitted when empty.")
    user: str | None = Field(default=None, min_length=1, description="The one user message (one question).")
    turns: tuple[Turn, ...] | None = Field(
        default=None, min_length=1, description="The questions of one conversation, in the order asked."
    )
    requests: tuple[RawPrompt, ...] | None = Field(
        default=None,
        min_length=1,
        description="The completion form's independent raw text requests, in the order sent.",
    )
    strip_replies: bool = Field(
        default=False,
        description="Record each reply with the white space around it removed (Python's str.strip).",
    )

    @field_validator("system", "user")
    @classmethod
    def _placeholders_are_plain_names(cls, template: str | None) -> str | None:
        return None if template is None else _plain_placeholders(template)

    @model_validator(mode="after")
    def _one_form(self) -> PromptTemplate:
        if self.form is PromptForm.COMPLETION:
            chat_keys = [key for key in ("system", "user", "turns") if getattr(self, key) is not None]
            if chat_keys:
                raise ValueError(
                    f"the completion form sends raw text with no chat template, so it takes no "
                    f"{', '.join(chat_keys)}: give requests"
                )
            if self.requests is None:
                raise ValueError("the completion form needs requests (the raw text prompts of a row)")
        else:
            if self.requests is not None:
                raise ValueError("requests are raw text prompts: set form: completion, or give user or turns")
            if self.strip_replies:
                raise ValueError(
                    "strip_replies is a setting of the completion form; a chat reply is recorded and sent "
                    "back in the conversation as the server wrote it"
                )
            if (self.user is None) == (self.turns is None):
                raise ValueError(
                    "give either user (one question) or turns (a conversation), not both or neither"
                )
        columns = [turn.reply_column for turn in self.conversation]
        if len(set(columns)) != len(columns):
            raise ValueError(f"every {'request' if self.requests else 'turn'} needs its own reply_column")
        return self

    @property
    def conversation(self) -> tuple[Turn, ...]:
        """What a row asks, in order, each with its reply column: the chat form's turns (a one-question
        prompt being a conversation of one turn), or the completion form's requests, each as a Turn whose
        `user` is its raw text (the requests are independent: none is sent after another's reply)."""
        if self.requests is not None:
            return tuple(
                Turn(name=request.name, user=request.text, reply_column=request.reply_column)
                for request in self.requests
            )
        if self.turns is not None:
            return self.turns
        assert self.user is not None  # _one_form
        return (Turn(name="response", user=self.user, reply_column=SINGLE_REPLY_COLUMN),)

    @property
    def reply_columns(self) -> tuple[str, ...]:
        """The column of each reply, in the order asked."""
        return tuple(turn.reply_column for turn in self.conversation)

    @property
    def columns(self) -> set[str]:
        used = set().union(*(template_fields(turn.user) for turn in self.conversation))
        return used | (template_fields(self.system) if self.system else set())


class GenerationParams(BaseModel):
    """Sampling parameters of Experiment 1, sent as-is with every chat request (the completion form
    sends max_tokens and stop, and refuses top_p)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int = Field(default=256, gt=0, description="Completion token budget per row.")
    temperature: float = Field(default=0.0, ge=0, description="0 = greedy: reruns give the same answer.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int | None = Field(default=None, description="Sampling seed, for temperature > 0 reproducibility.")
    stop: tuple[str, ...] | None = Field(default=None, description="Stop strings.")

    def request_params(self) -> dict[str, Any]:
        """The keyword arguments for `ModelClient.chat`, without unset optional fields."""
        params = self.model_dump(exclude_none=True)
        if "stop" in params:
            params["stop"] = list(params["stop"])
        return params


class SeedRule(StrEnum):
    """How Experiment 1's request seeds follow from `base_seed` (worker.run.sampling computes them)."""

    # Each (row, sample) its own seed, hashed from base_seed, the row index and the sample index.
    DERIVED = "derived"
    # One seed per sample, shared by every request of every row in it: base_seed + sample index +
    # seed_offset. A sample is then one of the researchers' replications (one pass over the rows, one seed).
    REPLICATION = "replication"


class SamplingSettings(BaseModel):
    """How many answers each row gets and how they are drawn: a property of the study's design.

    A study repeats prompts (Study 1's 300 rows are 36 distinct prompts, Study 2's 2,424 are 2,046), so
    at temperature 0 the repeats are copies of one answer and a test over rows counts them as independent.
    Sampling every row several times at a temperature above 0, each sample with its own derived seed,
    gives answers that really vary and stay reproducible. The stack (`grace:jobs.sampling`) and the
    worker's `--temperature`/`--samples`/`--seed` override temperature, samples and base seed; the seed
    rule and its offset are the study's.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(default=0.0, ge=0, description="Experiment 1 sampling temperature.")
    samples_per_row: int = Field(
        default=1, ge=1, description="Answers per input row; each is one output row with its own seed."
    )
    base_seed: int = Field(
        default=0, ge=0, description="With the seed rule, fixes every sample's request seed."
    )
    seed_rule: SeedRule = Field(
        default=SeedRule.DERIVED,
        description="derived (each row and sample its own seed) or replication (one seed per sample).",
    )
    seed_offset: int = Field(
        default=0, ge=0, description="Added to every seed of the replication rule (a per-study constant)."
    )

    @model_validator(mode="after")
    def _offset_belongs_to_the_replication_rule(self) -> SamplingSettings:
        if self.seed_rule is SeedRule.DERIVED and self.seed_offset:
            raise ValueError("seed_offset applies only to seed_rule: replication")
        if self.seed_rule is SeedRule.REPLICATION:
            last = self.base_seed + self.samples_per_row - 1 + self.seed_offset
            if last >= SEED_LIMIT:
                raise ValueError(
                    f"the last sample's seed, base_seed + samples_per_row - 1 + seed_offset = {last}, "
                    f"must stay below {SEED_LIMIT}"
                )
        return self

    @property
    def seed_rule_text(self) -> str:
        """The rule as a formula, for the meta file."""
        if self.seed_rule is SeedRule.REPLICATION:
            return f"base_seed + sample + {self.seed_offset}, the same for every row and request of a sample"
        return "derived from (base_seed, row, sample), one per row and sample"


class Deviation(BaseModel):
    """One place where our prompt departs from the researchers' wording, and why (kept with the study)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    what: str = Field(min_length=1, description="The part of the prompt or procedure.")
    researchers: str = Field(min_length=1, description="What the researchers wrote or ran, with its source.")
    ours: str = Field(min_length=1, description="What this study file does instead.")
    why: str = Field(min_length=1, description="The reason.")


class Lookup(BaseModel):
    """A value a prompt can use that is looked up from a row's column, e.g. the property a story's items
    have ("passing grades" for exams). The column's value is matched lower-cased, as the researchers'
    prompt code matched it (`property_map.get(story_shortname.lower(), ...)`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    column: str = Field(min_length=1, description="The row column whose value is looked up.")
    values: dict[str, str] = Field(description="Lower-cased column value -> the text the prompt uses.")
    default: str = Field(description="The text for a value the table does not list.")

    def resolve(self, value: str) -> str:
        return self.values.get(value.lower(), self.default)


class Study(BaseModel):
    """One study: the columns it needs, how a row becomes a prompt, and how to sample."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="Short name, e.g. study1; recorded in outputs.")
    design: str = Field(
        default="custom",
        min_length=1,
        description=(
            "The design this file belongs to (researchers, chat, or a name of your own); recorded in every "
            "meta file's parameters."
        ),
    )
    description: str = Field(default="", description="What the study measures, for people.")
    required_columns: tuple[str, ...] = Field(min_length=1, description="Columns the input CSV must have.")
    text_replacements: dict[str, str] = Field(
        default_factory=dict,
        description="Substrings replaced in row values before they enter a prompt (e.g. the survey's <br>).",
    )
    strip_values: bool = Field(
        default=False,
        description="Strip white space around each row value after the replacements (Python's str.strip).",
    )
    lookups: dict[str, Lookup] = Field(
        default_factory=dict,
        description="Values looked up from a row's column, usable in prompts by their name, e.g. {property}.",
    )
    prompt: PromptTemplate = Field(
        description="Experiment 1's prompt: chat messages, or the completion form's raw text requests."
    )
    generation: GenerationParams = Field(
        default_factory=GenerationParams,
        description="Experiment 1 request parameters; temperature and seed come from `sampling`.",
    )
    sampling: SamplingSettings = Field(
        default_factory=SamplingSettings, description="Temperature, samples per row and base seed."
    )
    deviations: tuple[Deviation, ...] = Field(
        default=(), description="Where the prompts depart from the researchers' wording, and why."
    )
    probability: dict[str, Any] | None = Field(
        default=None,
        description="Experiment 2 definition; validated by worker.studies.probability_section.",
    )
    extraction: dict[str, Any] | None = Field(
        default=None,
        description="Extraction definition; validated by worker.studies.extraction_section.",
    )

    @model_validator(mode="after")
    def _prompt_uses_only_required_columns(self) -> Study:
        unknown = sorted(self.prompt.columns - set(self.placeholders))
        if unknown:
            raise ValueError(f"the prompt uses {', '.join(unknown)}, which required_columns does not list")
        return self

    @model_validator(mode="after")
    def _lookups_read_required_columns(self) -> Study:
        for name, lookup in self.lookups.items():
            if lookup.column not in self.required_columns:
                raise ValueError(
                    f"lookups.{name} reads {lookup.column}, which required_columns does not list"
                )
            if name in self.required_columns:
                raise ValueError(f"lookups.{name} has the name of a column; give it another name")
        return self

    @property
    def placeholders(self) -> tuple[str, ...]:
        """Every name a prompt may use: the required columns, then the lookups."""
        return (*self.required_columns, *self.lookups)

    @model_validator(mode="after")
    def _sampling_lives_in_one_place(self) -> Study:
        doubled = sorted({"temperature", "seed"} & self.generation.model_fields_set)
        if doubled:
            raise ValueError(
                f"generation.{doubled[0]} is a sampling setting: "
                "set sampling.temperature or sampling.base_seed"
            )
        return self

    @model_validator(mode="after")
    def _completion_body_is_the_researchers(self) -> Study:
        # The completion form sends their request body (prompt, temperature, max_tokens, stop, seed) and
        # nothing else, so a top_p it would not send is refused rather than silently left out.
        if self.prompt.form is PromptForm.COMPLETION and "top_p" in self.generation.model_fields_set:
            raise ValueError(
                "generation.top_p is not sent by the completion form, whose requests carry only prompt, "
                "temperature, max_tokens, stop and seed; remove it"
            )
        return self

    def clean(self, value: str) -> str:
        for old, new in self.text_replacements.items():
            value = value.replace(old, new)
        return value.strip() if self.strip_values else value

    def values(self, row: Mapping[str, str]) -> dict[str, str]:
        """What a prompt's placeholders stand for in one row: each required column cleaned, then each
        lookup resolved from its column's raw value."""
        values = {column: self.clean(row[column]) for column in self.required_columns}
        values.update({name: lookup.resolve(row[lookup.column]) for name, lookup in self.lookups.items()})
        return values

    def render(self, row: Mapping[str, str]) -> RenderedPrompt:
        """The system text and the user message of every turn for one row (every required column needed)."""
        values = self.values(row)
        system = self.prompt.system.format_map(values) if self.prompt.system else None
        users = tuple(turn.user.format_map(values) for turn in self.prompt.conversation)
        return RenderedPrompt(system, users)


@dataclass(frozen=True)
class RenderedPrompt:
    """One row's prompt: the system text and the user messages in the order they are asked."""

    system: str | None
    users: tuple[str, ...]


def sampling_settings(study: Study, args: Any) -> SamplingSettings:
    """The study's sampling settings with the worker's `--temperature`, `--samples`, `--seed` applied.

    InputError naming the flag for a value the settings refuse (a negative temperature, zero samples).
    """
    overrides = {
        field: value
        for field, value in (
            ("temperature", getattr(args, "temperature", None)),
            ("samples_per_row", getattr(args, "samples", None)),
            ("base_seed", getattr(args, "seed", None)),
        )
        if value is not None
    }
    try:
        return SamplingSettings.model_validate({**study.sampling.model_dump(), **overrides})
    except ValidationError as err:
        problem = validation_problem(err)
        if problem.field not in SAMPLING_FLAGS:  # a rule over several settings: the seeds' range
            raise InputError(f"--seed/--samples: {problem.sentence}") from err
        raise InputError(problem.for_flag(SAMPLING_FLAGS[problem.field])) from err


# SamplingSettings field -> the worker flag that overrides it.
SAMPLING_FLAGS = {"temperature": "--temperature", "samples_per_row": "--samples", "base_seed": "--seed"}


def study_search_path() -> list[Path]:
    """Directories `--study NAME` looks in, first to last: $GRACE_STUDIES_DIR, the container, the repo."""
    dirs = [Path(p) for p in os.environ.get(contract.STUDIES_DIR_ENV, "").split(os.pathsep) if p]
    return [*dirs, Path(contract.CONTAINER_STUDIES_DIR), REPO_STUDIES_DIR]


def resolve_study_path(name_or_path: str) -> Path:
    """A path as given when it names a file (or ends in .yaml); else NAME.yaml on the search path, where
    NAME is `DESIGN/STUDY` (e.g. chat/study1) or a bare STUDY, looked up as STUDY.yaml and then in the
    default design's folder (researchers/STUDY.yaml)."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.is_file():
        if not candidate.is_file():
            raise InputError(f"--study {name_or_path}: no such file.")
        return candidate
    names = [f"{name_or_path}.yaml"]
    if candidate.parent == Path():
        names.append(f"{contract.DEFAULT_DESIGN}/{name_or_path}.yaml")
    for directory in study_search_path():
        for name in names:
            path = directory / name
            if path.is_file():
                return path
    searched = ", ".join(str(d) for d in study_search_path())
    raise InputError(
        f"--study {name_or_path}: unknown study (no {' or '.join(names)} in {searched}); name a design's "
        f"study as DESIGN/STUDY (designs: {', '.join(contract.DESIGNS)}) or give a YAML path."
    )


def load_study(name_or_path: str) -> Study:
    """Load and validate a study; InputError with one sentence naming the file and key otherwise."""
    path = resolve_study_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise InputError(f"study file {path}: cannot be read as YAML ({err}).") from err
    if not isinstance(raw, dict):
        raise InputError(f"study file {path}: expected a mapping at the top level.")
    try:
        return Study.model_validate(raw)
    except ValidationError as err:
        problem = validation_problem(err)
        raise InputError(f"study file {path}: {problem.key or '(top level)'}: {problem.sentence}") from err
