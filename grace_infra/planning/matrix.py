"""The experiment matrix as a list of planned Jobs: names, paths and worker command lines, no resources.

Every cell is (study, experiment, model). A `persistent` model gets one Job per cell, talking to the
model's Service. A `job`-mode model gets ONE Job (`matrix-<model>`) that runs its exp1 and exp2 cells in
order with `worker run --tasks` against a vLLM sidecar on localhost and then exits, releasing the GPUs.

Extraction has ONE coder for every model's replies, so coding quality is never confounded with the
model under study: the external endpoint when one is set, otherwise the stack's extractor
(`grace:jobs.extractor`). With a persistently served extractor each (study, model) extraction is a Job
of its own, talking to the extractor's Service, that waits in the cluster for the exp1 file it reads (the
worker writes that file atomically) and for the extractor's /health. A job-mode server lives only inside
its own matrix Job, so a job-mode extractor codes EVERY model's replies at the end of that Job, on its
sidecar, after its own exp1 and exp2, each task waiting for its exp1 file: the weights are loaded once
and no GPU waits in a second pod.

These functions are pure so tests and the GPU-hour plan call them without building anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

from grace_infra import constants as c
from grace_infra.config.catalog import Exp2ReasoningMode, ModelSpec, ServingMode
from grace_infra.config.stack_config import Design, Experiment, GraceConfig, ServedModel, Study
from grace_infra.planning import run_digest
from grace_infra.planning.study_bundle import (
    STUDIES_ROOT,
    TASKS_SUBDIR,
    StudyBundle,
    has_probability_questions,
    input_pod_path,
    load_study_bundle,
    schema_pod_path,
    study_max_tokens,
    study_name,
    study_pod_path,
    study_sampling,
)
from worker import contract

__all__ = [
    "JobKind",
    "MatrixCell",
    "PlannedJob",
    "extraction_job_name",
    "format_matrix_table",
    "gate_job_name",
    "input_wait_s",
    "job_name",
    "matrix_cells",
    "matrix_json",
    "model_endpoint",
    "output_path",
    "plan_experiments",
    "plan_jobs",
    "reasons_in_studies",
    "server_url",
    "task_files",
    "tasks_pod_path",
    "worker_args",
]

# Output file name per experiment, as in the researchers' original manifests:
# /output/<experiment>/<model>/<study>_<suffix>.csv
_OUTPUT_SUFFIX = {
    Experiment.EXP1: "responses",
    Experiment.EXP2: "probabilities",
    Experiment.EXTRACTION: "structured",
}
_WORKER_COMMAND = {Experiment.EXP1: "query", Experiment.EXP2: "probs", Experiment.EXTRACTION: "extract"}
PROBS_METHOD = "auto"  # the worker picks first-token only where it is exact


def server_url(model: ServedModel) -> str:
    """Where a persistent model's Service answers inside the namespace (the worker's --model-endpoint)."""
    return f"http://{model.server_name}:{c.VLLM_PORT}/v1"


class JobKind(StrEnum):
    """Which service account and labels a Job gets."""

    QUERY = "query"  # exp1/exp2 and job-mode matrix Jobs: talk to a model server only
    EXTRACTION = "extraction"  # extraction Jobs: may talk to an external endpoint with an API key
    GATE = "gate"  # the CPU gate: reads the output claim, may patch exactly one Job (its suspended one)


@dataclass(frozen=True)
class MatrixCell:
    study: Study
    experiment: Experiment
    model: ServedModel

    @property
    def name(self) -> str:
        return job_name(self.study, self.experiment, self.model.key)


@dataclass(frozen=True)
class PlannedJob:
    """One Kubernetes Job to build: what it runs, in which order, and after which other Jobs."""

    name: str
    kind: JobKind
    model: ServedModel
    cells: tuple[MatrixCell, ...]  # in execution order
    args: tuple[str, ...]  # the container's args after the `python -m worker` entry point
    runs_after: tuple[str, ...]  # names of Jobs Pulumi creates first (ordering only; never awaited)
    reads: tuple[PurePosixPath, ...]  # files under /etc/grace the pod reads (their hash is on the pod)
    sidecar: bool  # job serving mode: the model's vLLM runs as a native sidecar in this pod
    external_endpoint: bool = False  # talks HTTPS to the external extraction endpoint with an API key
    coder: str | None = None  # extraction Jobs: the model that codes the replies (extractor key or external)
    tasks: tuple[tuple[str, ...], ...] = ()  # job mode: the argv lists of `worker run --tasks`
    suspended: bool = False  # created with spec.suspend: true; only the CPU gate Job resumes it
    resumes: str | None = None  # a CPU gate Job: the suspended Job it resumes once its inputs are complete
    resumes_after: tuple[str, ...] = ()  # a CPU gate Job: Jobs that must finish first (same weights claim)

    @property
    def gpu(self) -> bool:
        """Whether the Job's pod holds GPUs: a job-mode Job's sidecar serves the model in it."""
        return self.sidecar

    @property
    def studies(self) -> tuple[Study, ...]:
        return tuple(dict.fromkeys(cell.study for cell in self.cells))

    @property
    def experiments(self) -> tuple[Experiment, ...]:
        return tuple(dict.fromkeys(cell.experiment for cell in self.cells))


def job_name(study: Study, experiment: Experiment, model_key: str) -> str:
    """The researchers' original Job names: `study1-exp1-<model>`, `study1-exp2-<model>`,
    `structured-output-study1-<model>`."""
    if experiment is Experiment.EXTRACTION:
        return f"structured-output-{study}-{model_key}"
    return f"{study}-{experiment}-{model_key}"


def job_mode_job_name(model_key: str) -> str:
    return f"{c.JOB_MODE_JOB_PREFIX}{model_key}"


def output_path(study: Study, experiment: Experiment, model_key: str) -> PurePosixPath:
    """`/output/exp1/<model>/study1_responses.csv` and its exp2/structured siblings."""
    file_name = f"{study}_{_OUTPUT_SUFFIX[experiment]}.csv"
    return PurePosixPath(c.OUTPUT_MOUNT) / experiment.value / model_key / file_name


def extraction_job_name(coder_key: str) -> str:
    return f"{c.EXTRACTION_JOB_PREFIX}{coder_key}"


def gate_job_name(suspended_job: str) -> str:
    return f"{c.GATE_JOB_PREFIX}{suspended_job}"


def tasks_pod_path(job: str) -> PurePosixPath:
    """The `worker run --tasks` list of a job-mode Job, by Job name."""
    return STUDIES_ROOT / TASKS_SUBDIR / f"{job}.json"


def model_endpoint(model: ServedModel) -> str:
    """The model's Service in persistent mode; the sidecar on localhost in job mode."""
    if model.serving_mode is ServingMode.JOB:
        return f"http://localhost:{c.VLLM_PORT}/v1"
    return server_url(model)


