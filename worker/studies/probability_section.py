"""Experiment 2's questions as data: a study file's `probability:` section, parsed and expanded.

A question is a prompt over the row's columns plus a closed set of answer options and the names of
its output columns. `expand: {k: [0, 1, 2, 3]}` asks one question once per value (Study 1's four state
questions). The section's `scoring` says how an option is scored: `chat` (the default) renders the prompt
with the model's chat template and tokenizes each option on its own after it; `joint-completion` is the
researchers' own rule (their `ModelScorer`): the raw prompt text, no chat template, and the prompt with
the option appended tokenized as one text. Everything here is pure and raises InputError with one
sentence naming the key; the pipeline that asks the questions is `worker.pipelines.probs.probs_pipeline`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from worker.errors import InputError, validation_problem
from worker.studies.definition import Study, template_fields

__all__ = [
    "ColumnNames",
    "Marginal",
    "OptionSpec",
    "ProbabilitySection",
    "Question",
    "QuestionSpec",
    "Scoring",
    "consistency_for",
    "expand_questions",
    "generic_question",
    "option_label",
    "questions_for",
]

GENERIC_QUESTION_NAME = "answer"  # the --tokens question; its detail columns are answer_*


class Scoring(StrEnum):
    """How a section's options are scored (`probability.scoring`)."""

    # The model's chat template renders the prompt; each option is tokenized on its own after the
    # generation prompt, surface variants summed; `--method` picks first-token or continuation.
    CHAT = "chat"
    # The researchers' ModelScorer (src/utils/model_scorer.py, score_completion): the raw prompt with no
    # chat template; prompt and prompt+option each tokenized with the tokenizer's default special
    # tokens; the option's log-probability is the sum over the joint tokenization's tokens beyond the
    # prompt's length, -100.0 when there are none; a softmax over the options.
    JOINT_COMPLETION = "joint-completion"


def _per_label_column(name: str, key: str) -> str:
    """A column name written once per option or marginal label, so it must place the label."""
    if "label" not in template_fields(name):
        raise ValueError(f"{key} {name!r} must contain {{label}}")
    return name


class OptionSpec(BaseModel):
    """One allowed answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = Field(min_length=1, description="What the model would write, e.g. '10%' or \"wasn't\".")
    label: str = Field(description="Name used in output columns, e.g. '10' or 'wasnt'.")
    value: float | None = Field(default=None, description="Numeric value, for the mean/std columns.")

    @model_validator(mode="before")
    @classmethod
    def _from_plain_text(cls, data: Any) -> Any:
        if isinstance(data, str | int | float) and not isinstance(data, bool):
            return {"text": str(data), "label": option_label(str(data))}
        return data

    @field_validator("label")
    @classmethod
    def _label_is_a_column_part(cls, label: str) -> str:
        # The apostrophe is allowed because the researchers' Study 2 columns carry it (prob_wasn't_bad).
        if not re.fullmatch(r"[A-Za-z0-9_']+", label):
            raise ValueError(f"option label {label!r} must be letters, digits, underscores and apostrophes")
        return label


class ColumnNames(BaseModel):
    """Output column names of a question. `{label}` stands for the option label; `{k}`-style names for
    the question's expansion variables."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prob: str = Field(description="Renormalised probability of each option; must contain {label}.")
    entropy: str = Field(description="Entropy in bits of the renormalised distribution.")
    mean: str | None = Field(default=None, description="Mean of the option values (needs every value).")
    std: str | None = Field(default=None, description="Standard deviation of the option values.")

    @field_validator("prob")
    @classmethod
    def _prob_has_label(cls, name: str) -> str:
        return _per_label_column(name, "columns.prob")


