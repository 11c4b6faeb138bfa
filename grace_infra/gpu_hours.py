"""The GPU-hour plan: what the configured matrix costs in `persistent` vs `job` serving, before any
GPU is requested.

For each matrix model:
    requests     = sum over studies and experiments of rows x requests per row (studies.requests_per_row);
                   extraction counts only when it runs on the model's own server (no external endpoint)
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
from grace_infra.config import Experiment, GraceConfig, Study
from grace_infra.matrix import PlannedJob
from grace_infra.studies import StudyBundle, requests_per_row, study_rows

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
    rows: dict[Study, int] = {}
    rows_json: dict[str, dict[str, Any]] = {}
    per_row_json: dict[str, dict[str, Any]] = {}
    per_study_requests: dict[Experiment, int] = dict.fromkeys(experiments, 0)
    for study in config.experiments.studies:
        rows[study], source = study_rows(study, config, bundle)
        rows_json[study.value] = {"rows": rows[study], "source": source}
        per_row = requests_per_row(study, bundle)
        per_row_json[study.value] = {e.value: per_row.counts[e] for e in experiments}
        per_row_json[study.value]["source"] = per_row.source
        for experiment in experiments:
            per_study_requests[experiment] += rows[study] * per_row.counts[experiment]

    on_gpu = {e: n for e, n in per_study_requests.items() if not (external and e is Experiment.STRUCTURED)}
    hours_per_day = c.HOURS_PER_DAY
    campaign_hours = config.plan.campaign_days * hours_per_day
    models = []
    for model in config.matrix_models():
        requests = sum(on_gpu.values())
        busy = requests / model.throughput_rps / c.SECONDS_PER_HOUR
        load = model.load_budget_s / c.SECONDS_PER_HOUR
        persistent = model.gpus * max(campaign_hours, load + busy)
        models.append(
            ModelGpuHours(
                model=model.key,
                serving_mode=model.serving_mode.value,
                gpus=model.gpus,
                requests=requests,
                requests_by_experiment={e.value: n for e, n in on_gpu.items()},
                throughput_rps=model.throughput_rps,
                load_s=model.load_budget_s,
                busy_wall_hours=busy,
                # No request on this model's GPUs (e.g. only external extraction): no GPU Job runs.
                job_gpu_hours=model.gpus * (load + busy) if requests else 0.0,
                persistent_gpu_hours=persistent,
                persistent_idle_gpu_hours=persistent - model.gpus * busy,
            )
        )
    external_requests = per_study_requests.get(Experiment.STRUCTURED, 0) * len(models) if external else 0
    return GpuHourPlan(
        campaign_days=config.plan.campaign_days,
        study_rows=rows_json,
        requests_per_row=per_row_json,
        external_extraction_requests=external_requests,
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
    lines.append(f"Rows: {rows}.")
    lines.append(f"Requests per row: {per_row}.")
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
    busy_s = 0.0
    for cell in job.cells:
        rows, _ = study_rows(cell.study, config, bundle)
        requests = rows * requests_per_row(cell.study, bundle).counts[cell.experiment]
        busy_s += requests / model.throughput_rps
        if cell.experiment is Experiment.STRUCTURED and not job.sidecar:
            setup_s += jobs.input_wait_timeout_s
    return math.ceil(c.JOB_DEADLINE_SAFETY_FACTOR * (setup_s + busy_s) + c.JOB_DEADLINE_QUEUE_ALLOWANCE_S)