def matrix_cells(config: GraceConfig) -> list[MatrixCell]:
    """Every configured (study, experiment, model) cell, study-major as the researchers' original
    manifests list their Jobs."""
    return [
        MatrixCell(study, experiment, model)
        for study in config.experiments.studies
        for experiment in config.experiments.experiments
        for model in config.matrix_models()
    ]


def _study_arg(design: Design, study: Study, bundle: StudyBundle) -> str:
    # The ConfigMap copy when the study file exists; otherwise the worker's own lookup by name.
    path = study_pod_path(design, study)
    return str(path) if bundle.has(path) else study_name(design, study)


def coder_name(config: GraceConfig) -> str | None:
    """The one model that codes every model's replies: the external endpoint's or the extractor's key."""
    if config.jobs.deepseek_endpoint is not None:
        return config.jobs.deepseek_model
    extractor = config.extractor_model()
    return extractor.key if extractor is not None else None


def _endpoint_flags(cell: MatrixCell, config: GraceConfig) -> list[str]:
    external = config.jobs.deepseek_endpoint
    if cell.experiment is not Experiment.EXTRACTION:
        return ["--model-endpoint", model_endpoint(cell.model), "--model-name", cell.model.key]
    if external is not None:
        # The worker's DeepSeek mode: json_object responses and the key from the Secret-backed env var.
        return [
            "--deepseek-endpoint", external,
            "--model-name", config.jobs.deepseek_model,
            "--api-key-env", contract.DEEPSEEK_API_KEY_ENV,
        ]  # fmt: skip
    # One self-hosted coder for every model: the extractor's server (schema-constrained decoding).
    extractor = _extractor(config)
    return ["--model-endpoint", model_endpoint(extractor), "--model-name", extractor.key]


