"""The GPU-hour plan: what the configured matrix costs in `persistent` vs `job` serving, before any
GPU is requested.

For each matrix model:
    requests     = sum over studies and experiments of rows x requests per row, x samples per row where the
                   request samples (exp1, extraction, exp2 after reasoning; grace_infra/planning/workload.py);
                   extraction, one request per exp1 output row (every sample) of EVERY matrix model, is
                   counted on the one self-hosted extractor (on no GPU of ours with an external endpoint);
                   an upper bound, since replies in the study's format are coded by the parser instead
    busy hours   = the server's time for those requests, in tokens: prompts read and replies written at
                   its GPUs' datasheet speed (grace_infra/planning/serving_speed.py), or requests / a measured
                   throughputRps
    job          = GPUs x (GPU Jobs x load_budget_s / 3600 + busy hours)  (one load per GPU Job: the
                   coder loads twice, in its matrix Job and in its extraction Job; GPUs freed after each;
                   extraction waits for its inputs in a CPU pod, so no wait for another Job is on a GPU)
    persistent   = GPUs x max(campaign_days x 24, load + busy)  (the server stays up all campaign)
    idle         = persistent - GPUs x busy hours               (GPU-hours doing no matrix work)

The load budget is an upper bound on load time and the speed an estimate that errs long, so both columns
are estimates; the point is the ratio, which is what NRP's idle-GPU rule (under 40 % use counts against
the user) and two-week limit care about.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from grace_infra import constants as c
from grace_infra.config.catalog import ModelSpec, ServingMode
from grace_infra.config.stack_config import Experiment, GraceConfig, ServedModel
from grace_infra.planning.matrix import MatrixCell, PlannedJob, input_wait_s, plan_jobs, reasons_in_studies
from grace_infra.planning.serving_speed import Load, ServerSpeed, server_speed
from grace_infra.planning.study_bundle import (
    StudyBundle,
    requests_per_row,
    study_name,
    study_rows,
    study_sampling,
)
from grace_infra.planning.workload import cell_request_kinds, prompt_sizes

__all__ = [
    "GpuHourPlan",
    "ModelGpuHours",
    "format_gpu_hour_table",
    "gpu_hour_plan",
    "pod_deadline_s",
    "server_start_bound_s",
    "startup_window_s",
]


@dataclass(frozen=True)
class ModelGpuHours:
    """One model's share of the matrix and what it costs. Hours are GPU-hours unless named wall."""

    model: str
    serving_mode: str
    gpus: int
    requests: int  # requests this model's GPUs serve
    requests_by_experiment: dict[str, int]
    prompt_tokens: int  # tokens read, every prompt
    output_tokens: int  # tokens written as planned (every reply at its cap, planned reasoning)
    speed: str  # what the speed comes from: the GPU whose datasheet it uses, or a measured throughput
    planned_reasoning_tokens: int  # per request, for a reasoning model (0: it does not reason)
    reasoning_budget_tokens: int
    load_s: int  # load budget: weights from Ceph into GPU memory
    gpu_jobs: int  # GPU Jobs running this model (a job-mode coder: its matrix Job and its extraction Job)
    server_start_bound_s: int  # job mode: a sidecar that never starts fails its Job within this
    busy_wall_hours: float  # the server's time for those tokens (serving_speed.py)
    job_gpu_hours: float
    busy_wall_hours_at_budget: float  # if every reply spent its whole token budget, reasoning included
    persistent_gpu_hours: float
    persistent_idle_gpu_hours: float

    @property
    def configured_gpu_hours(self) -> float:
        return self.job_gpu_hours if self.serving_mode == ServingMode.JOB.value else self.persistent_gpu_hours

    @property
    def configured_gpu_hours_at_budget(self) -> float:
        """As configured, if every reply spent its whole token budget (the Jobs' deadlines assume so)."""
        extra = self.gpus * (self.busy_wall_hours_at_budget - self.busy_wall_hours)
        if self.serving_mode == ServingMode.JOB.value:
            return self.job_gpu_hours + extra if self.requests else 0.0
        return max(self.persistent_gpu_hours, self.job_gpu_hours + extra)


