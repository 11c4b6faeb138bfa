"""The preflight checks: each reads the live cluster through `Cluster` and returns result lines.

A check is `def check(cluster: Cluster, stack: StackFacts) -> list[CheckResult]`, registered in
`CHECKS` in the order a researcher would fix things (can I talk to it, is my namespace there, will my
pods fit, will they schedule, will Pulumi's objects be accepted). The numbers the checks compare come
from the same plan the offline render prints (`plan.build_plan`), so preflight and render cannot
disagree about what the stack asks for.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from grace_infra import constants as c
from grace_infra.commands.kube_client import ApiException, Cluster
from grace_infra.config.catalog import ServingMode
from grace_infra.config.quantities import GI, parse_quantity
from grace_infra.config.stack_config import (
    GraceConfig,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    ServedModel,
    Toleration,
)
from grace_infra.manifests.monitoring import SERVICE_MONITOR_API_VERSION, SERVICE_MONITOR_KIND
from grace_infra.manifests.vllm_server import pod_tolerations
from grace_infra.nrp import cluster_facts
from grace_infra.planning.sizing import worker_resources

__all__ = ["CHECKS", "CheckResult", "Outcome", "StackFacts"]

# Native sidecars (init containers with restartPolicy: Always) are on by default from Kubernetes 1.29
# (https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/); job-mode pods need them.
MIN_SERVER_VERSION = (1, 29)
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
CRD_GROUP = SERVICE_MONITOR_API_VERSION.split("/", 1)[0]
SERVICE_MONITOR_CRD = f"servicemonitors.{CRD_GROUP}"
_MANAGED_BY_PULUMI = (c.LABEL_MANAGED_BY, "pulumi")


class Outcome(StrEnum):
    PASS = "PASS"  # noqa: S105 (an outcome, not a password)
    FAIL = "FAIL"
    SKIP = "SKIP"  # the stack does not need this check (e.g. monitoring off)


@dataclass(frozen=True)
class CheckResult:
    """One printed line: what was checked, what the cluster said, and how to fix a failure."""

    check: str
    outcome: Outcome
    detail: str
    fix: str = ""

    def line(self, width: int) -> str:
        fix = f"  Fix: {self.fix}" if self.outcome == Outcome.FAIL and self.fix else ""
        return f"{self.outcome.value}  {self.check:<{width}}  {self.detail}{fix}"


@dataclass(frozen=True)
class StackFacts:
    """What the stack asks the cluster for: the config, the render's plan, and which secrets it holds."""

    config: GraceConfig
    plan: dict[str, Any]
    hf_token_set: bool  # grace:hfToken is set in the stack (pulumi up creates the Secret from it)


Check = Callable[[Cluster, StackFacts], list[CheckResult]]


def _name(obj: Any) -> str:
    """metadata.name of an API object (the API always sets it on objects it returns)."""
    return str(obj.metadata.name) if obj.metadata else ""


def _pass(check: str, detail: str) -> list[CheckResult]:
    return [CheckResult(check, Outcome.PASS, detail)]


def _fail(check: str, detail: str, fix: str) -> list[CheckResult]:
    return [CheckResult(check, Outcome.FAIL, detail, fix)]


# --- server version --------------------------------------------------------------------------------


def _leading_int(text: str) -> int:
    # GKE/EKS report minor versions such as "29+"; only the number counts.
    match = re.match(r"\d+", text or "")
    return int(match.group()) if match else 0


def server_version(cluster: Cluster, stack: StackFacts) -> list[CheckResult]:
    del stack
    info = cluster.version()
    found = (_leading_int(info.major), _leading_int(info.minor))
    wanted = ".".join(map(str, MIN_SERVER_VERSION))
    if found >= MIN_SERVER_VERSION:
        return _pass("server version", f"{info.git_version} >= {wanted} (native sidecars for job-mode pods)")
    return _fail(
        "server version",
        f"{info.git_version} < {wanted}: job-mode pods run vLLM as a native sidecar, which needs {wanted}",
        "use a cluster on Kubernetes 1.29 or newer, or set servingMode: persistent for every model.",
    )