def extracts_on_sidecar(model: ServedModel, config: GraceConfig) -> bool:
    """A job-mode model that is the stack's extractor codes every model's replies on a sidecar of its own,
    in the suspended `extraction-<coder>` Job."""
    extractor = config.extractor_model()
    return model.serving_mode is ServingMode.JOB and extractor is not None and extractor.key == model.key


def _extractor(config: GraceConfig) -> ServedModel:
    extractor = config.extractor_model()
    if extractor is None:  # config/stack_config.py refuses such a stack; reaching here is a bug
        raise AssertionError("extraction planned with neither an external endpoint nor an extractor")
    return extractor


def input_wait_s(config: GraceConfig) -> int:
    """extract's --wait-for-input. A job-mode coder's extraction Job is resumed by its gate only once every
    input is complete, so its worker checks the file and its digest and waits at most GATED_INPUT_WAIT_S;
    a CPU extraction Job (a persistent or external coder) waits for its exp1 file itself."""
    extractor = config.extractor_model()
    if extractor is not None and extracts_on_sidecar(extractor, config):
        return c.GATED_INPUT_WAIT_S
    return config.jobs.input_wait_timeout_s


def worker_args(cell: MatrixCell, config: GraceConfig, bundle: StudyBundle) -> list[str]:
    """The worker command line for one cell: the researchers' original flags plus the study file and the
    waits."""
    jobs = config.jobs
    study, experiment, key = cell.study, cell.experiment, cell.model.key
    # Extraction reads the studied model's replies, so it codes them with that model's design's file.
    design = cell.model.design
    researchers = design is Design.RESEARCHERS
    extracting = experiment is Experiment.EXTRACTION
    source = output_path(study, Experiment.EXP1, key) if extracting else input_pod_path(study, config)
    args = [
        _WORKER_COMMAND[experiment],
        "--input", str(source),
        "--output", str(output_path(study, experiment, key)),
        *_endpoint_flags(cell, config),
        "--batch-size", str(jobs.batch_size),
        "--timeout", str(jobs.timeout_s),
        "--max-retries", str(jobs.max_retries),
        "--study", _study_arg(design, study, bundle),
        # A server may take its whole load budget to answer /health; never give up before that.
        "--wait-timeout", str(max(jobs.wait_timeout_s, cell.model.load_budget_s)),
        "--metrics-port", str(contract.METRICS_PORT),
    ]  # fmt: skip
    samples = experiment is Experiment.EXP2 and samples_exp2(cell.model)
    if experiment is Experiment.EXP1 or samples:
        args += study_sampling(design, study, config, bundle).worker_flags()
    if experiment is Experiment.EXP2 and not researchers:
        args += ["--logprobs", str(jobs.logprobs), "--method", PROBS_METHOD]
        if not has_probability_questions(design, study, bundle):
            # The generic question a Job drafted in the researchers' plans asks; a study that lists its
            # own questions is asked those instead (--tokens would replace them with one generic question).
            args += ["--tokens", ",".join(jobs.tokens)]
        args += _exp2_reasoning_flags(cell.model)
    # The researchers' design sends their request body: their per-family stop strings, and no reasoning
    # effort or extra room for reasoning (a raw completion renders no harmony system message; their
    # max_tokens is kept as they set it, docs/studies.md). Exp2 is their scoring rule, which no flag changes.
    if experiment is Experiment.EXP1 and researchers and cell.model.stop:
        args += ["--stop", json.dumps(list(cell.model.stop))]
    if experiment is Experiment.EXP1 and not researchers and cell.model.reasoning_effort is not None:
        args += ["--reasoning-effort", cell.model.reasoning_effort.value]
    budget = study_max_tokens(design, study, experiment, bundle)
    generating = None
    if experiment is Experiment.EXP1 and not researchers:
        generating = cell.model
    elif extracting and config.jobs.deepseek_endpoint is None:
        generating = _extractor(config)
    if generating is not None and generating.reasoning_tokens and budget is not None:
        # A reasoning model (gpt-oss) writes its analysis channel first, inside the same max_tokens:
        # without the extra room the study's short budget ends before the answer starts.
        args += ["--max-tokens", str(budget + generating.reasoning_tokens)]
    if extracting:
        if bundle.has(schema_pod_path(design, study)):
            args += ["--schema", str(schema_pod_path(design, study))]
        # Exp1 writes its file atomically when complete: waiting for it is waiting for exp1 to finish.
        args += ["--validate", "--wait-for-input", str(input_wait_s(config))]
        if Experiment.EXP1 in config.experiments.experiments:
            # ...and for the exp1 run planned beside this one, not an older experiment's file.
            args += ["--wait-for-digest", cell_plan_digest(MatrixCell(study, Experiment.EXP1, cell.model),
                                                           config, bundle)]  # fmt: skip
    # A changed experiment moves the previous run's files aside and runs (worker/run/supersede.py).
    args += [
        "--supersede",
        "--plan-digest",
        run_digest.plan_digest(args, bundle.digest(_reads((cell,), config))),
    ]
    return args