@dataclass(frozen=True)
class GpuHourPlan:
    """The plan for the configured matrix, with every assumption it rests on."""

    campaign_days: float
    study_rows: dict[str, dict[str, Any]]  # study -> {"rows": n, "source": ...}
    requests_per_row: dict[str, dict[str, Any]]  # study -> {"exp1": n, ..., "source": ...}
    sampling: dict[str, dict[str, Any]]  # study -> {"samplesPerRow": n, "temperature": t, "source": ...}
    prompts: dict[str, dict[str, Any]]  # study -> {"measuredOn": "<n> rows" or "template only"}
    external_extraction_requests: int  # sent to the external endpoint: no GPU of ours
    requests_in_flight: int  # the worker's --batch-size
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
    def total_configured_gpu_hours_at_budget(self) -> float:
        return sum(m.configured_gpu_hours_at_budget for m in self.models)

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
                "prompts": self.prompts,
                "speed": {
                    "charsPerToken": c.CHARS_PER_TOKEN,
                    "chatTemplateTokens": c.CHAT_TEMPLATE_TOKENS,
                    "decodeBandwidthEfficiency": c.DECODE_BANDWIDTH_EFFICIENCY,
                    "prefillComputeEfficiency": c.PREFILL_COMPUTE_EFFICIENCY,
                    "requestsInFlight": self.requests_in_flight,
                },
                "formula": {
                    "busyWallHours": (
                        "sum over request kinds of requests x (prompt tokens / prefill tokens/s + output "
                        "tokens / batch x decode step) / 3600 (grace_infra/planning/serving_speed.py); "
                        "requests / throughputRps / 3600 where throughputRps is set"
                    ),
                    "jobGpuHours": "gpus * (gpuJobs * loadSeconds / 3600 + busyWallHours)",
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
                "configuredGpuHoursAtBudget": round(self.total_configured_gpu_hours_at_budget, 1),
            },
        }