# --- namespace and quota ---------------------------------------------------------------------------


def namespace_exists(cluster: Cluster, stack: StackFacts) -> list[CheckResult]:
    ns = stack.config.namespace
    found = cluster.namespace(ns.name)
    if ns.create:
        if found is None:
            return _pass("namespace", f"{ns.name} does not exist yet; pulumi up creates it")
        return _fail(
            "namespace",
            f"{ns.name} already exists but grace:namespace.create is true: pulumi up would fail creating it",
            f"set grace:namespace.create: false to adopt {ns.name}.",
        )
    if found is None:
        return _fail(
            "namespace",
            f"{ns.name} does not exist (grace:namespace.create is false: the stack adopts it)",
            "create it in the NRP portal (https://nrp.ai/, Namespaces) or set grace:namespace.name.",
        )
    return _pass("namespace", f"{ns.name} exists ({found.status.phase if found.status else 'no status'})")


def quota_needs(stack: StackFacts) -> dict[str, Decimal]:
    """ResourceQuota keys -> what the stack needs at once: every persistent server, plus the largest
    job-mode Job pod (its vLLM sidecar and worker) so at least one job-mode model can run beside them,
    plus every PVC. Read from the plan's own rows (plan.json `models`, `storage`, `quota`)."""
    plan = stack.plan
    needs: dict[str, Decimal] = defaultdict(Decimal)

    def add_server(row: dict[str, Any]) -> None:
        needs["requests.cpu"] += Decimal(str(row["cpuRequest"]))
        needs["requests.memory"] += Decimal(row["memoryRequestGi"]) * GI
        needs[f"requests.{row['gpuResource']}"] += Decimal(row["gpus"])
        needs["pods"] += 1

    rows = plan["models"]
    for row in rows:
        if row["servingMode"] == ServingMode.PERSISTENT.value:
            add_server(row)
    job_rows = [row for row in rows if row["servingMode"] == ServingMode.JOB.value]
    if job_rows:
        add_server(max(job_rows, key=lambda row: (row["gpus"], row["memoryRequestGi"])))
        worker = worker_resources(stack.config)
        needs["requests.cpu"] += Decimal(str(worker.cpu_request))
        needs["requests.memory"] += Decimal(worker.memory_request_gi) * GI
    needs["persistentvolumeclaims"] = Decimal(plan["quota"]["persistentVolumeClaims"])
    needs["requests.storage"] = sum((parse_quantity(claim["size"]) for claim in plan["storage"]), Decimal(0))
    # `cpu` and `memory` are the API's older spellings of requests.cpu and requests.memory.
    needs["cpu"], needs["memory"] = needs["requests.cpu"], needs["requests.memory"]
    return dict(needs)


def _amount(key: str, value: Decimal) -> str:
    if "memory" in key or "storage" in key:
        return f"{(value / GI).normalize():f}Gi"
    return f"{value.normalize():f}"


