"""Every difference between two designs of one study, computed from their study files on real rows.

A design is a folder of study files (`jobs/studies/researchers/` holds the researchers' own requests).
`diff_study` lines up what each design sends for the same CSV rows and lists each way they differ:

    form         how Experiment 1 reaches the model (raw text to /v1/completions, or chat messages
                 rendered by the model's chat template)
    requests     how many requests a row costs, in what shape (independent prompts or one conversation)
    generation   max_tokens, temperature, top_p, stop, reply stripping
    sampling     samples per row, base seed, the seed rule
    columns      the reply columns Experiment 1 writes
    wording      the text the model reads, row by row, as a unified diff
    exp2 ...     the same for Experiment 2: its form, questions, their wording and options, the scoring
                 rule and the output columns

Nothing is claimed: each line is read from the two files, so a changed file changes the diff. Pure: no
server and no I/O beyond what the caller passes in.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from worker.errors import InputError
from worker.studies.definition import PromptForm, Study
from worker.studies.probability_section import (
    Question,
    Scoring,
    consistency_for,
    probability_section,
    questions_for,
)

__all__ = ["Difference", "diff_study", "format_differences"]

# How each scoring rule reads an option's probability. The chat rule's method and variants are the
# probs pipeline's defaults (worker/pipelines/probs/probs_config.py: `--method auto`,
# `--variants case-and-space`), which the stack's Jobs pass unchanged.
SCORING_RULES = {
    Scoring.CHAT: (
        "chat: the model's chat template renders the question; each option tokenized on its own after the "
        "generation prompt; first-token where exact, else continuation; case and space variants summed"
    ),
    Scoring.JOINT_COMPLETION: (
        "joint-completion: the raw prompt with no chat template; the option appended with no separator; "
        "the joint tokenization's tokens beyond the prompt's summed (-100.0 when none); softmax over the "
        "options, no variants"
    ),
}
NOT_SET = "(not set)"


@dataclass(frozen=True)
class Difference:
    """One way two designs of a study differ."""

    experiment: str  # "exp1" or "exp2"
    aspect: str  # "form", "max_tokens", "wording", ...
    reference: str  # what the reference design does
    variant: str  # what the variant does
    detail: tuple[str, ...] = ()  # a unified diff, for wording


def _form_text(study: Study) -> str:
    if study.prompt.form is PromptForm.COMPLETION:
        return "completion: raw text to /v1/completions, no chat template, no system message"
    return "chat: messages to /v1/chat/completions, rendered by the model's chat template"


def _requests_text(study: Study) -> str:
    names = ", ".join(turn.name for turn in study.prompt.conversation)
    count = len(study.prompt.conversation)
    if study.prompt.form is PromptForm.COMPLETION:
        return f"{count} independent request(s) per row ({names})"
    if count == 1:
        return "1 single-turn request per row"
    return f"1 conversation of {count} turns per row ({names}), each reply appended before the next turn"


def _stop_text(study: Study) -> str:
    stop = study.generation.stop
    if stop:
        return json.dumps(list(stop))
    if study.prompt.form is PromptForm.COMPLETION:
        return "none in the file (the Job passes the model family's with --stop)"
    return "none (the chat template ends the turn)"


def _exp1_facts(study: Study) -> dict[str, str]:
    generation, sampling = study.generation, study.sampling
    system = study.prompt.system if study.prompt.form is PromptForm.CHAT else None
    return {
        "form": _form_text(study),
        "requests": _requests_text(study),
        "system message": system if system else "none",
        "max_tokens": str(generation.max_tokens),
        "temperature": str(sampling.temperature),
        "top_p": "not sent" if study.prompt.form is PromptForm.COMPLETION else str(generation.top_p),
        "stop": _stop_text(study),
        "reply stripping": "stripped" if study.prompt.strip_replies else "kept as returned",
        "samples per row": str(sampling.samples_per_row),
        "base seed": str(sampling.base_seed),
        "seed rule": sampling.seed_rule_text,
        "reply columns": ", ".join(study.prompt.reply_columns),
    }


def _exp1_document(study: Study, row: Mapping[str, str]) -> list[str]:
    """What the model reads for one row, one block per request or turn, with how it is sent."""
    values = study.values(row)
    lines: list[str] = []
    if study.prompt.form is PromptForm.CHAT and study.prompt.system:
        lines += ["[system]", *study.prompt.system.format_map(values).splitlines()]
    for index, turn in enumerate(study.prompt.conversation):
        if study.prompt.form is PromptForm.COMPLETION:
            header = f"[request {index + 1}: {turn.name}, independent, raw text]"
        else:
            after = ", after the replies so far" if index else ""
            header = f"[turn {index + 1}: {turn.name}, user message{after}]"
        lines += [header, *turn.user.format_map(values).splitlines()]
    return lines


def _questions(study: Study) -> list[Question]:
    if study.probability is None:
        return []
    return list(questions_for(study, None))


def _exp2_facts(study: Study) -> dict[str, str]:
    if study.probability is None:
        return {"experiment 2": "no probability section"}
    questions = _questions(study)
    section = probability_section(study)
    facts = {
        "scoring rule": SCORING_RULES[section.scoring],
        "system message": section.system or "none",
        "questions": ", ".join(q.name for q in questions),
    }
    for marginal in consistency_for(study, questions, None):
        facts[f"marginal {marginal.name} columns"] = ", ".join(marginal.columns.values())
    for question in questions:
        facts[f"{question.name} options"] = json.dumps([option.text for option in question.options])
        columns = [*question.prob_columns.values(), question.entropy_column]
        columns += [c for c in (question.mean_column, question.std_column) if c]
        facts[f"{question.name} columns"] = ", ".join(columns)
    return facts


def _exp2_document(study: Study, row: Mapping[str, str]) -> list[str]:
    lines: list[str] = []
    for question in _questions(study):
        if question.scoring is Scoring.JOINT_COMPLETION:
            text = question.completion_prompt(row, study)
            lines += [f"[question {question.name}, raw text]", *text.splitlines()]
            continue
        lines.append(f"[question {question.name}, chat messages]")
        for message in question.messages(row, study):
            lines += [f"({message['role']})", *message["content"].splitlines()]
    return lines


def _fact_differences(
    experiment: str, reference: Mapping[str, str], variant: Mapping[str, str]
) -> list[Difference]:
    aspects = [*reference, *(key for key in variant if key not in reference)]
    return [
        Difference(experiment, aspect, reference.get(aspect, NOT_SET), variant.get(aspect, NOT_SET))
        for aspect in aspects
        if reference.get(aspect, NOT_SET) != variant.get(aspect, NOT_SET)
    ]


def _wording_difference(
    experiment: str, label: str, reference: list[str], variant: list[str], names: tuple[str, str]
) -> list[Difference]:
    if reference == variant:
        return []
    detail = tuple(difflib.unified_diff(reference, variant, names[0], names[1], lineterm="", n=1))
    return [Difference(experiment, f"wording, {label}", "see diff", "see diff", detail)]


def diff_study(
    reference: Study, variant: Study, rows: Sequence[tuple[int, Mapping[str, str]]], names: tuple[str, str]
) -> list[Difference]:
    """Every difference between two designs of one study, the wording compared on `rows` (index, row)."""
    if reference.name != variant.name:
        raise InputError(f"the designs are of different studies: {reference.name} and {variant.name}.")
    missing = sorted(set(variant.required_columns) - set(reference.required_columns))
    differences = _fact_differences("exp1", _exp1_facts(reference), _exp1_facts(variant))
    if missing:
        differences.append(Difference("exp1", "required columns", NOT_SET, ", ".join(missing)))
    for index, row in rows:
        differences += _wording_difference(
            "exp1", f"row {index}", _exp1_document(reference, row), _exp1_document(variant, row), names
        )
    differences += _fact_differences("exp2", _exp2_facts(reference), _exp2_facts(variant))
    for index, row in rows:
        differences += _wording_difference(
            "exp2", f"row {index}", _exp2_document(reference, row), _exp2_document(variant, row), names
        )
    return differences


def format_differences(study: str, differences: Sequence[Difference], names: tuple[str, str]) -> str:
    """The differences as text: one block per difference, the wording diffs indented below."""
    if not differences:
        return f"{study}: no differences between {names[0]} and {names[1]}."
    lines = [f"{study}: {len(differences)} difference(s), {names[0]} -> {names[1]}"]
    for difference in differences:
        lines.append(f"  [{difference.experiment}] {difference.aspect}")
        if difference.detail:
            lines += [f"      {line}" for line in difference.detail]
        else:
            lines.append(f"      {names[0]}: {difference.reference}")
            lines.append(f"      {names[1]}: {difference.variant}")
    return "\n".join(lines)