def _camel(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        head, *rest = key.split("_")
        name = head + "".join(part.title() for part in rest)
        out[name] = round(value, 2) if isinstance(value, float) else value
    return out


def _cell_loads(
    cell: MatrixCell, server: ModelSpec, config: GraceConfig, bundle: StudyBundle, *, bound: bool = False
) -> list[Load]:
    """One cell's requests as loads on `server`: planned reply lengths, or every budget spent (`bound`)."""
    rows, _ = study_rows(cell.study, config, bundle)
    samples = study_sampling(cell.model.design, cell.study, config, bundle).samples_per_row
    return [
        Load(
            requests=rows * kind.per_row * (samples if kind.sampled else 1),
            prompt_tokens=kind.prompt_tokens,
            output_tokens=kind.output_budget if bound else kind.planned_output_tokens,
        )
        for kind in cell_request_kinds(cell, server, config, bundle)
    ]


def _server_loads(
    server: ServedModel, config: GraceConfig, bundle: StudyBundle, *, bound: bool = False
) -> dict[str, list[Load]]:
    """Every load the matrix puts on `server`, by experiment: its own exp1 and exp2 when it is studied,
    and extraction of every studied model's replies when it is the coder."""
    matrix = config.matrix_models()
    extractor = config.extractor_model()  # None with an external endpoint: no GPU of ours codes
    loads: dict[str, list[Load]] = {}
    for experiment in config.experiments.experiments:
        if experiment is Experiment.EXTRACTION:
            if extractor is None:
                continue
            coded = matrix if server.key == extractor.key else []
        else:
            coded = [server] if server in matrix else []
            if not coded:
                continue
        studies = config.experiments.studies
        cells = [MatrixCell(study, experiment, studied) for study in studies for studied in coded]
        loads[experiment.value] = [
            load for cell in cells for load in _cell_loads(cell, server, config, bundle, bound=bound)
        ]
    return loads


def _speed(model: ServedModel, config: GraceConfig) -> ServerSpeed:
    return server_speed(model, model.gpu_product, config.jobs.batch_size)


def gpu_hour_plan(config: GraceConfig, bundle: StudyBundle) -> GpuHourPlan:
    """The GPU-hour plan of the configured matrix (studies x experiments x matrix models)."""
    experiments = config.experiments.experiments
    external = config.jobs.deepseek_endpoint is not None
    rows_json: dict[str, dict[str, Any]] = {}
    per_row_json: dict[str, dict[str, Any]] = {}
    sampling_json: dict[str, dict[str, Any]] = {}
    prompts_json: dict[str, dict[str, Any]] = {}
    for study in config.experiments.studies:
        rows, source = study_rows(study, config, bundle)
        rows_json[study.value] = {"rows": rows, "source": source}
    # Per design: what one row costs and how it is sampled differ between designs of the same study.
    for design in config.designs():
        for study in config.experiments.studies:
            name = study_name(design, study)
            per_row = requests_per_row(design, study, bundle)
            per_row_json[name] = {e.value: per_row.counts[e] for e in experiments}
            per_row_json[name]["source"] = per_row.source
            sampling = study_sampling(design, study, config, bundle)
            sampling_json[name] = {
                "samplesPerRow": sampling.samples_per_row,
                "temperature": sampling.temperature,
                "source": sampling.source,
            }
            prompts_json[name] = {"measuredOn": prompt_sizes(design, study, config, bundle).source}

    matrix = config.matrix_models()
    extractor = None if external else config.extractor_model()
    serving = [*matrix, *([extractor] if extractor and extractor.key not in {m.key for m in matrix} else [])]
    campaign_hours = config.plan.campaign_days * c.HOURS_PER_DAY
    # With an external endpoint, extraction's requests leave the cluster: counted, on no GPU of ours.
    external_requests = sum(
        int(load.requests)
        for study in config.experiments.studies
        for studied in matrix
        for load in _cell_loads(MatrixCell(study, Experiment.EXTRACTION, studied), studied, config, bundle)
    ) if external and Experiment.EXTRACTION in experiments else 0  # fmt: skip
    gpu_jobs = Counter(job.model.key for job in plan_jobs(config, bundle) if job.gpu)
    models = []
    for model in serving:
        loads = _server_loads(model, config, bundle)
        flat = [load for cell in loads.values() for load in cell]
        spent = _server_loads(model, config, bundle, bound=True)
        at_budget = [load for cell in spent.values() for load in cell]
        speed = _speed(model, config)
        busy = speed.busy_s(flat) / c.SECONDS_PER_HOUR
        load_h = model.load_budget_s / c.SECONDS_PER_HOUR
        requests = int(sum(load.requests for load in flat))
        # It reasons in what it answers: its studied requests in the chat design, or coding as the coder.
        coding = extractor is not None and model.key == extractor.key
        reasons = reasons_in_studies(model) or (coding and model.reasoning_format is not None)
        persistent = model.gpus * max(campaign_hours, load_h + busy)
        models.append(
            ModelGpuHours(
                model=model.key,
                serving_mode=model.serving_mode.value,
                gpus=model.gpus,
                requests=requests,
                requests_by_experiment={e: int(sum(x.requests for x in cell)) for e, cell in loads.items()},
                prompt_tokens=int(sum(x.requests * x.prompt_tokens for x in flat)),
                output_tokens=int(sum(x.requests * x.output_tokens for x in flat)),
                speed=speed.source,
                planned_reasoning_tokens=model.planned_reasoning_tokens if reasons else 0,
                reasoning_budget_tokens=model.reasoning_tokens if reasons else 0,
                load_s=model.load_budget_s,
                gpu_jobs=max(1, gpu_jobs[model.key]),
                server_start_bound_s=server_start_bound_s(model),
                busy_wall_hours=busy,
                # No request on this model's GPUs (e.g. only external extraction): no GPU Job runs.
                job_gpu_hours=model.gpus * (max(1, gpu_jobs[model.key]) * load_h + busy) if requests else 0.0,
                busy_wall_hours_at_budget=speed.busy_s(at_budget) / c.SECONDS_PER_HOUR,
                persistent_gpu_hours=persistent,
                persistent_idle_gpu_hours=persistent - model.gpus * busy,
            )
        )
    return GpuHourPlan(
        campaign_days=config.plan.campaign_days,
        study_rows=rows_json,
        requests_per_row=per_row_json,
        sampling=sampling_json,
        prompts=prompts_json,
        external_extraction_requests=external_requests,
        requests_in_flight=config.jobs.batch_size,
        models=models,
    )


def format_gpu_hour_table(plan_json: dict[str, Any]) -> str:
    """`GpuHourPlan.to_json()` as a fixed-width table for stdout, totals last, assumptions underneath
    (it reads the JSON, so it prints exactly what plan.json says)."""
    header = (
        f"{'model':<14} {'mode':<10} {'GPUs':>4} {'requests':>9} {'M tok in':>8} {'M tok out':>9} "
        f"{'load':>5} {'busy h':>7} {'job GPU-h':>10} {'persistent GPU-h':>17} {'of which idle':>14}"
    )
    rule = "-" * len(header)
    lines = [header, rule]
    for m in plan_json["models"]:
        lines.append(
            f"{m['model']:<14} {m['servingMode']:<10} {m['gpus']:>4} {m['requests']:>9,} "
            f"{m['promptTokens'] / 1e6:>8.1f} {m['outputTokens'] / 1e6:>9.1f} {m['loadS'] / 60:>4.0f}m "
            f"{m['busyWallHours']:>7.1f} {m['jobGpuHours']:>10.1f} {m['persistentGpuHours']:>17,.1f} "
            f"{m['persistentIdleGpuHours']:>14,.1f}"
        )
    t = plan_json["totals"]
    lines += [
        rule,
        f"{'total':<14} {'':<10} {t['gpus']:>4} {t['requests']:>9,} {'':>8} {'':>9} {'':>5} {'':>7} "
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
    prompts = ", ".join(f"{s} on {v['measuredOn']}" for s, v in assumptions["prompts"].items())
    speed = assumptions["speed"]
    gpus = ", ".join(sorted({m["speed"] for m in plan_json["models"]}))
    lines.append(f"Rows: {rows}.")
    lines.append(f"Requests per row: {per_row}.")
    lines.append(f"Sampling (multiplies exp1, extraction, and exp2 after reasoning): {sampling}.")
    reasoning = ", ".join(
        f"{m['model']} {m['plannedReasoningTokens']:,} (budget {m['reasoningBudgetTokens']:,})"
        for m in plan_json["models"]
        if m["plannedReasoningTokens"]
    )
    after = f", after planned reasoning tokens per request: {reasoning}" if reasoning else ""
    lines.append(
        f"Tokens: prompts measured {prompts} at {speed['charsPerToken']:g} characters a token; every reply "
        f"at its max_tokens{after}."
    )
    lines.append(
        f"Speed (grace_infra/planning/serving_speed.py): {gpus}; "
        f"{speed['decodeBandwidthEfficiency']:.0%} of memory bandwidth writing, "
        f"{speed['prefillComputeEfficiency']:.0%} of dense 16-bit FLOPS reading, "
        f"{speed['requestsInFlight']} requests in flight."
    )
    loads = ", ".join(f"{m['model']} x{m['gpuJobs']}" for m in plan_json["models"] if m["gpuJobs"] > 1)
    bounds = ", ".join(
        f"{m['model']} {m['serverStartBoundS'] / 60:.0f} min"
        for m in plan_json["models"]
        if m["servingMode"] == ServingMode.JOB.value
    )
    lines.append(
        "GPU waits: one load (the load column) per GPU Job"
        + (f" ({loads}: its matrix Job and its extraction Job)" if loads else "")
        + ", counted above; extraction waits for other Jobs' outputs in a CPU pod, holding no GPU"
        + (
            f". Not counted, a failure: a vLLM sidecar that never starts fails its Job within {bounds}"
            if bounds
            else ""
        )
        + "."
    )
    if plan_json["externalExtractionRequests"]:
        external = plan_json["externalExtractionRequests"]
        lines.append(f"Extraction: {external:,} requests go to the external endpoint (no GPU of ours).")
    return "\n".join(lines)


def startup_window_s(model: ServedModel) -> int:
    """How long the kubelet lets one start of the server take: the startup probe's failureThreshold x
    periodSeconds, the load budget rounded up to whole probe periods (manifests/vllm_server.py)."""
    return math.ceil(model.load_budget_s / c.STARTUP_PROBE_PERIOD_S) * c.STARTUP_PROBE_PERIOD_S


def server_start_bound_s(model: ServedModel) -> int:
    """The longest a job-mode pod holds its GPUs when its vLLM sidecar never starts.

        a failed start   startup window (the probe kills a start that never answers /health) + the pod's
                         termination grace for vLLM to stop + the kubelet's restart back-off (<= 300 s)
        bound            SERVER_START_ATTEMPTS failed starts + one probe period for the start wrapper's
                         /health, after which the worker exits EXIT_SERVER_START_FAILED and the Job's
                         podFailurePolicy fails the Job (docs/lifecycle.md, "A server that cannot start")
    A start that exits at once (a bad flag) costs only its back-off; the bound is the slow case.
    """
    failed_start = startup_window_s(model) + c.POD_TERMINATION_GRACE_S + c.KUBELET_MAX_RESTART_BACKOFF_S
    return c.SERVER_START_ATTEMPTS * failed_start + c.STARTUP_PROBE_PERIOD_S


def pod_deadline_s(job: PlannedJob, config: GraceConfig, bundle: StudyBundle) -> int:
    """The pod's `activeDeadlineSeconds`: how long one pod of the Job may run, GPUs included, counted from
    the kubelet's acknowledgement of the pod on its node (PodStatus.startTime), so time spent waiting for
    a node or for quota is never counted.

        setup     job mode: the server's start bound (server_start_bound_s: every failed start the budget
                  allows, then a load); persistent: the worker's --wait-timeout for the server's /health;
                  a CPU extraction Job: + --wait-for-input (it waits for its exp1 file on no GPU)
        busy      the server's time for the Job's cells with every reply spending its whole budget,
                  reasoning included (the plan counts the planned reasoning instead)
        deadline  JOB_DEADLINE_SAFETY_FACTOR x (setup + busy)

    Generous on purpose: a pod stopped by its deadline counts toward backoffLimit and the next pod resumes
    from the checkpoint, but a hung 4-GPU pod without one holds its GPUs until someone notices.
    """
    model, jobs = job.model, config.jobs
    if job.sidecar:
        # The weights are on the claim before the Job exists (the download Job): only starts are waited.
        setup_s = float(server_start_bound_s(model))
    else:
        setup_s = float(max(jobs.wait_timeout_s, model.load_budget_s))
    coder = config.extractor_model()
    busy_s = 0.0
    for cell in job.cells:
        # Extraction's requests are served by the one coder, not by the model whose replies it codes.
        server = coder if cell.experiment is Experiment.EXTRACTION and coder is not None else cell.model
        loads = _cell_loads(cell, server, config, bundle, bound=True)
        busy_s += _speed(server, config).busy_s(loads)
    if not job.gpu and any(cell.experiment is Experiment.EXTRACTION for cell in job.cells):
        setup_s += input_wait_s(config)  # a CPU Job waiting for its exp1 file: no GPU waits
    return math.ceil(c.JOB_DEADLINE_SAFETY_FACTOR * (setup_s + busy_s))