def reasons_in_studies(model: ServedModel) -> bool:
    """Whether the model reasons before it answers the studies' requests: a reasoning model (gpt-oss) in
    the chat design, whose template opens its analysis channel. The researchers' design sends gpt-oss the
    raw prompt with their max_tokens, as for every model (their gpt-oss entries, model_config.py:81-102 at
    e41db28, are placeholders with is_reasoning_model=False): whatever it writes, that budget bounds it,
    so the plan counts the budget and no reasoning room on top."""
    return model.reasoning_format is not None and model.design is Design.CHAT


def samples_exp2(model: ServedModel) -> bool:
    """Whether Experiment 2 samples on this model: only after-reasoning generates anything (the analysis
    channel, like an Experiment 1 answer); scoring fixed options after a fixed prompt is deterministic, so
    every other exp2 run is one sample per row and gets no sampling flags."""
    after_reasoning = model.exp2_reasoning_mode is Exp2ReasoningMode.AFTER_REASONING
    return reasons_in_studies(model) and after_reasoning


def cell_plan_digest(cell: MatrixCell, config: GraceConfig, bundle: StudyBundle) -> str:
    """The plan digest the cell's worker records in its meta file (grace_infra/planning/run_digest.py)."""
    args = worker_args(cell, config, bundle)
    return args[args.index("--plan-digest") + 1]


def _exp2_reasoning_flags(model: ModelSpec) -> list[str]:
    """Where experiment 2 reads the answer of a reasoning model, and with how much reasoning."""
    if model.reasoning_format is None:
        # Not a reasoning model; an answer prefix (if any) is appended after the generation prompt.
        return ["--answer-prefix", model.answer_prefix] if model.answer_prefix else []
    flags = [
        "--reasoning-format", model.reasoning_format,
        "--reasoning-mode", model.exp2_reasoning_mode.value,
    ]  # fmt: skip
    if model.exp2_reasoning_mode is Exp2ReasoningMode.AFTER_REASONING and model.reasoning_tokens:
        flags += ["--reasoning-max-tokens", str(model.reasoning_tokens)]
    elif model.answer_prefix:
        # direct: read the probability at the final-channel answer, not at the first reasoning token.
        flags += ["--answer-prefix", model.answer_prefix]
    if model.reasoning_effort is not None:
        flags += ["--reasoning-effort", model.reasoning_effort.value]
    return flags


def _reads(cells: tuple[MatrixCell, ...], config: GraceConfig) -> tuple[PurePosixPath, ...]:
    paths: list[PurePosixPath] = []
    for cell in cells:
        paths.append(study_pod_path(cell.model.design, cell.study))
        if cell.experiment is Experiment.EXTRACTION:
            paths.append(schema_pod_path(cell.model.design, cell.study))
        else:
            paths.append(input_pod_path(cell.study, config))
    return tuple(dict.fromkeys(paths))