def quota_admits_plan(cluster: Cluster, stack: StackFacts) -> list[CheckResult]:
    ns = stack.config.namespace
    if ns.create:
        return [CheckResult("resource quota", Outcome.SKIP, "pulumi up creates the quota (namespace.create)")]
    if cluster.namespace(ns.name) is None:
        return [CheckResult("resource quota", Outcome.SKIP, f"namespace {ns.name} does not exist")]
    quotas = cluster.resource_quotas(ns.name)
    if not quotas:
        return _pass("resource quota", f"no ResourceQuota in {ns.name}: nothing limits the plan")
    needs = quota_needs(stack)
    short: list[str] = []
    checked = 0
    for quota in quotas:
        hard = (quota.status.hard if quota.status else None) or {}
        used = (quota.status.used if quota.status else None) or {}
        for key, limit in sorted(hard.items()):
            if key not in needs or not needs[key]:
                continue
            checked += 1
            free = parse_quantity(limit) - parse_quantity(used.get(key, "0"))
            if needs[key] > free:
                short.append(
                    f"{key} needs {_amount(key, needs[key])}, {_amount(key, free)} free of "
                    f"{_amount(key, parse_quantity(limit))} in {_name(quota)}"
                )
    if short:
        return _fail(
            "resource quota",
            "; ".join(short),
            "free the namespace (kubectl get pods,pvc) or ask NRP for a larger quota; the plan is "
            "`grace render --stack <stack>` (persistent servers + the largest job-mode Job pod + every PVC).",
        )
    names = ", ".join(_name(q) for q in quotas)
    return _pass("resource quota", f"{names} admits the plan ({checked} limits checked against hard - used)")


# --- storage classes -------------------------------------------------------------------------------


def storage_classes(cluster: Cluster, stack: StackFacts) -> list[CheckResult]:
    existing = {_name(sc) for sc in cluster.storage_classes()}
    wanted: dict[str, list[str]] = defaultdict(list)
    for claim in stack.plan["storage"]:
        wanted[claim["storageClass"]].append(claim["name"])
    usable = ", ".join(sorted(existing - cluster_facts.PURGE_PRONE_STORAGE_CLASSES))
    results = []
    for name, claims in wanted.items():
        check = f"storage class {name}"
        if name in existing:
            results += _pass(check, f"exists ({len(claims)} claims use it)")
        else:
            results += _fail(
                check,
                f"does not exist; {', '.join(claims)} would stay Pending",
                f"use one of {usable} in grace:storage",
            )
    return results


# --- GPU nodes -------------------------------------------------------------------------------------


def _labels(node: Any) -> dict[str, str]:
    return node.metadata.labels or {}


def _allocatable_map(node: Any) -> dict[str, str]:
    return (node.status.allocatable if node.status else None) or {}


def _allocatable(node: Any, resource: str) -> Decimal:
    return parse_quantity(_allocatable_map(node).get(resource, "0"))


def gpu_nodes(cluster: Cluster, stack: StackFacts) -> list[CheckResult]:
    """Per (product, resource) the stack asks for: nodes carrying the product label, and among them
    the most GPUs of that resource one node offers (a pod's GPUs must all be on one node)."""
    wanted: dict[tuple[str | None, str], int] = {}
    for row in stack.plan["models"]:
        if row["gpus"]:
            pair = (row["nodeProduct"], row["gpuResource"])
            wanted[pair] = max(wanted.get(pair, 0), row["gpus"])
    if not wanted:
        return [CheckResult("GPU nodes", Outcome.SKIP, "no configured model requests a GPU")]
    nodes = cluster.nodes()
    results = []
    for (product, resource), per_pod in wanted.items():
        check = f"GPU {product or 'any product'}"
        labelled = [n for n in nodes if product is None or _labels(n).get(GPU_PRODUCT_LABEL) == product]
        if not labelled:
            results += _fail(
                check,
                f"no node carries {GPU_PRODUCT_LABEL}={product}",
                f"set a product the cluster has (kubectl get nodes -L {GPU_PRODUCT_LABEL}) in grace:gpu.",
            )
            continue
        offers = [_allocatable(n, resource) for n in labelled]
        best = max(offers)
        with_any = sum(1 for amount in offers if amount > 0)
        if best <= 0:
            exposed = {key for n in labelled for key in _allocatable_map(n) if _allocatable(n, key) > 0}
            elsewhere = sorted(key for key in exposed if key.startswith("nvidia.com/"))
            results += _fail(
                check,
                f"{len(labelled)} node(s) carry the product but none has {resource} allocatable"
                + (f" (they expose {', '.join(elsewhere)})" if elsewhere else ""),
                "request the resource these nodes expose (grace:gpu.resourceName) or another product.",
            )
        elif best < per_pod:
            results += _fail(
                check,
                f"a pod needs {per_pod} {resource} on one node; one node offers at most {best.normalize():f}",
                "lower gpus/tensorParallelSize for that model or choose a product with larger nodes.",
            )
        else:
            results += _pass(
                check,
                f"{with_any} of {len(labelled)} nodes expose {resource} (up to {best.normalize():f} a node, "
                f"a pod needs {per_pod})",
            )
    return results


