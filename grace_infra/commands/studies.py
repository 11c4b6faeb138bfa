"""`grace studies diff VARIANT`: every difference between a design of the studies and the researchers' own.

A design is a folder of study files: `researchers` (jobs/studies/researchers/, the requests the
researchers' scripts send), `chat` (jobs/studies/chat/, Grace's chat design), or any folder holding
`<study>.yaml` files (a variant of your own). Both designs are rendered on the same rows of the stack's
study CSVs (`grace:experiments.inputFiles`, found as `grace render` finds them) and every difference is
printed: form, requests per row, budgets, stop, sampling, reply columns, Experiment 2's questions,
options and scoring rule, and the wording the model reads, as a unified diff per row.

Exit codes: 0 the designs were compared (whether or not they differ); 2 an unknown design, a study file
either side cannot load, or an unreadable CSV (one line on stderr).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from grace_infra.commands.arguments import HelpFormatter, add_stack_argument
from grace_infra.config.input_files import offline_input_files
from grace_infra.config.stack_files import PROJECT_ROOT, load_raw_config
from grace_infra.errors import GraceError
from worker import contract
from worker.errors import InputError
from worker.studies.definition import Study, load_study
from worker.studies.design_diff import diff_study, format_differences

__all__ = ["DESIGNS", "main"]

EXIT_OK = 0
EXIT_USAGE = 2
REFERENCE_DESIGN = "researchers"
# Design name -> its folder of study files, relative to the project root.
DESIGNS = {design: Path("jobs/studies") / design for design in contract.DESIGNS}
STUDIES = ("study1", "study2")
DEFAULT_ROWS = "0"


class StudiesInputError(GraceError):
    """An unknown design, a study file that cannot load, or an unreadable CSV."""


def design_folder(design: str, project_root: Path = PROJECT_ROOT) -> Path:
    """The folder a design name or path stands for."""
    if design in DESIGNS:
        return project_root / DESIGNS[design]
    folder = Path(design)
    if not folder.is_dir():
        known = ", ".join(DESIGNS)
        raise StudiesInputError(f"design {design!r} is neither one of {known} nor a folder of study files.")
    return folder


def _load(folder: Path, study: str, design: str) -> Study:
    path = folder / f"{study}.yaml"
    if not path.is_file():
        raise StudiesInputError(f"design {design}: {path} does not exist.")
    try:
        return load_study(str(path))
    except InputError as err:
        raise StudiesInputError(f"design {design}: {err}") from None


def _rows(csv_path: Path, wanted: Sequence[int]) -> list[tuple[int, dict[str, str]]]:
    try:
        with csv_path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise StudiesInputError(f"{csv_path} cannot be read as CSV ({err}).") from None
    missing = [index for index in wanted if index >= len(rows)]
    if missing:
        raise StudiesInputError(f"--rows {missing[0]}: {csv_path} has {len(rows)} rows.")
    return [(index, rows[index]) for index in wanted]


def study_csvs(stack: str, project_root: Path = PROJECT_ROOT) -> dict[str, Path]:
    """The stack's study CSVs, with the stand-ins `grace render` uses when a file is not in the checkout."""
    raw, _ = load_raw_config(stack, project_root=project_root)
    raw, _ = offline_input_files(raw, project_root)
    files = (raw.get("experiments") or {}).get("inputFiles") or {}
    return {
        study: (path if path.is_absolute() else project_root / path)
        for study, path in ((s, Path(str(p))) for s, p in files.items())
    }


def diff_designs(
    variant: str,
    studies: Sequence[str],
    rows: Sequence[int],
    csvs: Mapping[str, Path],
    reference: str = REFERENCE_DESIGN,
) -> str:
    """The differences of every study, as printed."""
    names = (reference, variant)
    reference_folder, variant_folder = design_folder(reference), design_folder(variant)
    blocks = []
    for study in studies:
        if study not in csvs:
            raise StudiesInputError(
                f"the stack names no input CSV for {study} (grace:experiments.inputFiles)."
            )
        picked = _rows(csvs[study], rows)
        try:
            pair = _load(reference_folder, study, reference), _load(variant_folder, study, variant)
            differences = diff_study(*pair, picked, names)
        except InputError as err:
            raise StudiesInputError(str(err)) from None
        shown = ", ".join(str(index) for index, _ in picked)
        blocks.append(f"rows {shown} of {csvs[study]}\n" + format_differences(study, differences, names))
    return "\n\n".join(blocks)


def _row_indices(text: str) -> list[int]:
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of row numbers") from None
    if not indices or min(indices) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must list row numbers from 0")
    return indices


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grace studies",
        description="Compare a design of the studies with the researchers' own, on real rows.",
        epilog=f"exit codes: {EXIT_OK} compared; {EXIT_USAGE} unknown design, unloadable file or CSV.",
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    diff = commands.add_parser(
        "diff",
        help="every difference between VARIANT and the researchers' design",
        formatter_class=HelpFormatter,
    )
    diff.add_argument("variant", metavar="VARIANT", help=f"a design ({', '.join(DESIGNS)}) or a folder")
    diff.add_argument("--reference", default=REFERENCE_DESIGN, help="the design to compare against")
    diff.add_argument("--study", action="append", choices=STUDIES, help="a study (default: both)")
    diff.add_argument(
        "--rows", type=_row_indices, default=_row_indices(DEFAULT_ROWS), metavar="I,J",
        help="0-based CSV rows whose wording is compared",
    )
    add_stack_argument(diff)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        csvs = study_csvs(args.stack)
        text = diff_designs(args.variant, args.study or STUDIES, args.rows, csvs, args.reference)
    except GraceError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(text)
    return EXIT_OK
