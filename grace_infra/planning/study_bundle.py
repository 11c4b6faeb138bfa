"""The study definitions the Jobs run, read from `jobs/`: what ships to the cluster and what it costs.

`jobs/studies/<design>/<study>.yaml` (prompts, probability questions) and
`jobs/schemas/<design>/<study>_schema.json` are data owned by the worker, one folder per design of the
studies (`researchers`, `chat`); this module only reads them, and reads a study file only through the
worker's own models (worker.studies), so the file's structure and defaults are known in one place. It
gathers every file the Jobs need in the cluster into a `StudyBundle` (the content of the `grace-studies`
ConfigMap, keyed by the path the pod sees under /etc/grace) for every design a model of the matrix runs,
and counts how many requests one row of each study costs per experiment in each design, for the GPU-hour
plan. Files that do not exist yet are simply absent from the
bundle.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml
from pydantic import ValidationError

from grace_infra import constants as c
from grace_infra.config.stack_config import Design, Experiment, GraceConfig, Study
from grace_infra.errors import ConfigError
from worker import contract
from worker.errors import InputError, validation_problem
from worker.studies.definition import GenerationParams, SamplingSettings
from worker.studies.definition import Study as StudyDefinition
from worker.studies.extraction_section import ExtractionSection
from worker.studies.probability_section import Question, questions_for

__all__ = [
    "JOBS_DIR",
    "RequestsPerRow",
    "StudyBundle",
    "StudyFile",
    "StudySampling",
    "has_probability_questions",
    "input_pod_path",
    "load_study_bundle",
    "requests_per_row",
    "schema_pod_path",
    "study_name",
    "study_pod_path",
    "study_rows",
    "study_sampling",
]

JOBS_DIR = Path(__file__).resolve().parents[2] / "jobs"
STUDIES_SUBDIR = contract.STUDIES_SUBDIR  # where the worker looks for `--study NAME`
SCHEMAS_SUBDIR = "schemas"
INPUTS_SUBDIR = "inputs"
TASKS_SUBDIR = "tasks"
STUDIES_ROOT = PurePosixPath(contract.STUDIES_MOUNT)

# Requests one row costs when the study file does not say (the study authors' design):
# exp1 one chat completion per row; exp2 one request per probability question (study1: four
# state questions + the knowledge question; study2: frame, assessment and the joint utterance);
# extraction one request per exp1 row, before re-asks.
DEFAULT_REQUESTS_PER_ROW: dict[Study, dict[Experiment, int]] = {
    Study.STUDY1: {Experiment.EXP1: 1, Experiment.EXP2: 5, Experiment.EXTRACTION: 1},
    Study.STUDY2: {Experiment.EXP1: 1, Experiment.EXP2: 3, Experiment.EXTRACTION: 1},
}


def study_pod_path(design: Design, study: Study) -> PurePosixPath:
    return STUDIES_ROOT / STUDIES_SUBDIR / design.value / f"{study}.yaml"


def schema_pod_path(design: Design, study: Study) -> PurePosixPath:
    return STUDIES_ROOT / SCHEMAS_SUBDIR / design.value / f"{study}_schema.json"


def study_name(design: Design, study: Study) -> str:
    """How the worker's `--study` names a design's study when the ConfigMap does not ship its file."""
    return f"{design.value}/{study.value}"


def input_pod_path(study: Study, config: GraceConfig) -> PurePosixPath:
    """Where a Job reads the study CSV: the ConfigMap for a local inputFiles CSV, else the input PVC."""
    if study in config.experiments.input_files:
        return STUDIES_ROOT / INPUTS_SUBDIR / f"{study}.csv"
    return PurePosixPath(c.INPUT_MOUNT) / f"{study}.csv"


def configmap_key(pod_path: PurePosixPath) -> str:
    """ConfigMap keys may not contain `/`: `studies/chat/study1.yaml` becomes `studies.chat.study1.yaml`."""
    return ".".join(pod_path.relative_to(STUDIES_ROOT).parts)


@dataclass(frozen=True)
class StudyFile:
    """One `jobs/studies/<study>.yaml` as the worker reads it, validated by the worker's own models.

    Equal (and hashed) by its path and text alone, so what is measured on it can be cached on it.
    """

    path: str  # as the user names it: "jobs/studies/researchers/study1.yaml"
    text: str
    definition: StudyDefinition = field(compare=False)
    extraction: ExtractionSection | None = field(compare=False)  # None: the file has no extraction section
    # Experiment 2's questions the file lists, expanded (one per `expand` value); () when it lists none.
    questions: tuple[Question, ...] = field(compare=False)


@dataclass(frozen=True)
class StudyBundle:
    """Every file the Jobs read under /etc/grace, by the path the pod sees, with its text."""

    files: Mapping[PurePosixPath, str] = field(default_factory=dict)
    study_files: Mapping[tuple[Design, Study], StudyFile] = field(default_factory=dict)
    input_rows: Mapping[Study, int] = field(default_factory=dict)  # rows of local inputFiles CSVs

    def has(self, pod_path: PurePosixPath) -> bool:
        return pod_path in self.files

    def study_file(self, design: Design, study: Study) -> StudyFile | None:
        """The design's file for the study, or None when jobs/ has none."""
        return self.study_files.get((design, study))

    def with_files(self, extra: Mapping[PurePosixPath, str]) -> StudyBundle:
        return StudyBundle({**self.files, **extra}, self.study_files, self.input_rows)

    def digest(self, pod_paths: Iterable[PurePosixPath]) -> str:
        """SHA-256 over the named files (path and content) that exist: what one Job reads."""
        digest = hashlib.sha256()
        for path in sorted(set(pod_paths)):
            if path in self.files:
                digest.update(f"{path}\0{len(self.files[path])}\0".encode())
                digest.update(self.files[path].encode())
        return digest.hexdigest()

    def configmap_items(self, pod_paths: Iterable[PurePosixPath]) -> list[tuple[str, str]]:
        """(ConfigMap key, path under /etc/grace) of the named files that exist, for a volume's `items`:
        the pod sees jobs/'s layout, and only the files whose hash its template carries."""
        wanted = sorted(set(pod_paths) & set(self.files))
        return [(configmap_key(path), str(path.relative_to(STUDIES_ROOT))) for path in wanted]

    def configmap_data(self) -> dict[str, str]:
        return {configmap_key(path): text for path, text in sorted(self.files.items())}

    def size_bytes(self) -> int:
        return sum(len(k.encode()) + len(v.encode()) for k, v in self.configmap_data().items())


