"""What the stack asks the cluster for, as data (`plan.json`) and as a short table (render's stdout).

The plan is built from the same functions the components use (`sizing.model_server_resources`,
`manifests/claims.claim_specs`), so it cannot disagree with the manifests; a test checks that it does not.

Extending it: a section is `def section(ctx: PlanContext) -> JSON-able` registered in `SECTIONS`
under its plan.json key; a table is `def table(plan: dict) -> str` appended to `TABLES` (it reads the
plan dict, so it prints exactly what plan.json says).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from grace_infra.config.catalog import ServingMode
from grace_infra.config.quantities import GI, parse_quantity
from grace_infra.config.stack_config import GraceConfig
from grace_infra.manifests.claims import claim_specs
from grace_infra.nrp import cluster_facts
from grace_infra.nrp_rules import Finding, check_config, gpu_fit
from grace_infra.planning.gpu_hours import format_gpu_hour_table, gpu_hour_plan
from grace_infra.planning.matrix import format_matrix_table, matrix_json, plan_experiments
from grace_infra.planning.sizing import model_server_resources

__all__ = ["SECTIONS", "TABLES", "PlanContext", "build_plan", "format_table", "summary"]


@dataclass(frozen=True)
class PlanContext:
    """Everything a plan section may read."""

    config: GraceConfig
    findings: list[Finding] = field(default_factory=list)


Section = Callable[[PlanContext], Any]
Table = Callable[[dict[str, Any]], str]


def _number(value: Decimal | float) -> int | float:
    """JSON number: whole values as integers (plan.json is read by people)."""
    as_float = float(value)
    return int(as_float) if as_float.is_integer() else round(as_float, 3)


def models_section(ctx: PlanContext) -> list[dict[str, Any]]:
    """Per model: serving mode, GPUs and where they come from, the vLLM container's requests/limits."""
    rows = []
    for model in ctx.config.served_models():
        res = model_server_resources(model)
        rows.append({
            "model": model.key,
            "hfRepo": model.hf_repo,
            "servingMode": model.serving_mode.value,
            "gpus": res.gpus,
            "gpuResource": res.gpu_resource_name,
            "nodeProduct": model.gpu_product,
            "tensorParallelSize": model.tensor_parallel_size,
            "cpuRequest": _number(res.cpu_request),
            "cpuLimit": _number(res.cpu_limit),
            "memoryRequestGi": res.memory_request_gi,
            "memoryLimitGi": res.memory_limit_gi,
            "weightsPvc": model.weights_pvc_name,
            "weightsPvcGi": model.weights_pvc_gi,
        })
    return rows


def gpus_section(ctx: PlanContext) -> list[dict[str, Any]]:
    """Per model: the GPU product and resource its pods ask for, and whether its weights, one
    max-model-len sequence and vLLM's runtime fit that GPU's memory (the gpu-memory-fit rule)."""
    rows = []
    for model in ctx.config.served_models():
        memory_gb = cluster_facts.gpu_memory_gb(model.gpu_product, ctx.config.gpu.memory_gb)
        fit = gpu_fit(model, memory_gb)
        kind = cluster_facts.gpu_kind_for_product(model.gpu_product) if model.gpu_product else None
        rows.append({
            "model": model.key,
            "hfRepo": model.hf_repo,
            "nodeProduct": model.gpu_product,
            "gpuResource": model.gpu_resource,
            "gpus": model.gpus,
            "gpuMemoryGb": memory_gb,
            "neededGb": round(fit.needed_gb, 1),
            "usableGb": round(fit.usable_gb, 1),
            "fits": fit.needed_gb <= fit.usable_gb,
            "reservation": bool(kind and kind.reservation),
        })
    return rows


def storage_section(ctx: PlanContext) -> list[dict[str, Any]]:
    return [
        {
            "name": spec.name,
            "size": spec.size,
            "accessMode": spec.access_mode.value,
            "storageClass": spec.storage_class,
            "model": spec.model,
        }
        for spec in claim_specs(ctx.config)
    ]


def quota_section(ctx: PlanContext) -> dict[str, Any]:
    """Model-server requests against the ResourceQuota.

    `persistent` is what runs for the whole campaign; `peak` adds every job-mode server as if all ran
    at once (the worst case; the Jobs' own worker containers are not included here).
    """
    config = ctx.config
    quota = config.namespace.quota
    served = config.served_models()

    def total(models: list[Any]) -> dict[str, int | float]:
        resources = [model_server_resources(m) for m in models]
        return {
            "gpus": sum(r.gpus for r in resources),
            "cpu": _number(sum((Decimal(str(r.cpu_request)) for r in resources), Decimal(0))),
            "memoryGi": sum(r.memory_request_gi for r in resources),
            "pods": len(resources),
        }

    return {
        "persistent": total([m for m in served if m.serving_mode == ServingMode.PERSISTENT]),
        "peak": total(served),
        "persistentVolumeClaims": len(claim_specs(config)),
        "quota": {
            "gpus": quota.requests_gpu,
            "cpu": _number(parse_quantity(quota.requests_cpu)),
            "memoryGi": _number(parse_quantity(quota.requests_memory) / GI),
            "pods": quota.pods,
            "persistentVolumeClaims": quota.persistent_volume_claims,
        },
    }