# --- placement: taints and node affinity -------------------------------------------------------------

# Taint effects that keep a pod off a node (PreferNoSchedule only lowers a node's score).
_BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})


def _taints(node: Any) -> list[dict[str, str]]:
    taints = (node.spec.taints if node.spec else None) or []
    return [{"key": t.key, "value": t.value or "", "effect": t.effect} for t in taints]


def _requirement_holds(requirement: NodeSelectorRequirement, labels: dict[str, str]) -> bool:
    """Kubernetes' node selector requirement semantics (k8s.io/component-helpers, nodeaffinity)."""
    present = requirement.key in labels
    value = labels.get(requirement.key, "")
    operator = requirement.operator
    if operator in {"Gt", "Lt"}:
        if not present or not value.lstrip("-").isdigit():
            return False
        bound = int(requirement.values[0])
        return int(value) > bound if operator == "Gt" else int(value) < bound
    holds = {
        "In": present and value in requirement.values,
        "NotIn": not (present and value in requirement.values),
        "Exists": present,
        "DoesNotExist": not present,
    }
    return holds[operator]


def _term_matches(term: NodeSelectorTerm, labels: dict[str, str]) -> bool:
    return all(_requirement_holds(r, labels) for r in term.match_expressions)


def _affinity_allows(model: ServedModel, labels: dict[str, str]) -> bool:
    terms = model.node_affinity.required_terms() if model.node_affinity else ()
    return not terms or any(_term_matches(term, labels) for term in terms)


def _untolerated(node: Any, tolerations: list[Toleration]) -> list[str]:
    """The node's blocking taints no toleration of the pod matches, as key=value:effect."""
    return [
        _taint_text(t)
        for t in _taints(node)
        if t["effect"] in _BLOCKING_EFFECTS and not any(tol.tolerates(t) for tol in tolerations)
    ]


def _taint_text(taint: dict[str, str]) -> str:
    text = f"{taint['key']}={taint['value']}" if taint["value"] else taint["key"]
    return f"{text}:{taint['effect']}"


