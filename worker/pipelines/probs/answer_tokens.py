"""How a question's options are written as tokens for one model, and which token sequences count.

Surface variants ("yes", "Yes", " yes", " Yes") are the same answer. `surface_variants` lists them;
`plan_options` takes each option's variant token sequences (tokenized by the server right after the real
generation prompt) and keeps each distinct sequence once, drops a variant that only extends another of the
same option (already counted), refuses options the tokenizer cannot tell apart, and finds where a shorter
option could continue into a longer one ("was" / "was"+"n't"), so that the pipeline can keep the options
disjoint. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from worker.errors import InputError

__all__ = ["OptionPlan", "OptionTokens", "VariantPolicy", "plan_options", "surface_variants"]


class VariantPolicy(StrEnum):
    """Which surface forms of an option count as that option (`--variants`)."""

    CASE_AND_SPACE = "case-and-space"  # yes, Yes, " yes", " Yes"
    SPACE = "space"  # yes, " yes"
    NONE = "none"  # exactly the option text


def surface_variants(text: str, policy: VariantPolicy) -> list[str]:
    """The forms of an option that mean the same answer, the option's own text first."""
    forms = [text]
    if policy is VariantPolicy.CASE_AND_SPACE:
        forms += [text[:1].upper() + text[1:], text[:1].lower() + text[1:]]
    if policy is not VariantPolicy.NONE:
        forms += [" " + form for form in forms]
    return list(dict.fromkeys(forms))


@dataclass(frozen=True)
class OptionTokens:
    """One option's distinct token sequences at the answer position, keyed by the variant text."""

    label: str
    sequences: dict[str, tuple[int, ...]]  # variant text -> token ids (distinct, none a prefix of another)


@dataclass(frozen=True)
class OptionPlan:
    """How a question's options are scored for this model."""

    options: tuple[OptionTokens, ...]
    first_token_exact: bool  # every sequence is one token, all distinct
    # (option label, variant text) -> the next tokens that would turn that sequence into another option.
    continuations: dict[tuple[str, str], tuple[int, ...]] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The plan as JSON for the meta file, enough to recompute every option's probability."""
        return {
            "first_token_exact": self.first_token_exact,
            "options": {o.label: {t: list(ids) for t, ids in o.sequences.items()} for o in self.options},
            "excluded_continuations": [
                {"option": label, "variant": text, "next_token_ids": list(ids)}
                for (label, text), ids in self.continuations.items()
            ],
        }


def plan_options(option_sequences: Mapping[str, Mapping[str, Sequence[int]]]) -> OptionPlan:
    """Deduplicate each option's variant sequences and find the cross-option prefix relations.

    `option_sequences` is label -> variant text -> token ids, in preference order. Within an option, a
    sequence equal to an earlier one, or extending one, is already counted and is dropped. Across options,
    an identical sequence makes the options indistinguishable: InputError.
    """
    options: list[OptionTokens] = []
    for label, variants in option_sequences.items():
        kept: dict[str, tuple[int, ...]] = {}
        for text, ids in variants.items():
            seq = tuple(ids)
            if not seq:
                raise InputError(f"option {label!r} variant {text!r} tokenizes to no tokens.")
            if any(seq[: len(other)] == other for other in kept.values()):
                continue
            kept = {t: s for t, s in kept.items() if s[: len(seq)] != seq}
            kept[text] = seq
        options.append(OptionTokens(label=label, sequences=kept))
    continuations: dict[tuple[str, str], set[int]] = {}
    for option in options:
        for other in options:
            if other is option:
                continue
            for text, seq in option.sequences.items():
                for other_text, other_seq in other.sequences.items():
                    if other_seq == seq:
                        raise InputError(
                            f"options {option.label!r} ({text!r}) and {other.label!r} ({other_text!r}) are "
                            "the same tokens for this model, so their probabilities cannot be told apart."
                        )
                    if other_seq[: len(seq)] == seq:
                        continuations.setdefault((option.label, text), set()).add(other_seq[len(seq)])
    single = all(len(seq) == 1 for o in options for seq in o.sequences.values())
    return OptionPlan(
        options=tuple(options),
        first_token_exact=single,
        continuations={key: tuple(sorted(ids)) for key, ids in continuations.items()},
    )
