"""Coding quality: how well does extraction agree with the researchers' own hand coding?

The validation set (../shared/data/validation, README there) holds the researchers' earlier GPT-4 replies
to both studies with their hand coding of every reply. This script codes those replies the way
`worker extract` does (the study's deterministic parser first; with `--endpoint`, the extractor model for
every reply the parser leaves) and prints, per field, how often the coding equals the human's (exact
match) and Cohen's kappa (agreement beyond chance, computed here), over the replies each coder coded and
the human coded unambiguously ("3?", "uncertain" and blanks are left out and counted).

    .venv/bin/python benchmarks/extraction_agreement.py                      # parser only, no model
    .venv/bin/python benchmarks/extraction_agreement.py --endpoint http://127.0.0.1:8000/v1 --model gemma

Nothing is written; the validation files are only read.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from worker.pipelines.extraction.backend import detect_backend  # noqa: E402
from worker.pipelines.extraction.extraction_pipeline import ExtractionPlan  # noqa: E402
from worker.server.client import ModelClient  # noqa: E402
from worker.server.client_options import ClientOptions, api_key_from_env  # noqa: E402
from worker.studies.definition import load_study, resolve_study_path  # noqa: E402
from worker.studies.extraction_section import ExtractionSpec, load_extraction  # noqa: E402
from worker.studies.rule_coder import PARSER_METHOD  # noqa: E402

VALIDATION_DIR = REPO.parent / "shared" / "data" / "validation"
VALIDATION_FILES = {"study1": "study1_gpt4_coded.csv", "study2": "study2_gpt4_coded.csv"}
# The validation set's reply columns, in question order (its README): Study 1 asked three questions in one
# conversation; Study 2 one.
VALIDATION_REPLIES = {
    "study1": ("response_story", "response_speach", "response_knowledge"),
    "study2": ("response",),
}
UNCLEAR = None  # a human code that is not one value of the field ("3?", "uncertain", blank)


def _choice(mapping: Mapping[str, str]) -> Callable[[Any], Any]:
    def code(value: Any) -> Any:
        return mapping.get(str(value).strip(), UNCLEAR)

    return code


def _whole_number(value: Any) -> Any:
    text = str(value).strip()
    return int(text) if text.isdigit() else UNCLEAR


# schema field -> (validation column, the human code as the schema's value)
HUMAN_CODING: dict[str, dict[str, tuple[str, Callable[[Any], Any]]]] = {
    "study1": {
        "prior_answer": ("Prior_A", _whole_number),
        "probability_0": ("0", _whole_number),
        "probability_1": ("1", _whole_number),
        "probability_2": ("2", _whole_number),
        "probability_3": ("3", _whole_number),
        "knowledge_answer": ("Knowledge_A", _choice({"Y": "yes", "N": "no"})),
    },
    "study2": {
        "was_wasnt": ("Was/Wasn't", _choice({"was": "was", "wasn't": "wasn't"})),
        "assessment": ("Assessment", _choice({w: w for w in ("terrible", "bad", "good", "amazing")})),
    },
}


# ---- agreement statistics ----------------------------------------------------------------------------


def exact_match(pairs: Sequence[tuple[Hashable, Hashable]]) -> float:
    """Share of (coder, human) pairs that are equal; nan for no pairs."""
    if not pairs:
        return math.nan
    return sum(1 for coder, human in pairs if coder == human) / len(pairs)


def cohens_kappa(pairs: Sequence[tuple[Hashable, Hashable]]) -> float:
    """Cohen's kappa of two raters over the same items: (p_o - p_e) / (1 - p_e).

    p_o is the observed agreement and p_e the agreement expected by chance from each rater's own marginal
    frequencies (Cohen 1960). nan when there are no pairs or chance agreement is already 1 (both raters
    gave every item the same single value: kappa is undefined, not perfect).
    """
    n = len(pairs)
    if n == 0:
        return math.nan
    observed = exact_match(pairs)
    coder = Counter(c for c, _ in pairs)
    human = Counter(h for _, h in pairs)
    expected = sum(coder[value] * human[value] for value in coder.keys() | human.keys()) / (n * n)
    if expected == 1.0:
        return math.nan
    return (observed - expected) / (1 - expected)


# ---- coding the validation replies -------------------------------------------------------------------


@dataclass
class Coded:
    """The coding of every validation row: the schema fields, or None where no coder coded the row."""

    fields: list[dict[str, Any] | None]
    methods: list[str] = field(default_factory=list)  # per row: "parser", the model's name, or ""
    errors: list[str] = field(default_factory=list)  # the extractor model's failures, one per failed row


def load_spec(study: str) -> ExtractionSpec:
    path = resolve_study_path(study)
    return load_extraction(load_study(str(path)), path)


def study_rows(frame: pd.DataFrame, spec: ExtractionSpec, study: str) -> list[dict[str, str]]:
    """Validation rows as extraction input: the study's reply columns filled from the validation's.

    When the study declares as many reply columns as the validation set has replies they map in order;
    a study with one reply column gets the replies joined by blank lines.
    """
    replies = VALIDATION_REPLIES[study]
    ours = spec.section.reply_columns
    rows = []
    for record in frame.fillna("").astype(str).to_dict("records"):
        row = dict(record)
        if len(ours) == len(replies):
            row |= {column: record[source] for column, source in zip(ours, replies, strict=True)}
        elif len(ours) == 1:
            row[ours[0]] = "\n\n".join(record[source] for source in replies)
        else:
            raise SystemExit(
                f"{study}: {len(ours)} reply columns cannot take the validation's {len(replies)}."
            )
        for column in spec.row_columns - row.keys():
            row[column] = ""  # a stimulus column the validation set lacks (only shown to the model)
        rows.append(row)
    return rows


def code_with_parser(spec: ExtractionSpec, rows: Sequence[Mapping[str, str]]) -> Coded:
    coded = Coded(fields=[spec.parser.code(row) for row in rows])
    coded.methods = [PARSER_METHOD if fields is not None else "" for fields in coded.fields]
    return coded


async def code_with_model(
    spec: ExtractionSpec, rows: Sequence[Mapping[str, str]], coded: Coded, options: ClientOptions
) -> None:
    """Every row the parser left, coded by the extractor model exactly as `worker extract` would."""
    async with ModelClient(options) as client:
        choice = await detect_backend(client, None)
        plan = ExtractionPlan.build(spec, choice, validate=True, max_reasks=2, model_name=options.model_name)
        todo = [index for index, fields in enumerate(coded.fields) if fields is None]

        async def one(index: int) -> None:
            outcome = await plan.extract(client, rows[index])
            if outcome.ok:
                coded.fields[index] = outcome.fields
                coded.methods[index] = outcome.method
            else:
                coded.errors.append(outcome.error)

        await asyncio.gather(*(one(index) for index in todo))


@dataclass(frozen=True)
class FieldAgreement:
    field: str
    compared: int  # rows both the coder and the human coded with a value
    human_unclear: int  # coded rows whose human code is not a value of the field
    exact: float
    kappa: float


def agreement(study: str, frame: pd.DataFrame, coded: Coded, method: str | None) -> list[FieldAgreement]:
    """Per field, over the rows `method` coded (None: every coded row)."""
    results = []
    for name, (column, human_code) in HUMAN_CODING[study].items():
        pairs: list[tuple[Hashable, Hashable]] = []
        unclear = 0
        for index, fields in enumerate(coded.fields):
            if fields is None or (method is not None and coded.methods[index] != method):
                continue
            human = human_code(frame.iloc[index][column])
            if human is UNCLEAR:
                unclear += 1
                continue
            pairs.append((fields.get(name), human))
        results.append(FieldAgreement(name, len(pairs), unclear, exact_match(pairs), cohens_kappa(pairs)))
    return results


def report(study: str, frame: pd.DataFrame, coded: Coded) -> str:
    total = len(frame)
    counts = Counter(method for method in coded.methods if method)
    lines = [f"{study}: {total:,} hand-coded replies"]
    for method, count in sorted(counts.items(), key=lambda item: item[0] != PARSER_METHOD):
        lines.append(f"  coded by {method}: {count:,} ({count / total:.1%})")
    left = total - sum(counts.values())
    lines.append(f"  not coded: {left:,} ({left / total:.1%})")
    if coded.errors:
        lines.append(f"  the extractor model failed on {len(coded.errors):,}; the first: {coded.errors[0]}")
    for method in sorted(counts, key=lambda m: m != PARSER_METHOD):
        lines.append(f"  agreement with the human coding, rows coded by {method}:")
        lines.append(f"    {'field':<18} {'n':>6} {'exact':>7} {'kappa':>7} {'human unclear':>14}")
        for row in agreement(study, frame, coded, method):
            kappa = "n/a" if math.isnan(row.kappa) else f"{row.kappa:.3f}"
            exact = "n/a" if math.isnan(row.exact) else f"{row.exact:.1%}"
            lines.append(
                f"    {row.field:<18} {row.compared:>6} {exact:>7} {kappa:>7} {row.human_unclear:>14}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=VALIDATION_DIR, help="Validation folder (%(default)s).")
    parser.add_argument("--study", choices=[*VALIDATION_FILES, "all"], default="all")
    parser.add_argument("--endpoint", help="Extractor's OpenAI base URL; without it only the parser codes.")
    parser.add_argument("--model", help="Served model name at --endpoint.")
    parser.add_argument("--api-key-env", help="Environment variable holding the endpoint's API key.")
    parser.add_argument("--batch-size", type=int, default=16, help="Requests in flight (%(default)s).")
    parser.add_argument("--limit", type=int, help="Only the first N replies of each study.")
    args = parser.parse_args(argv)
    if args.endpoint and not args.model:
        parser.error("--endpoint needs --model (the served model that extracts)")
    studies = list(VALIDATION_FILES) if args.study == "all" else [args.study]
    for study in studies:
        path = args.data / VALIDATION_FILES[study]
        if not path.is_file():
            print(f"{path}: not found (the validation set is not on this machine).", file=sys.stderr)
            return 2
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        if args.limit:
            frame = frame.head(args.limit)
        spec = load_spec(study)
        rows = study_rows(frame, spec, study)
        coded = code_with_parser(spec, rows)
        if args.endpoint:
            options = ClientOptions(
                endpoint=args.endpoint,
                model_name=args.model,
                batch_size=args.batch_size,
                api_key=api_key_from_env(args.api_key_env),
            )
            asyncio.run(code_with_model(spec, rows, coded, options))
        print(report(study, frame, coded))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