def _read_text(path: Path, key: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not UTF-8 text, so it cannot ship in a ConfigMap.") from None
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path} ({exc.strerror}).") from None


def _count_csv_rows(text: str, key: str) -> int:
    # csv, not line counting: the study texts hold quoted commas and could hold quoted newlines.
    try:
        rows = list(csv.reader(text.splitlines(keepends=True)))
    except csv.Error as exc:
        raise ConfigError(f"{key} is not a readable CSV ({exc}).") from None
    return max(len([r for r in rows if any(cell.strip() for cell in r)]) - 1, 0)


def load_study_bundle(
    config: GraceConfig, *, jobs_dir: Path = JOBS_DIR, project_root: Path | None = None
) -> StudyBundle:
    """Read the study files of the configured studies in every design the matrix runs, their schemas and
    any local input CSVs.

    Raises ConfigError (naming the file or key) for an unreadable file, a study file the worker would
    refuse, a local CSV that is not UTF-8, or a bundle over the ConfigMap size limit.
    """
    root = project_root or jobs_dir.parent
    files: dict[PurePosixPath, str] = {}
    study_files: dict[tuple[Design, Study], StudyFile] = {}
    input_rows: dict[Study, int] = {}
    for design in config.designs():
        for study in config.experiments.studies:
            where = f"jobs/{STUDIES_SUBDIR}/{design}/{study}.yaml"
            study_file = jobs_dir / STUDIES_SUBDIR / design.value / f"{study}.yaml"
            if study_file.is_file():
                text = _read_text(study_file, where)
                files[study_pod_path(design, study)] = text
                study_files[design, study] = _read_study_file(where, text)
            schema_file = jobs_dir / SCHEMAS_SUBDIR / design.value / f"{study}_schema.json"
            if schema_file.is_file():
                schema_key = f"jobs/{SCHEMAS_SUBDIR}/{design}/{schema_file.name}"
                files[schema_pod_path(design, study)] = _read_text(schema_file, schema_key)
    for study, local in config.experiments.input_files.items():
        key = f"grace:experiments.inputFiles.{study}={local!r}"
        path = Path(local) if Path(local).is_absolute() else root / local
        if not path.is_file():
            raise ConfigError(
                f"{key} does not name an existing file; put the study CSV there (paths are relative "
                f"to the project root), or remove the key to read {c.INPUT_MOUNT}/{study}.csv from the "
                "input claim (docs/lifecycle.md)."
            )
        files[input_pod_path(study, config)] = _read_text(path, key)
    size = StudyBundle(files).size_bytes()
    budget = c.CONFIGMAP_MAX_BYTES - c.CONFIGMAP_METADATA_RESERVE_BYTES
    if size > budget:
        raise ConfigError(
            f"grace:experiments.inputFiles: the studies ConfigMap would hold {size:,} bytes, over the "
            f"{budget:,}-byte limit; upload the larger CSVs to the input PVC instead (jobs/README.md)."
        )
    for study, local in config.experiments.input_files.items():
        key = f"grace:experiments.inputFiles.{study}={local!r}"
        input_rows[study] = _count_csv_rows(files[input_pod_path(study, config)], key)
    return StudyBundle(files, study_files, input_rows)