def findings_section(ctx: PlanContext) -> list[dict[str, Any]]:
    return [finding.to_json() for finding in ctx.findings]


def matrix_section(ctx: PlanContext) -> list[dict[str, Any]]:
    """Every experiment Job: what it runs, what it writes, what it is created after."""
    _, planned = plan_experiments(ctx.config)
    return matrix_json(planned)


def gpu_hours_section(ctx: PlanContext) -> dict[str, Any]:
    """GPU-hours of the matrix in persistent vs job serving, with its assumptions."""
    bundle, _ = plan_experiments(ctx.config)
    return gpu_hour_plan(ctx.config, bundle).to_json()


def headline(gpu_hours: dict[str, Any]) -> str:
    """The plan's first line: what the configured stack costs in GPU-hours and what serving every model
    inside its Jobs would save (NRP bans users whose GPUs idle: see cluster_facts.POLICY_SOURCE)."""
    totals = gpu_hours["totals"]
    configured, job = totals["configuredGpuHours"], totals["jobGpuHours"]
    saving = round(configured - job, 1)
    if saving > 0:
        verdict = f"serving every model in its Jobs would cost {job:,.1f} and save {saving:,.1f}"
    else:
        persistent = totals["persistentGpuHours"]
        verdict = f"every model is served in its Jobs (all-persistent serving would cost {persistent:,.1f})"
    at_budget = totals["configuredGpuHoursAtBudget"]
    return (
        f"GPU-hours: {configured:,.1f} as configured ({at_budget:,.1f} if every reply spent its whole token "
        f"budget); {verdict}."
    )


def headline_section(ctx: PlanContext) -> str:
    return headline(gpu_hours_section(ctx))


SECTIONS: dict[str, Section] = {
    "headline": headline_section,
    "models": models_section,
    "gpus": gpus_section,
    "storage": storage_section,
    "quota": quota_section,
    "findings": findings_section,
    "matrix": matrix_section,
    "gpuHours": gpu_hours_section,
}


def build_plan(config: GraceConfig, findings: list[Finding] | None = None) -> dict[str, Any]:
    """plan.json's content: one key per registered section, in registration order."""
    ctx = PlanContext(config=config, findings=check_config(config) if findings is None else findings)
    return {name: section(ctx) for name, section in SECTIONS.items()}


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain left-aligned text table; `None` cells print as `-`."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _claim(model_row: dict[str, Any]) -> str:
    return f"{model_row['weightsPvc']} ({model_row['weightsPvcGi']}Gi)"


def models_table(plan: dict[str, Any]) -> str:
    rows = [
        [m["model"], m["servingMode"], m["gpus"], m["nodeProduct"], _claim(m)]
        for m in plan["models"]
    ]
    table = format_table(["model", "mode", "GPUs", "node product", "weights PVC"], rows)
    quota = plan["quota"]
    totals = (
        f"GPUs: {quota['persistent']['gpus']} persistent, {quota['peak']['gpus']} at peak, "
        f"quota {quota['quota']['gpus']}; PVCs: {quota['persistentVolumeClaims']} of "
        f"{quota['quota']['persistentVolumeClaims']}"
    )
    return f"{table}\n{totals}"


def gpus_table(plan: dict[str, Any]) -> str:
    rows = [
        [
            g["model"], g["hfRepo"], g["nodeProduct"],
            g["gpuResource"] + (" (reservation)" if g["reservation"] else ""),
            f"{g['gpus']} x {g['gpuMemoryGb']:g} GB", f"{g['neededGb']:g} of {g['usableGb']:g} GB",
            "yes" if g["fits"] else "NO: quantize, pick larger cards, or drop the model",
        ]
        for g in plan["gpus"]
    ]
    headers = ["model", "checkpoint", "node product", "GPU resource", "GPUs", "needs", "fits"]
    return format_table(headers, rows)


def matrix_table(plan: dict[str, Any]) -> str:
    return format_matrix_table(plan["matrix"])


def gpu_hours_table(plan: dict[str, Any]) -> str:
    return format_gpu_hour_table(plan["gpuHours"])


TABLES: list[Table] = [models_table, gpus_table, matrix_table, gpu_hours_table]


def summary(plan: dict[str, Any]) -> str:
    """The human summary render prints: the headline, then every registered table, separated by a
    blank line."""
    return "\n\n".join([plan["headline"], *(table(plan) for table in TABLES)])
