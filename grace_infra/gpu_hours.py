"""The GPU-hour plan: what the configured matrix costs in `persistent` vs `job` serving, before any
GPU is requested.

For each matrix model:
    requests     = sum over studies of rows x (exp1 requests per row x samples per row + exp2 requests per
                   row) (studies.requests_per_row, studies.study_sampling: exp2 scores, it does not sample,
                   except after-reasoning on a reasoning model, which generates its analysis: x samples);
                   extraction, one request per exp1 output row (every sample) of EVERY matrix model, is
                   counted on the one self-hosted extractor (on no GPU of ours with an external endpoint);
                   an upper bound, since replies in the study's format are coded by the parser instead
    busy hours   = requests / throughput_rps / 3600            (the model's catalog assumption)
    job          = GPUs x (load_budget_s / 3600 + busy hours)  (one load per matrix Job; GPUs freed after)
    persistent   = GPUs x max(campaign_days x 24, load + busy)  (the server stays up all campaign)
    idle         = persistent - GPUs x busy hours               (GPU-hours doing no matrix work)

The load budget is an upper bound on load time and throughput a planning assumption, so both columns
are estimates; the point is the ratio, which is what NRP's idle-GPU rule (under 40 % use counts
against the user) and two-week limit care about.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from grace_infra import constants as c
from grace_infra.catalog import ServingMode
from grace_infra.config import Experiment, GraceConfig, ServedModel
from grace_infra.matrix import PlannedJob, samples_exp2
from grace_infra.studies import StudyBundle, requests_per_row, study_rows, study_sampling

__all__ = ["GpuHourPlan", "ModelGpuHours", "format_gpu_hour_table", "gpu_hour_plan", "job_deadline_s"]


@dataclass(frozen=True)
class ModelGpuHours:
    """One model's share of the matrix and what it costs. Hours are GPU-hours unless named wall."""

    model: str
    serving_mode: str
    gpus: int
    requests: int  # requests this model's GPUs serve
    requests_by_experiment: dict[str, int]
    throughput_rps: float  # assumed requests/s of one server on this workload
    load_s: int  # load budget: weights from Ceph into GPU memory
    busy_wall_hours: float  # requests / throughput
    job_gpu_hours: float
    persistent_gpu_hours: float
    persistent_idle_gpu_hours: float

    @property
    def configured_gpu_hours(self) -> float:
        return self.job_gpu_hours if self.serving_mode == ServingMode.JOB.value else self.persistent_gpu_hours


@dataclass(frozen=True)
class GpuHourPlan:
    """The plan for the configured matrix, with every assumption it rests on."""

    campaign_days: float
    study_rows: dict[str, dict[str, Any]]  # study -> {"rows": n, "source": ...}
    requests_per_row: dict[str, dict[str, Any]]  # study -> {"exp1": n, ..., "source": ...}
    sampling: dict[str, dict[str, Any]]  # study -> {"samplesPerRow": n, "temperature": t, "source": ...}
    external_extraction_requests: int  # sent to the external endpoint: no GPU of ours
    models: list[ModelGpuHours] = field(default_factory=list)

    @property
    def total_gpus(self) -> int:
        return sum(m.gpus for m in self.models)

    @property
    def total_requests(self) -> int:
        return sum(m.requests for m in self.models)

    @property
    def total_job_gpu_hours(self) -> float:
        return sum(m.job_gpu_hours for m in self.models)

    @property
    def total_persistent_gpu_hours(self) -> float:
        return sum(m.persistent_gpu_hours for m in self.models)

    @property
    def total_persistent_idle_gpu_hours(self) -> float:
        return sum(m.persistent_idle_gpu_hours for m in self.models)

    @property
    def total_configured_gpu_hours(self) -> float:
        return sum(m.configured_gpu_hours for m in self.models)

    def to_json(self) -> dict[str, Any]:
        return {
            "assumptions": {
                "campaignDays": self.campaign_days,
                "studyRows": self.study_rows,
                "requestsPerRow": self.requests_per_row,
                "sampling": self.sampling,
                "formula": {
                    "busyWallHours": "requests / throughputRps / 3600",
                    "jobGpuHours": "gpus * (loadSeconds / 3600 + busyWallHours)",
                    "persistentGpuHours": "gpus * max(campaignDays * 24, loadSeconds / 3600 + busyWallHours)",
                    "persistentIdleGpuHours": "persistentGpuHours - gpus * busyWallHours",
                },
            },
            "externalExtractionRequests": self.external_extraction_requests,
            "models": [
                {**_camel(asdict(m)), "configuredGpuHours": round(m.configured_gpu_hours, 1)}
                for m in self.models
            ],
            "totals": {
                "gpus": self.total_gpus,
                "requests": self.total_requests,
                "jobGpuHours": round(self.total_job_gpu_hours, 1),
                "persistentGpuHours": round(self.total_persistent_gpu_hours, 1),
                "persistentIdleGpuHours": round(self.total_persistent_idle_gpu_hours, 1),
                "configuredGpuHours": round(self.total_configured_gpu_hours, 1),
            },
        }