def gpu_placement(cluster: Cluster, stack: StackFacts) -> list[CheckResult]:
    """Per model with a GPU product: among the nodes carrying it, those its nodeAffinity admits, and
    among those, the ones whose NoSchedule/NoExecute taints the pod tolerates (grace:gpu.tolerations,
    plus the arm64 ones a GH200 product implies). No such node: the pods stay Pending for ever."""
    models = [m for m in stack.config.served_models() if m.gpus and m.gpu_product]
    if not models:
        return [CheckResult("GPU placement", Outcome.SKIP, "no model names a GPU product")]
    nodes = cluster.nodes()
    results: list[CheckResult] = []
    for model in models:
        check = f"placement {model.key}"
        carrying = [n for n in nodes if _labels(n).get(GPU_PRODUCT_LABEL) == model.gpu_product]
        if not carrying:
            continue  # the GPU nodes check already fails this product
        admitted = [n for n in carrying if _affinity_allows(model, _labels(n))]
        if not admitted:
            results += _fail(
                check,
                f"grace:models nodeAffinity of {model.key} admits none of the {len(carrying)} "
                f"{model.gpu_product} node(s)",
                f"widen its nodeAffinity (kubectl get nodes -L {GPU_PRODUCT_LABEL} shows the labels).",
            )
            continue
        # What the rendered pods carry (manifests/vllm_server.py), read back as tolerations.
        tolerations = [Toleration.model_validate(t) for t in pod_tolerations(model)]
        blocked = {_name(n): _untolerated(n, tolerations) for n in admitted}
        usable = [name for name, taints in blocked.items() if not taints]
        if usable:
            tolerated = sorted({t for n in admitted for t in (_taint_text(x) for x in _taints(n))})
            note = f", tolerating {', '.join(tolerated)}" if tolerated else ", no taints"
            results += _pass(
                check, f"{len(usable)} of {len(admitted)} {model.gpu_product} node(s) admit its pods{note}"
            )
            continue
        taints = sorted({t for ts in blocked.values() for t in ts})
        reserved = any(t.startswith(f"{cluster_facts.RESERVATION_TAINT_KEY}=") for t in taints)
        fix = (
            f"NRP reserves these nodes ({cluster_facts.SPECIAL_USE_SOURCE}): once your group is approved, "
            "add the toleration to grace:gpu.tolerations, e.g. {key: "
            + cluster_facts.RESERVATION_TAINT_KEY
            + ", operator: Equal, value: <reservation>, effect: NoSchedule}; or choose another product."
            if reserved
            else "add a matching toleration to grace:gpu.tolerations, or choose another product."
        )
        results += _fail(
            check,
            f"every {model.gpu_product} node its pods may use is tainted {', '.join(taints)}, which "
            "grace:gpu.tolerations does not tolerate: its pods would stay Pending",
            fix,
        )
    return results or [CheckResult("GPU placement", Outcome.SKIP, "no node carries a configured product")]


# --- the job image ----------------------------------------------------------------------------------


def _repository(image: str) -> str:
    """An image reference without its tag or digest."""
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def job_image(cluster: Cluster, stack: StackFacts) -> list[CheckResult]:
    """The committed stacks name a stand-in repository: every pod would fail to pull it."""
    del cluster
    image = stack.config.images.job
    if _repository(image) == c.PLACEHOLDER_JOB_IMAGE_REPOSITORY:
        return _fail(
            "job image",
            f"grace:images.job={image} is the committed placeholder, not your image",
            "build and push jobs/Dockerfile to your NRP GitLab project's registry (README step 6), then "
            "pulumi config set --path grace:images.job "
            "gitlab-registry.nrp-nautilus.io/<group>/<project>:<tag>.",
        )
    return _pass("job image", f"{image} (not the placeholder {c.PLACEHOLDER_JOB_IMAGE_REPOSITORY})")


_REGISTRY_SECRET_TYPES = ("kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg")


def image_pull_secret(cluster: Cluster, stack: StackFacts) -> list[CheckResult]:
    """grace:images.pullSecret must name a registry credential in the namespace: a missing one leaves the
    download pods in ImagePullBackOff (and, were they past it, every matrix pod with its GPUs)."""
    secret_name = stack.config.images.pull_secret
    if secret_name is None:
        return [CheckResult("image pull secret", Outcome.SKIP, "grace:images.pullSecret is not set")]
    check = f"pull secret {secret_name}"
    ns = stack.config.namespace.name
    namespace_absent = stack.config.namespace.create and cluster.namespace(ns) is None
    secret = None if namespace_absent else cluster.secret(ns, secret_name)
    create = (
        f"kubectl -n {ns} create secret docker-registry {secret_name} "
        "--docker-server=gitlab-registry.nrp-nautilus.io --docker-username=<deploy token user> "
        "--docker-password=<deploy token> (a GitLab deploy token with read_registry)."
    )
    if secret is None:
        return _fail(check, f"does not exist in {ns}: the job image cannot be pulled", create)
    if secret.type not in _REGISTRY_SECRET_TYPES:
        return _fail(
            check,
            f"exists in {ns} but has type {secret.type}, not {_REGISTRY_SECRET_TYPES[0]}",
            f"kubectl -n {ns} delete secret {secret_name}, then {create}",
        )
    return _pass(check, f"exists in {ns} ({secret.type})")