class QuestionSpec(BaseModel):
    """One probability question as written in a study file (before `expand`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="Prefix of the question's detail columns, e.g. state{k}.")
    user: str = Field(min_length=1, description="User message template over the row's columns.")
    system: str | None = Field(default=None, description="System message; the section's when omitted.")
    options: tuple[OptionSpec, ...] = Field(min_length=2, description="The closed set of answers.")
    columns: ColumnNames = Field(description="Output column names.")
    expand: dict[str, tuple[str | int, ...]] = Field(
        default_factory=dict, description="Ask the question once per value, e.g. {k: [0, 1, 2, 3]}."
    )

    @model_validator(mode="after")
    def _consistent(self) -> QuestionSpec:
        labels = [option.label for option in self.options]
        if len(set(labels)) != len(labels):
            raise ValueError(f"question {self.name!r} repeats an option label")
        texts = [option.text for option in self.options]
        if len(set(texts)) != len(texts):
            raise ValueError(f"question {self.name!r} repeats an option text")
        if (self.columns.mean or self.columns.std) and any(o.value is None for o in self.options):
            raise ValueError(f"question {self.name!r} asks for a mean/std but not every option has a value")
        if len(self.expand) > 1:
            raise ValueError(f"question {self.name!r}: expand takes one variable")
        return self


class MarginalSpec(BaseModel):
    """A marginal of one question's distribution, written beside a separately asked question.

    Study 2 asks the frame and the assessment on their own and also asks for the whole sentence; summing
    the sentence probabilities per frame (per assessment) gives what the joint implies for the separately
    asked question, so an analysis can see whether the model's answers agree with each other.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, description="Name of the marginal, for messages.")
    source: str = Field(alias="from", description="The question whose distribution is summed.")
    compare_with: str | None = Field(
        default=None, description="The separately asked question these marginals correspond to."
    )
    groups: dict[str, tuple[str, ...]] = Field(
        min_length=2, description="Marginal label -> option labels of `from` summed into it."
    )
    column: str = Field(description="Output column per marginal label; must contain {label}.")

    @field_validator("column")
    @classmethod
    def _column_has_label(cls, name: str) -> str:
        return _per_label_column(name, "consistency column")


class ProbabilitySection(BaseModel):
    """A study file's `probability:` section."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scoring: Scoring = Field(
        default=Scoring.CHAT,
        description="chat (the chat template; --method scores) or joint-completion (the researchers' rule).",
    )
    system: str | None = Field(default=None, description="System message of every question.")
    questions: tuple[QuestionSpec, ...] = Field(min_length=1, description="The questions asked per row.")
    consistency: tuple[MarginalSpec, ...] = Field(
        default=(), description="Marginals of one question's distribution, as consistency columns."
    )

    @model_validator(mode="after")
    def _raw_prompts_have_no_system_message(self) -> ProbabilitySection:
        if self.scoring is Scoring.JOINT_COMPLETION and (
            self.system is not None or any(q.system is not None for q in self.questions)
        ):
            raise ValueError(
                "joint-completion scoring sends the raw prompt with no chat template, so there is no "
                "system message: remove system"
            )
        return self


@dataclass(frozen=True)
class Marginal:
    """A resolved marginal: which question it sums, and the column of each marginal label."""

    name: str
    source: str  # question name
    groups: dict[str, tuple[str, ...]]  # marginal label -> source option labels
    columns: dict[str, str]  # marginal label -> output column

    def values(self, normalised: Mapping[str, float]) -> dict[str, float]:
        """The marginal probabilities from the source question's renormalised distribution."""
        return {
            self.columns[label]: sum(normalised[option] for option in options)
            for label, options in self.groups.items()
        }


