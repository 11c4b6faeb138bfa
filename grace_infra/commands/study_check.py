"""`grace studies check`: are the stack's study CSVs where `pulumi up` reads them, and would the worker
take them?

Each study the stack runs is checked at the path `grace:experiments.inputFiles` names (data/study1.csv
and data/study2.csv on the nrp stack), with no stand-in (unlike `grace render`, which prices a checkout
without them on ../shared/data or test fixtures): the file is read by the worker's own input reader, so
encoding, header, field counts and the columns the study file's `required_columns` lists are checked
exactly as the Job will check them. Its rows are counted and set beside the researchers' published counts.

Imported only by grace_infra.commands.studies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from grace_infra import constants as c
from grace_infra.config.stack_config import GraceConfig
from grace_infra.config.stack_files import PROJECT_ROOT, SECRET_KEYS, load_raw_config
from grace_infra.errors import GraceError
from grace_infra.planning.study_bundle import load_study_bundle
from worker.errors import InputError
from worker.run.input_table import read_input

__all__ = ["StudyCheckError", "StudyFileCheck", "check_study_files", "format_study_checks"]

_WORKER_FLAG = "--input "  # the worker names its flag; here the file is the stack's, not a flag


class StudyCheckError(GraceError):
    """A study the stack runs without a study file."""


@dataclass(frozen=True)
class StudyFileCheck:
    """One study's CSV as the stack would ship it."""

    study: str
    path: str  # as grace:experiments.inputFiles names it
    study_file: str  # where the required columns come from, e.g. jobs/studies/researchers/study1.yaml
    required_columns: tuple[str, ...]
    rows: int | None  # None when the file cannot be used
    problem: str | None  # one sentence, None when the worker would take the file

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_study_files(
    stack: str, config_files: Sequence[Path] = (), project_root: Path = PROJECT_ROOT
) -> list[StudyFileCheck]:
    """Every configured study's CSV, checked as the module doc says. GraceError for a bad stack."""
    raw, _ = load_raw_config(stack, config_files, project_root)
    config = GraceConfig.parse({key: value for key, value in raw.items() if key not in SECRET_KEYS})
    input_files = config.experiments.input_files
    # The study files alone: the bundle would refuse the missing CSVs this command is here to name.
    experiments = config.experiments.model_copy(update={"input_files": {}})
    bundle = load_study_bundle(config.model_copy(update={"experiments": experiments}))
    checks = []
    for study in config.experiments.studies:
        # Every design the matrix runs reads the same CSV: it must hold the columns of each.
        study_files = [f for design in config.designs() if (f := bundle.study_file(design, study))]
        if not study_files:
            raise StudyCheckError(f"{study}: the stack has no study file for it, so no required columns.")
        required = tuple(dict.fromkeys(c for f in study_files for c in f.definition.required_columns))
        study_file = ", ".join(f.path for f in study_files)
        local = input_files.get(study)
        if local is None:
            unset = (
                f"grace:experiments.inputFiles.{study} is not set: the Jobs read {c.INPUT_MOUNT}/{study}.csv "
                "from the input claim, which this command cannot see (jobs/README.md)."
            )
            checks.append(StudyFileCheck(study, "-", study_file, required, None, unset))
            continue
        path = Path(local) if Path(local).is_absolute() else project_root / local
        rows: int | None = None
        problem: str | None = None
        if not path.exists():
            problem = (
                f"{local} does not exist: copy the researchers' {Path(local).name} there "
                f"(grace:experiments.inputFiles.{study})."
            )
        else:
            try:
                rows = read_input(path, required).file_rows
            except InputError as err:
                problem = str(err).removeprefix(_WORKER_FLAG)
        checks.append(StudyFileCheck(study, local, study_file, required, rows, problem))
    return checks


def format_study_checks(checks: Sequence[StudyFileCheck]) -> str:
    """One line per study, then the verdict."""
    lines = []
    for check in checks:
        if check.ok:
            published = c.PUBLISHED_STUDY_ROWS.get(check.study)
            of_published = f" (the researchers' published file: {published:,})" if published else ""
            lines.append(
                f"ok    {check.study}  {check.path}: {check.rows:,} rows{of_published}; all "
                f"{len(check.required_columns)} columns required by {check.study_file}"
            )
        else:
            lines.append(f"FAIL  {check.study}  {check.problem}")
    ready = sum(check.ok for check in checks)
    verdict = "ready for pulumi up" if ready == len(checks) else "not ready for pulumi up"
    lines.append(f"study files: {ready} of {len(checks)} {verdict}")
    return "\n".join(lines)