def _job_mode_order(model: ServedModel, cells: list[MatrixCell], coder_here: bool) -> list[MatrixCell]:
    # The model's own exp1 first, then its exp2 (stable: studies keep config order); when it is the one
    # coder, then the extraction of its OWN replies, written earlier in the same pod. Extraction of other
    # models' replies never runs here: it reads other Jobs' outputs (see the module docstring).
    rank = {Experiment.EXP1: 0, Experiment.EXP2: 1}
    own = [c for c in cells if c.model.key == model.key and c.experiment is not Experiment.EXTRACTION]
    ordered = sorted(own, key=lambda cell: rank[cell.experiment])
    if coder_here and any(c.experiment is Experiment.EXP1 for c in own):
        ordered += [c for c in cells if c.model.key == model.key and c.experiment is Experiment.EXTRACTION]
    return ordered


def _sidecar_job(  # noqa: PLR0917 (what a job-mode Job is made of, each named at the call)
    name: str,
    kind: JobKind,
    model: ServedModel,
    ordered: tuple[MatrixCell, ...],
    config: GraceConfig,
    bundle: StudyBundle,
    *,
    suspended: bool = False,
) -> PlannedJob:
    """A job-mode Job: `worker run --tasks` over `ordered` against `model`'s sidecar."""
    tasks_path = tasks_pod_path(name)
    return PlannedJob(
        name=name,
        kind=kind,
        model=model,
        cells=ordered,
        args=(contract.RUN_COMMAND, "--tasks", str(tasks_path)),
        runs_after=(),
        reads=(*_reads(ordered, config), tasks_path),
        sidecar=True,
        coder=model.key if kind is JobKind.EXTRACTION else None,
        tasks=tuple(tuple(worker_args(cell, config, bundle)) for cell in ordered),
        suspended=suspended,
    )


def _gate_job(suspended: PlannedJob, config: GraceConfig, sharing: tuple[str, ...]) -> PlannedJob:
    """The CPU Job that resumes `suspended` once every input its tasks read is complete (the worker's own
    check, over the same task list), waiting at most the whole campaign, and once the Jobs in `sharing`
    (which mount the same ReadWriteOnce weights claim) have finished."""
    tasks_path = tasks_pod_path(suspended.name)
    timeout_s = round(config.plan.campaign_days * c.HOURS_PER_DAY * c.SECONDS_PER_HOUR)
    return PlannedJob(
        name=gate_job_name(suspended.name),
        kind=JobKind.GATE,
        model=suspended.model,
        cells=(),  # it writes nothing: the outputs are the suspended Job's
        args=(contract.WAIT_FOR_INPUTS_COMMAND, "--tasks", str(tasks_path), "--timeout", str(timeout_s)),
        runs_after=(suspended.name,),
        reads=(*_reads(suspended.cells, config), tasks_path),
        sidecar=False,
        resumes=suspended.name,
        resumes_after=sharing,
    )


def plan_jobs(config: GraceConfig, bundle: StudyBundle) -> list[PlannedJob]:
    """Every Job of the matrix, in an order where each Job comes after the Jobs it runs after."""
    cells = matrix_cells(config)
    external = config.jobs.deepseek_endpoint is not None
    coder = coder_name(config)
    planned: list[PlannedJob] = []
    exp1_job_of: dict[tuple[Study, str], str] = {}  # (study, model) -> Job that writes its exp1 file

    for model in config.matrix_models():
        if model.serving_mode is not ServingMode.JOB:
            continue
        ordered = tuple(_job_mode_order(model, cells, extracts_on_sidecar(model, config)))
        if not ordered:
            continue
        job = _sidecar_job(job_mode_job_name(model.key), JobKind.QUERY, model, ordered, config, bundle)
        planned.append(job)
        for cell in ordered:
            if cell.experiment is Experiment.EXP1:
                exp1_job_of[(cell.study, model.key)] = job.name

    extractor = config.extractor_model()
    coder_on_sidecar = extractor is not None and extracts_on_sidecar(extractor, config)
    in_matrix_jobs = {cell.name for job in planned for cell in job.cells}
    extraction = [
        cell for cell in cells if cell.experiment is Experiment.EXTRACTION and cell.name not in in_matrix_jobs
    ]
    if coder_on_sidecar and extraction and extractor is not None:
        ordered = tuple(extraction)
        name = extraction_job_name(extractor.key)
        suspended = _sidecar_job(name, JobKind.EXTRACTION, extractor, ordered, config, bundle, suspended=True)
        sharing = tuple(job.name for job in planned if job.gpu and job.model.key == extractor.key)
        planned += [suspended, _gate_job(suspended, config, sharing)]

    def own_job(cell: MatrixCell) -> bool:
        # Extraction runs in the suspended extraction Job when the coder is a job-mode model; otherwise
        # each is a CPU Job of its own talking to the coder. Job mode keeps exp1/exp2 in the matrix Job.
        if cell.experiment is Experiment.EXTRACTION:
            return not coder_on_sidecar
        return cell.model.serving_mode is not ServingMode.JOB

    separate = [cell for cell in cells if own_job(cell)]
    for cell in separate:
        if cell.experiment is Experiment.EXP1:
            exp1_job_of[(cell.study, cell.model.key)] = cell.name
    # Writers first, so each extraction Job can name the Job it runs after.
    separate.sort(key=lambda cell: cell.experiment is Experiment.EXTRACTION)
    for cell in separate:
        is_extraction = cell.experiment is Experiment.EXTRACTION
        after = exp1_job_of.get((cell.study, cell.model.key)) if is_extraction else None
        planned.append(
            PlannedJob(
                name=cell.name,
                kind=JobKind.EXTRACTION if is_extraction else JobKind.QUERY,
                model=cell.model,
                cells=(cell,),
                args=tuple(worker_args(cell, config, bundle)),
                runs_after=(after,) if after else (),
                reads=_reads((cell,), config),
                sidecar=False,
                external_endpoint=is_extraction and external,
                coder=coder if is_extraction else None,
            )
        )
    return planned