def marginals_for(section: ProbabilitySection, questions: Sequence[Question]) -> list[Marginal]:
    """The section's consistency marginals, checked against the questions they sum."""
    by_name = {question.name: question for question in questions}
    marginals = []
    for spec in section.consistency:
        source = by_name.get(spec.source)
        if source is None:
            raise InputError(
                f"probability.consistency {spec.name!r}: from {spec.source!r} is not a question."
            )
        if spec.compare_with is not None and spec.compare_with not in by_name:
            raise InputError(
                f"probability.consistency {spec.name!r}: compare_with {spec.compare_with!r} "
                "is not a question."
            )
        listed = [option for options in spec.groups.values() for option in options]
        labels = set(source.prob_columns)
        if sorted(listed) != sorted(labels):
            raise InputError(
                f"probability.consistency {spec.name!r}: the groups must list every option of "
                f"{spec.source!r} exactly once ({', '.join(sorted(labels))})."
            )
        columns = {label: spec.column.format(label=label) for label in spec.groups}
        marginals.append(Marginal(spec.name, spec.source, dict(spec.groups), columns))
    return marginals


def option_label(text: str) -> str:
    """A column-safe label for an option given as plain text: '10%' -> '10', "wasn't" -> 'wasnt'."""
    label = re.sub(r"[^A-Za-z0-9]+", "_", text.replace("'", "")).strip("_").lower()
    return label or "option"


@dataclass(frozen=True)
class Question:
    """One concrete question (after expansion) with its output column names resolved."""

    name: str
    system: str | None
    user: str  # template over row columns; expansion variables already substituted
    options: tuple[OptionSpec, ...]
    prob_columns: dict[str, str]  # option label -> column
    entropy_column: str
    mean_column: str | None
    std_column: str | None
    scoring: Scoring = Scoring.CHAT

    def messages(self, row: Mapping[str, str], study: Study | None) -> list[dict[str, str]]:
        messages = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": self.completion_prompt(row, study)})
        return messages

    def completion_prompt(self, row: Mapping[str, str], study: Study | None) -> str:
        """The question's text for one row: the user message, or under joint-completion the whole prompt."""
        values = study.values(row) if study else dict(row)
        return self.user.format_map(values)

    @property
    def detail_columns(self) -> dict[str, str]:
        """What each per-question record column holds, keyed by column name."""
        if self.scoring is Scoring.JOINT_COMPLETION:
            return {
                f"{self.name}_method": "method used for this row",
                f"{self.name}_coverage": "total raw probability of the options",
                f"{self.name}_boundary_merged": "options whose joint tokenization changes the prompt's "
                "tokens, ';'-separated",
                f"{self.name}_raw": "JSON: option -> raw probability",
                f"{self.name}_logprobs": "JSON: option -> natural-log probability (-100.0: no token scored)",
                f"{self.name}_option_token_ids": "JSON: option -> the scored token ids of prompt+option",
                f"{self.name}_prompt": "exact prompt text, as tokenized",
                f"{self.name}_prompt_token_ids": "JSON: the prompt's token ids",
            }
        return {
            f"{self.name}_method": "method used for this row",
            f"{self.name}_coverage": "total raw probability of the options",
            f"{self.name}_absent": "options outside the top-N (first-token), ';'-separated",
            f"{self.name}_raw": "JSON: option -> raw probability",
            f"{self.name}_logprobs": "JSON: option -> natural-log probability",
            f"{self.name}_variants": "JSON: option -> {variant text: token ids} summed",
            f"{self.name}_prompt": "exact prompt text (decoded prompt token ids)",
            f"{self.name}_prompt_token_ids": "JSON: the prompt token ids sent",
        }

    @property
    def output_columns(self) -> list[str]:
        stats = [c for c in (self.mean_column, self.std_column) if c]
        return [*self.prob_columns.values(), *stats, self.entropy_column, *self.detail_columns]

    @property
    def provenance_columns(self) -> list[str]:
        """The evidence behind the numbers (JSON records, the exact prompt): the output puts them last."""
        return [
            column
            for column, meaning in self.detail_columns.items()
            if meaning.startswith("JSON:") or column == f"{self.name}_prompt"
        ]


def _substitute(template: str, bindings: Mapping[str, str]) -> str:
    """Fill only the expansion variables of `template`; `{column}` placeholders stay for the row."""
    parts = []
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is not None:
            parts.append(bindings.get(name, "{" + name + "}"))
    return "".join(parts)