def _read_study_file(where: str, text: str) -> StudyFile:
    """The study file through the worker's models; ConfigError naming the file and key otherwise."""
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML ({exc.__class__.__name__}).") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{where} must be a YAML mapping.")
    try:
        definition = StudyDefinition.model_validate(loaded)
    except ValidationError as err:
        problem = validation_problem(err)
        raise ConfigError(f"{where}: {problem.key or '(top level)'}: {problem.sentence}") from None
    try:
        extraction = (
            ExtractionSection.model_validate(definition.extraction) if definition.extraction else None
        )
    except ValidationError as err:
        problem = validation_problem(err)
        key = problem.key
        raise ConfigError(f"{where}: extraction{'.' if key else ''}{key}: {problem.sentence}") from None
    # The questions `worker probs` asks without --tokens; a section the worker would refuse is refused
    # here, before anything is deployed, with the worker's own sentence.
    try:
        questions = questions_for(definition, None) if definition.probability is not None else ()
    except InputError as err:
        raise ConfigError(f"{where}: {err}") from None
    return StudyFile(where, text, definition, extraction, tuple(questions))


@dataclass(frozen=True)
class RequestsPerRow:
    """Requests one input row costs in each experiment, and where each number came from."""

    counts: Mapping[Experiment, int]
    source: str  # "jobs/studies/researchers/study1.yaml" or "default"


def has_probability_questions(design: Design, study: Study, bundle: StudyBundle) -> bool:
    """Whether the study file lists its own exp2 questions (else `probs --tokens` asks a generic one)."""
    study_file = bundle.study_file(design, study)
    return study_file is not None and bool(study_file.questions)


def requests_per_row(design: Design, study: Study, bundle: StudyBundle) -> RequestsPerRow:
    """Requests per row per experiment: exp1 one chat completion per turn of the study's conversation
    (one for a one-question prompt), or one completion per request of the completion form; exp2 one
    request per probability question the study file lists
    (the study authors' design when it lists none yet; the `continuation` method scores all options of a
    question in that one request); extraction one request per exp1 row, before re-asks."""
    counts = dict(DEFAULT_REQUESTS_PER_ROW[study])
    source = "default"
    study_file = bundle.study_file(design, study)
    if study_file is None:
        return RequestsPerRow(counts, source)
    prompt = study_file.definition.prompt
    if prompt.turns is not None or prompt.requests is not None:
        counts[Experiment.EXP1] = len(prompt.conversation)
        source = study_file.path
    if study_file.questions:
        counts[Experiment.EXP2] = len(study_file.questions)
        source = study_file.path
    return RequestsPerRow(counts, source)


def study_max_tokens(design: Design, study: Study, experiment: Experiment, bundle: StudyBundle) -> int | None:
    """The completion budget the study file sets for exp1 (`generation`) or extraction
    (`extraction.generation`), or None when the file does not set one."""
    study_file = bundle.study_file(design, study)
    if study_file is None:
        return None
    section = study_file.extraction if experiment is Experiment.EXTRACTION else study_file.definition
    if section is None or "generation" not in section.model_fields_set:
        return None
    generation: GenerationParams = section.generation
    return generation.max_tokens if "max_tokens" in generation.model_fields_set else None


def study_rows(study: Study, config: GraceConfig, bundle: StudyBundle) -> tuple[int, str]:
    """Rows of a study's CSV and where the number came from (local file, config, or published count)."""
    if study in bundle.input_rows:
        return bundle.input_rows[study], config.experiments.input_files[study]
    if study in config.plan.study_rows:
        return config.plan.study_rows[study], "grace:plan.studyRows"
    return c.PUBLISHED_STUDY_ROWS[study.value], "published"


@dataclass(frozen=True)
class StudySampling:
    """How Experiment 1 samples a study in this stack: the study file's settings, then the stack's."""

    temperature: float
    samples_per_row: int
    base_seed: int
    source: str  # "jobs/studies/researchers/study1.yaml", "grace:jobs.sampling" or "default"

    def worker_flags(self) -> list[str]:
        """The worker's `--temperature`, `--samples`, `--seed`, explicit on every exp1 command line."""
        return [
            "--temperature", f"{self.temperature:g}",
            "--samples", str(self.samples_per_row),
            "--seed", str(self.base_seed),
        ]  # fmt: skip


def study_sampling(design: Design, study: Study, config: GraceConfig, bundle: StudyBundle) -> StudySampling:
    """The sampling settings Experiment 1 runs with: `grace:jobs.sampling` over the study file's."""
    study_file = bundle.study_file(design, study)
    settings = study_file.definition.sampling if study_file is not None else SamplingSettings()
    source = "default"
    if study_file is not None and "sampling" in study_file.definition.model_fields_set:
        source = study_file.path
    overrides = config.jobs.sampling.model_dump(exclude_none=True)
    if overrides:
        settings = settings.model_copy(update=overrides)
        source = f"{source} + grace:jobs.sampling"
    return StudySampling(
        temperature=float(settings.temperature),
        samples_per_row=settings.samples_per_row,
        base_seed=settings.base_seed,
        source=source,
    )