# --- monitoring CRDs -------------------------------------------------------------------------------


def monitoring_crds(cluster: Cluster, stack: StackFacts) -> list[CheckResult]:
    check = "Prometheus Operator CRDs"
    if not stack.config.monitoring.enabled:
        return [CheckResult(check, Outcome.SKIP, "grace:monitoring.enabled is false")]
    names = {_name(crd) for crd in cluster.custom_resource_definitions()}
    if SERVICE_MONITOR_CRD in names:
        return _pass(check, f"{SERVICE_MONITOR_CRD} exists ({SERVICE_MONITOR_KIND} objects will be accepted)")
    return _fail(
        check,
        f"{SERVICE_MONITOR_CRD} does not exist, so pulumi up cannot create the {SERVICE_MONITOR_KIND}s",
        "set grace:monitoring.enabled: false, or install the Prometheus Operator first.",
    )


# --- secrets ---------------------------------------------------------------------------------------


def _managed_by_pulumi(labels: dict[str, str] | None) -> bool:
    key, value = _MANAGED_BY_PULUMI
    return (labels or {}).get(key) == value


def hf_token_secret(cluster: Cluster, stack: StackFacts) -> list[CheckResult]:
    """The gated models' download reads Secret huggingface-token, which pulumi up creates from
    grace:hfToken. So: the stack must hold grace:hfToken, and no Secret of that name made by hand may
    stand in the way (Pulumi refuses to create an object that already exists)."""
    check = f"Secret {c.HF_TOKEN_SECRET}"
    gated = [m.key for m in stack.config.served_models() if m.gated]
    if not gated:
        return [CheckResult(check, Outcome.SKIP, "no configured model is gated")]
    ns = stack.config.namespace.name
    if not stack.hf_token_set:
        return _fail(
            check,
            f"{', '.join(gated)} {'is' if len(gated) == 1 else 'are'} gated but grace:hfToken is not set",
            "pulumi config set --secret grace:hfToken <token> (a token whose account accepted each licence).",
        )
    namespace_absent = stack.config.namespace.create and cluster.namespace(ns) is None
    secret = None if namespace_absent else cluster.secret(ns, c.HF_TOKEN_SECRET)
    if secret is None:
        return _pass(check, f"absent in {ns}; pulumi up creates it from grace:hfToken")
    if _managed_by_pulumi(secret.metadata.labels if secret.metadata else None):
        has_key = c.HF_TOKEN_SECRET_KEY in (secret.data or {})
        if has_key:
            return _pass(check, f"exists in {ns}, created by pulumi up from grace:hfToken")
        return _fail(
            check,
            f"exists in {ns} without the key '{c.HF_TOKEN_SECRET_KEY}'",
            "run pulumi up again to rewrite it from grace:hfToken.",
        )
    return _fail(
        check,
        f"exists in {ns} but was not created by Pulumi, so pulumi up would fail to create it",
        f"kubectl -n {ns} delete secret {c.HF_TOKEN_SECRET} (pulumi up recreates it from grace:hfToken).",
    )


CHECKS: list[Check] = [
    server_version,
    namespace_exists,
    quota_admits_plan,
    storage_classes,
    gpu_nodes,
    gpu_placement,
    monitoring_crds,
    hf_token_secret,
    job_image,
    image_pull_secret,
]


def run_checks(cluster: Cluster, stack: StackFacts, checks: Iterable[Check] = CHECKS) -> list[CheckResult]:
    """Every check's lines; an API refusal (403, 500...) fails that check only, with the API's reason."""
    results: list[CheckResult] = []
    for check in checks:
        try:
            results += check(cluster, stack)
        except ApiException as exc:
            name = check.__name__.replace("_", " ")
            results += _fail(
                name,
                f"the API answered HTTP {exc.status} {exc.reason or ''}".rstrip(),
                "ask the namespace admin for read access to this object (kubectl auth can-i --list).",
            )
    return results