def expand_questions(section: ProbabilitySection, available: Sequence[str]) -> list[Question]:
    """Every concrete question of a section, checked against the columns a row will have."""
    questions: list[Question] = []
    for spec in section.questions:
        expansions = [
            {variable: str(value)} for variable, values in spec.expand.items() for value in values
        ] or [{}]
        for bindings in expansions:
            unknown = sorted(template_fields(spec.name) - set(bindings))
            if unknown:
                raise InputError(
                    f"probability question name {spec.name!r} uses {{{unknown[0]}}}, not an expand variable."
                )
            name = _substitute(spec.name, bindings).format()
            user = _substitute(spec.user, bindings)
            missing = sorted(template_fields(user) - set(available))
            if missing:
                raise InputError(
                    f"probability question {name!r} uses {', '.join(missing)}, which the study's "
                    "required_columns does not list."
                )
            columns = spec.columns
            try:
                prob = {
                    o.label: columns.prob.format_map({**bindings, "label": o.label}) for o in spec.options
                }
                entropy = columns.entropy.format_map(bindings)
                mean = columns.mean.format_map(bindings) if columns.mean else None
                std = columns.std.format_map(bindings) if columns.std else None
            except KeyError as err:
                raise InputError(
                    f"probability question {name!r}: a column name uses {{{err.args[0]}}}, which is neither "
                    "{label} nor an expand variable."
                ) from None
            questions.append(
                Question(
                    name=name,
                    system=spec.system if spec.system is not None else section.system,
                    user=user,
                    options=spec.options,
                    prob_columns=prob,
                    entropy_column=entropy,
                    mean_column=mean,
                    std_column=std,
                    scoring=section.scoring,
                )
            )
    names = [column for question in questions for column in question.output_columns]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InputError(f"probability questions produce the column {duplicated[0]!r} twice.")
    return questions


def generic_question(tokens: Sequence[str], study: Study) -> Question:
    """As a Job drafted in the researchers' plans asks (plans/02_KUBERNETES_INFRASTRUCTURE.md): one
    question, the study's Experiment 1 prompt, options given by --tokens.

    A conversation's questions are asked together in one user message here: a probability is read at
    one answer position.
    """
    options = tuple(OptionSpec.model_validate(token) for token in tokens)
    labels = [option.label for option in options]
    if len(set(labels)) != len(labels):
        raise InputError(f"--tokens {','.join(tokens)}: two options give the same column label.")
    return Question(
        name=GENERIC_QUESTION_NAME,
        system=study.prompt.system,
        user="\n\n".join(turn.user for turn in study.prompt.conversation),
        options=options,
        prob_columns={label: f"prob_{label}" for label in labels},
        entropy_column="entropy",
        mean_column=None,
        std_column=None,
    )


def questions_for(study: Study, tokens: Sequence[str] | None) -> list[Question]:
    """The questions a run asks: --tokens' generic one, else the study's probability section."""
    if tokens:
        return [generic_question(tokens, study)]
    return expand_questions(probability_section(study), study.placeholders)


def consistency_for(
    study: Study, questions: Sequence[Question], tokens: Sequence[str] | None
) -> list[Marginal]:
    """The consistency marginals of a run (none with --tokens, which replaces the study's questions)."""
    if tokens:
        return []
    return marginals_for(probability_section(study), questions)


def probability_section(study: Study) -> ProbabilitySection:
    """The study's `probability:` section, validated; InputError naming the key otherwise."""
    if study.probability is None:
        raise InputError(
            f"study {study.name} has no probability: section; add one or pass --tokens with the options."
        )
    try:
        section = ProbabilitySection.model_validate(study.probability)
    except ValidationError as err:
        problem = validation_problem(err)
        where = problem.key or "(top level)"
        raise InputError(f"study {study.name}: probability.{where}: {problem.sentence}") from err
    return section