def task_files(jobs: list[PlannedJob]) -> dict[PurePosixPath, str]:
    """The `worker run --tasks` files of the job-mode Jobs, for the studies ConfigMap."""
    # One task per line: the ConfigMap diff then shows which step of a model's share changed.
    return {
        tasks_pod_path(job.name): "[\n" + ",\n".join(json.dumps(list(t)) for t in job.tasks) + "\n]\n"
        for job in jobs
        if job.sidecar
    }


def matrix_json(jobs: list[PlannedJob]) -> list[dict[str, Any]]:
    """plan.json's `matrix`: every Job, what it runs, what it writes and what it is created after."""
    return [
        {
            "job": job.name,
            "kind": job.kind.value,
            "model": job.model.key,
            "servingMode": job.model.serving_mode.value,
            "cells": [f"{cell.study}/{cell.experiment}" for cell in job.cells],
            "outputs": [str(output_path(cell.study, cell.experiment, cell.model.key)) for cell in job.cells],
            "runsAfter": list(job.runs_after),
            "sidecar": job.sidecar,
            **({"coder": job.coder} if job.coder else {}),
            **({"suspended": True} if job.suspended else {}),
            **({"resumes": job.resumes} if job.resumes else {}),
        }
        for job in jobs
    ]


def _cells_summary(cells: list[str]) -> str:
    """`study1/exp1` for one cell; `study1+study2 / exp1+exp2+structured` for a job-mode Job."""
    if len(cells) == 1:
        return cells[0]
    studies = dict.fromkeys(cell.split("/")[0] for cell in cells)
    experiments = dict.fromkeys(cell.split("/")[1] for cell in cells)
    return f"{'+'.join(studies)} / {'+'.join(experiments)}"


def format_matrix_table(matrix: list[dict[str, Any]]) -> str:
    """plan.json's `matrix` as a table for stdout: one line per Job."""
    rows = [
        (
            m["job"],
            m["model"],
            "cpu gate" if m.get("resumes") else m["servingMode"],
            f"resumes {m['resumes']} when its inputs are complete"
            if m.get("resumes")
            else _cells_summary(m["cells"]) + (" (created suspended)" if m.get("suspended") else ""),
            ", ".join(m["runsAfter"]) or "-",
        )
        for m in matrix
    ]
    headers = ("job", "model", "mode", "runs", "created after")
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"{len(rows)} Jobs; pulumi up awaits only their creation (pulumi.com/waitFor).")
    return "\n".join(lines)


def plan_experiments(
    config: GraceConfig, bundle: StudyBundle | None = None
) -> tuple[StudyBundle, list[PlannedJob]]:
    """The planned Jobs and the full ConfigMap content (study files plus job-mode task lists)."""
    base = bundle or load_study_bundle(config)
    planned = plan_jobs(config, base)
    return base.with_files(task_files(planned)), planned