def _camel(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        head, *rest = key.split("_")
        name = head + "".join(part.title() for part in rest)
        out[name] = round(value, 2) if isinstance(value, float) else value
    return out


def gpu_hour_plan(config: GraceConfig, bundle: StudyBundle) -> GpuHourPlan:
    """The GPU-hour plan of the configured matrix (studies x experiments x matrix models)."""
    experiments = config.experiments.experiments
    external = config.jobs.deepseek_endpoint is not None
    rows_json: dict[str, dict[str, Any]] = {}
    per_row_json: dict[str, dict[str, Any]] = {}
    sampling_json: dict[str, dict[str, Any]] = {}
    # Requests one studied model's share sends, per experiment, without and with sampling: exp1 answers
    # every row samples_per_row times and extraction codes each of those answers; exp2 reads fixed
    # probabilities (one per row) unless it generates the analysis first (after-reasoning), then it samples.
    once: dict[Experiment, int] = dict.fromkeys(experiments, 0)
    sampled: dict[Experiment, int] = dict.fromkeys(experiments, 0)
    for study in config.experiments.studies:
        rows, source = study_rows(study, config, bundle)
        rows_json[study.value] = {"rows": rows, "source": source}
        per_row = requests_per_row(study, bundle)
        per_row_json[study.value] = {e.value: per_row.counts[e] for e in experiments}
        per_row_json[study.value]["source"] = per_row.source
        sampling = study_sampling(study, config, bundle)
        sampling_json[study.value] = {
            "samplesPerRow": sampling.samples_per_row,
            "temperature": sampling.temperature,
            "source": sampling.source,
        }
        for experiment in experiments:
            once[experiment] += rows * per_row.counts[experiment]
            sampled[experiment] += rows * sampling.samples_per_row * per_row.counts[experiment]

    def share(model: ServedModel) -> dict[Experiment, int]:
        exp2 = sampled if samples_exp2(model) else once
        return {e: exp2[e] if e is Experiment.EXP2 else sampled[e] for e in experiments}

    matrix = config.matrix_models()
    extraction_total = sum(share(m).get(Experiment.STRUCTURED, 0) for m in matrix)
    extractor = None if external else config.extractor_model()
    serving = [*matrix, *([extractor] if extractor and extractor.key not in {m.key for m in matrix} else [])]
    campaign_hours = config.plan.campaign_days * c.HOURS_PER_DAY
    models = []
    for model in serving:
        by_experiment = {
            e.value: n for e, n in share(model).items() if e is not Experiment.STRUCTURED and model in matrix
        }
        if Experiment.STRUCTURED in experiments and not external:
            by_experiment[Experiment.STRUCTURED.value] = (
                extraction_total if extractor is not None and model.key == extractor.key else 0
            )
        requests = sum(by_experiment.values())
        busy = requests / model.throughput_rps / c.SECONDS_PER_HOUR
        load = model.load_budget_s / c.SECONDS_PER_HOUR
        persistent = model.gpus * max(campaign_hours, load + busy)
        models.append(
            ModelGpuHours(
                model=model.key,
                serving_mode=model.serving_mode.value,
                gpus=model.gpus,
                requests=requests,
                requests_by_experiment=by_experiment,
                throughput_rps=model.throughput_rps,
                load_s=model.load_budget_s,
                busy_wall_hours=busy,
                # No request on this model's GPUs (e.g. only external extraction): no GPU Job runs.
                job_gpu_hours=model.gpus * (load + busy) if requests else 0.0,
                persistent_gpu_hours=persistent,
                persistent_idle_gpu_hours=persistent - model.gpus * busy,
            )
        )
    return GpuHourPlan(
        campaign_days=config.plan.campaign_days,
        study_rows=rows_json,
        requests_per_row=per_row_json,
        sampling=sampling_json,
        external_extraction_requests=extraction_total if external else 0,
        models=models,
    )


def format_gpu_hour_table(plan_json: dict[str, Any]) -> str:
    """`GpuHourPlan.to_json()` as a fixed-width table for stdout, totals last, assumptions underneath
    (it reads the JSON, so it prints exactly what plan.json says)."""
    header = (
        f"{'model':<14} {'mode':<10} {'GPUs':>4} {'requests':>9} {'req/s':>6} {'load':>6} "
        f"{'busy h':>7} {'job GPU-h':>10} {'persistent GPU-h':>17} {'of which idle':>14}"
    )
    rule = "-" * len(header)
    lines = [header, rule]
    for m in plan_json["models"]:
        lines.append(
            f"{m['model']:<14} {m['servingMode']:<10} {m['gpus']:>4} {m['requests']:>9,} "
            f"{m['throughputRps']:>6g} {m['loadS'] / 60:>5.0f}m {m['busyWallHours']:>7.1f} "
            f"{m['jobGpuHours']:>10.1f} {m['persistentGpuHours']:>17,.1f} "
            f"{m['persistentIdleGpuHours']:>14,.1f}"
        )
    t = plan_json["totals"]
    lines += [
        rule,
        f"{'total':<14} {'':<10} {t['gpus']:>4} {t['requests']:>9,} {'':>6} {'':>6} {'':>7} "
        f"{t['jobGpuHours']:>10.1f} {t['persistentGpuHours']:>17,.1f} {t['persistentIdleGpuHours']:>14,.1f}",
    ]
    assumptions = plan_json["assumptions"]
    saved = t["persistentGpuHours"] - t["jobGpuHours"]
    days = assumptions["campaignDays"]
    lines.append(
        f"As configured: {t['configuredGpuHours']:,.1f} GPU-hours. Over a {days:g}-day "
        f"campaign, all-job serving would save {saved:,.1f}\nof the {t['persistentGpuHours']:,.1f} GPU-hours "
        f"of all-persistent serving ({t['persistentIdleGpuHours']:,.1f} of them idle)."
    )
    rows = ", ".join(f"{s} {v['rows']:,} ({v['source']})" for s, v in assumptions["studyRows"].items())
    per_row = "; ".join(
        f"{s}: {', '.join(f'{k} {v}' for k, v in counts.items() if k != 'source')} ({counts['source']})"
        for s, counts in assumptions["requestsPerRow"].items()
    )
    sampling = "; ".join(
        f"{s}: {v['samplesPerRow']} sample(s) per row at temperature {v['temperature']:g} ({v['source']})"
        for s, v in assumptions["sampling"].items()
    )
    lines.append(f"Rows: {rows}.")
    lines.append(f"Requests per row: {per_row}.")
    lines.append(f"Sampling (multiplies exp1, extraction, and exp2 after reasoning): {sampling}.")
    if plan_json["externalExtractionRequests"]:
        external = plan_json["externalExtractionRequests"]
        lines.append(f"Extraction: {external:,} requests go to the external endpoint (no GPU of ours).")
    return "\n".join(lines)


def job_deadline_s(job: PlannedJob, config: GraceConfig, bundle: StudyBundle) -> int:
    """The Job's `activeDeadlineSeconds`: how long it may hold its pod, GPUs included, from the plan.

        setup     job mode: weight download at the assumed bandwidth + load budget (the sidecar);
                  persistent: the worker's --wait-timeout for the server's /health
                  extraction: + --wait-for-input (it waits for its exp1 file)
        busy      sum over the Job's cells of rows x requests per row / the model's throughput_rps
        deadline  JOB_DEADLINE_SAFETY_FACTOR x (setup + busy) + JOB_DEADLINE_QUEUE_ALLOWANCE_S

    Generous on purpose: a Job stopped by its deadline resumes from its checkpoint when it is replaced,
    but a hung 4-GPU pod without one holds its GPUs until someone notices.
    """
    model, jobs = job.model, config.jobs
    if job.sidecar:
        download_s = model.weights_gb * 1000 / c.DOWNLOAD_ASSUMED_MB_PER_S
        setup_s = download_s + model.load_budget_s
    else:
        setup_s = float(max(jobs.wait_timeout_s, model.load_budget_s))
    coder = config.extractor_model()
    busy_s = 0.0
    for cell in job.cells:
        rows, _ = study_rows(cell.study, config, bundle)
        sampling = study_sampling(cell.study, config, bundle)
        sampled = cell.experiment is not Experiment.EXP2 or samples_exp2(cell.model)
        samples = sampling.samples_per_row if sampled else 1
        requests = rows * samples * requests_per_row(cell.study, bundle).counts[cell.experiment]
        # Extraction's requests are served by the one coder, not by the model whose replies it codes.
        server = coder if cell.experiment is Experiment.STRUCTURED and coder is not None else model
        busy_s += requests / server.throughput_rps
    # Extraction may wait for an exp1 file another Job writes (worker extract --wait-for-input); once per
    # Job, since the files are written while it waits. A Job's own exp1 is written before its extraction.
    waits_for_input = any(
        cell.experiment is Experiment.STRUCTURED and (not job.sidecar or cell.model.key != model.key)
        for cell in job.cells
    )
    if waits_for_input:
        setup_s += jobs.input_wait_timeout_s
    return math.ceil(c.JOB_DEADLINE_SAFETY_FACTOR * (setup_s + busy_s) + c.JOB_DEADLINE_QUEUE_ALLOWANCE_S)
