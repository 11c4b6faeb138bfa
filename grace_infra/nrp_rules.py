"""NRP usage rules as plain functions over the parsed config.

Each rule takes a `GraceConfig` and returns `Finding`s; `check_config` runs every rule in `RULES`,
`enforce` raises `PolicyViolation` for the first error and logs warnings. `build_stack` calls both
before any resource is built, so `python -m grace_infra render` and `pulumi preview` refuse the same
stacks. Rules: https://nrp.ai/documentation/userdocs/start/policies/ and the storage pages.

To add a rule: write `def my_rule(config: GraceConfig) -> list[Finding]` and append it to `RULES`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from grace_infra import constants as c
from grace_infra.config import quantities
from grace_infra.config.catalog import ServingMode
from grace_infra.config.stack_config import AccessMode, ExceptionRule, GraceConfig, ServedModel, VolumeConfig
from grace_infra.errors import PolicyViolation
from grace_infra.manifests import download_job, vllm_server
from grace_infra.nrp import cluster_facts
from grace_infra.planning.gpu_hours import gpu_hour_plan
from grace_infra.planning.matrix import plan_experiments, plan_jobs
from grace_infra.planning.sizing import GI, model_server_resources, parse_quantity, worker_resources
from grace_infra.planning.study_bundle import StudyBundle

__all__ = ["RULES", "Finding", "PolicyViolation", "Severity", "check_config", "check_secrets", "enforce"]


class Severity(StrEnum):
    ERROR = "error"  # the stack is refused
    WARNING = "warning"  # the stack is built; the message is shown by render and `pulumi preview`


@dataclass(frozen=True)
class Finding:
    """One rule's verdict on one key or model."""

    rule: str  # stable id, e.g. "storage-forbidden-class"
    severity: Severity
    model: str | None  # the model key the finding is about, None for stack-wide findings
    message: str  # one sentence naming the `grace:` key or model and the offending value

    def to_json(self) -> dict[str, str | None]:
        return {
            "rule": self.rule, "severity": str(self.severity), "model": self.model, "message": self.message,
        }


Rule = Callable[[GraceConfig], Iterable[Finding]]

# Volumes every Job pod mounts at once, possibly on different nodes.
_SHARED_VOLUMES = ("input", "output", "logs")
# Volumes Jobs write to: ReadOnlyMany is not enough.
_WRITTEN_VOLUMES = ("output", "logs")


def _volumes(config: GraceConfig) -> dict[str, VolumeConfig]:
    return {name: getattr(config.storage, name) for name in _SHARED_VOLUMES}


def _volume_class(config: GraceConfig, volume: VolumeConfig) -> str:
    return volume.storage_class or config.storage.shared_class


# --- storage rules -------------------------------------------------------------------------------


def forbidden_storage_class(config: GraceConfig) -> list[Finding]:
    """rook-cephfs-ucsd may be purged without notice (cluster_facts.STORAGE_SOURCE): never put study data
    or weights on it. Classes NRP does not have at all are refused while parsing the config."""
    keyed = {
        "storage.sharedClass": config.storage.shared_class,
        "storage.weightsClass": config.storage.weights_class,
    }
    for name, volume in _volumes(config).items():
        if volume.storage_class:
            keyed[f"storage.{name}.storageClass"] = volume.storage_class
    return [
        Finding(
            "storage-forbidden-class", Severity.ERROR, None,
            f"grace:{key}={value!r} is refused: NRP may purge that class without notice; use rook-cephfs.",
        )
        for key, value in keyed.items()
        if value in cluster_facts.PURGE_PRONE_STORAGE_CLASSES
    ]


def many_writers_on_block_class(config: GraceConfig) -> list[Finding]:
    """Ceph RBD (rook-ceph-block*) attaches a filesystem volume to one node: ReadWriteMany cannot bind."""
    findings = []
    for name, volume in _volumes(config).items():
        storage_class = _volume_class(config, volume)
        if (
            storage_class in cluster_facts.BLOCK_STORAGE_CLASSES
            and volume.access_mode == AccessMode.READ_WRITE_MANY
        ):
            findings.append(Finding(
                "storage-rwx-on-block", Severity.ERROR, None,
                f"grace:storage.{name}.accessMode=ReadWriteMany is impossible on block class "
                f"{storage_class!r}; use a CephFS class such as rook-cephfs.",
            ))
    return findings


def single_node_shared_volume(config: GraceConfig) -> list[Finding]:
    """Every Job pod mounts input, output and logs at once, on any node: they need a *Many mode."""
    findings = []
    for name, volume in _volumes(config).items():
        mode = volume.access_mode
        if mode in (AccessMode.READ_WRITE_ONCE, AccessMode.READ_WRITE_ONCE_POD):
            findings.append(Finding(
                "storage-single-node-shared", Severity.ERROR, None,
                f"grace:storage.{name}.accessMode={mode.value} cannot serve several Job pods on different "
                f"nodes; use {'ReadOnlyMany' if name == 'input' else 'ReadWriteMany'}.",
            ))
        elif name in _WRITTEN_VOLUMES and mode == AccessMode.READ_ONLY_MANY:
            findings.append(Finding(
                "storage-read-only-output", Severity.ERROR, None,
                f"grace:storage.{name}.accessMode=ReadOnlyMany cannot take the Jobs' writes; "
                "use ReadWriteMany.",
            ))
    return findings


# --- capacity rules ------------------------------------------------------------------------------


def _plain(number: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: 31.9, not 31.900 or 3.19E+1."""
    return f"{number.normalize():f}"


def gpu_resources(config: GraceConfig) -> list[str]:
    """The distinct GPU extended resources the served models request, in config order."""
    return list(dict.fromkeys(model.gpu_resource for model in config.served_models()))


def _quota_limits(config: GraceConfig) -> dict[str, tuple[Decimal, str]]:
    """What the namespace quota allows of each resource a server requests, with its grace:namespace.quota
    key. The quota caps each GPU resource separately (requests.nvidia.com/a100, requests.nvidia.com/gpu)."""
    quota = config.namespace.quota
    limits = {
        f"{resource} GPUs": (Decimal(quota.requests_gpu), "requestsGpu") for resource in gpu_resources(config)
    }
    limits["CPU cores"] = (parse_quantity(quota.requests_cpu), "requestsCpu")
    limits["memory GiB"] = (parse_quantity(quota.requests_memory) / GI, "requestsMemory")
    return limits


def _server_requests(models: Iterable[ServedModel], config: GraceConfig) -> dict[str, Decimal]:
    """What the model servers' vLLM containers request together, by the resources of `_quota_limits`."""
    sums = dict.fromkeys(_quota_limits(config), Decimal(0))
    for model in models:
        res = model_server_resources(model)
        sums[f"{res.gpu_resource_name} GPUs"] += res.gpus
        sums["CPU cores"] += Decimal(str(res.cpu_request))
        sums["memory GiB"] += res.memory_request_gi
    return sums


def quota_fits(config: GraceConfig) -> list[Finding]:
    """Persistent servers all run at once for the campaign, so together they must fit the quota.

    Job-mode servers come and go with their Jobs: `all_pods_fit_quota` warns when everything that
    starts at once would not fit.
    """
    quota = config.namespace.quota
    served = config.served_models()
    persistent = _server_requests((m for m in served if m.serving_mode == ServingMode.PERSISTENT), config)
    findings = []
    for what, (limit, key) in _quota_limits(config).items():
        if persistent[what] > limit:
            findings.append(Finding(
                "quota-exceeded", Severity.ERROR, None,
                f"the persistent model servers request {_plain(persistent[what])} {what} together but "
                f"grace:namespace.quota.{key} allows {_plain(limit)}.",
            ))
    pvcs = len(_SHARED_VOLUMES) + len(served)
    if pvcs > quota.persistent_volume_claims:
        findings.append(Finding(
            "quota-exceeded", Severity.ERROR, None,
            f"the stack needs {pvcs} PersistentVolumeClaims but grace:namespace.quota.persistentVolumeClaims "
            f"allows {quota.persistent_volume_claims}.",
        ))
    return findings


def _pod_requests(config: GraceConfig) -> dict[str, dict[str, Decimal]]:
    """What each distinct pod the stack creates requests, by the resources of `_quota_limits`: a
    persistent server, each experiment Job's pod (its worker, plus the vLLM sidecar in job mode) and each
    weight download. The quota admits a pod only when the whole of it fits."""
    pods: dict[str, dict[str, Decimal]] = {}
    for model in config.served_models():
        if model.serving_mode == ServingMode.PERSISTENT:
            pods[f"server {model.server_name}"] = _server_requests([model], config)
        download = dict.fromkeys(_quota_limits(config), Decimal(0))
        download["CPU cores"] = Decimal(str(c.DOWNLOAD_CPU_REQUEST))
        download["memory GiB"] = Decimal(c.DOWNLOAD_MEMORY_REQUEST_GI)
        pods[f"Job {download_job.download_job_name(model)}"] = download
    worker = worker_resources(config)
    for job in plan_jobs(config, StudyBundle()):
        pod = _server_requests([job.model] if job.sidecar else [], config)
        pod["CPU cores"] += Decimal(str(worker.cpu_request))
        pod["memory GiB"] += worker.memory_request_gi
        pods[f"Job {job.name}"] = pod
    return pods


def pod_fits_quota(config: GraceConfig) -> list[Finding]:
    """A pod whose own requests exceed the namespace quota is refused by the API server's quota
    admission on every attempt: it never starts, whatever else finishes. An error, unlike the queueing
    `all_pods_fit_quota` warns about."""
    limits = _quota_limits(config)
    findings = []
    for pod, requests in _pod_requests(config).items():
        for what, (limit, key) in limits.items():
            if requests[what] > limit:
                findings.append(Finding(
                    "quota-unfittable", Severity.ERROR, None,
                    f"the pod of {pod} requests {_plain(requests[what])} {what} but "
                    f"grace:namespace.quota.{key} allows {_plain(limit)} in all, so it can never start; "
                    "ask NRP for a larger quota (and set it there) or make that pod smaller.",
                ))
    return findings


def all_pods_fit_quota(config: GraceConfig) -> list[Finding]:
    """`pulumi up` creates every experiment Job at once (none is awaited), and an extraction pod holds
    its requests while it waits for its exp1 file. So at the start every Job pod (worker, plus the vLLM
    sidecar in job mode) runs beside the persistent servers. Over the quota, Kubernetes refuses the
    extra pods and the Job controller retries them later: the work queues, nothing fails; warn."""
    jobs = plan_jobs(config, StudyBundle())  # the Job list does not depend on the study files' content
    servers = [m for m in config.served_models() if m.serving_mode == ServingMode.PERSISTENT]
    servers += [job.model for job in jobs if job.sidecar]
    worker = worker_resources(config)
    total = _server_requests(servers, config)
    total["CPU cores"] += len(jobs) * Decimal(str(worker.cpu_request))
    total["memory GiB"] += len(jobs) * worker.memory_request_gi
    total["pods"] = Decimal(len(servers) - sum(1 for job in jobs if job.sidecar) + len(jobs))
    limits = {**_quota_limits(config), "pods": (Decimal(config.namespace.quota.pods), "pods")}
    return [
        Finding(
            "quota-queued", Severity.WARNING, None,
            f"the {len(jobs)} experiment Jobs start together with the model servers and would request "
            f"{_plain(total[what])} {what} but grace:namespace.quota.{key} allows {_plain(limit)}; the extra "
            "pods wait until others finish.",
        )
        for what, (limit, key) in limits.items()
        if total[what] > limit
    ]


# --- model-server rules ----------------------------------------------


def _model_index(config: GraceConfig, key: str) -> int:
    return next(i for i, m in enumerate(config.models) if m.key == key)


def stateful_pod_gpus(config: GraceConfig) -> list[Finding]:
    """NRP: at most 2 GPUs in a Deployment/StatefulSet pod unless an exception was granted."""
    findings = []
    for model in config.served_models():
        if model.serving_mode != ServingMode.PERSISTENT or model.gpus <= c.NRP_MAX_GPUS_STATEFUL_POD:
            continue
        if config.has_exception(model.key, ExceptionRule.GPUS_PER_STATEFUL_POD):
            continue
        i = _model_index(config, model.key)
        findings.append(Finding(
            "gpus-per-stateful-pod", Severity.ERROR, model.key,
            f"model {model.key} asks for {model.gpus} GPUs in its StatefulSet pod but NRP allows at most "
            f"{c.NRP_MAX_GPUS_STATEFUL_POD} there; set grace:models[{i}].servingMode=job or add a "
            f"grace:exceptions entry (model {model.key}, rule {ExceptionRule.GPUS_PER_STATEFUL_POD.value}).",
        ))
    return findings


def pod_gpus(config: GraceConfig) -> list[Finding]:
    """NRP: no pod may request more than 8 GPUs, whatever its kind."""
    return [
        Finding(
            "gpus-per-pod", Severity.ERROR, model.key,
            f"model {model.key} asks for {model.gpus} GPUs in one pod but NRP allows at most "
            f"{c.NRP_MAX_GPUS_ANY_POD} GPUs per pod.",
        )
        for model in config.served_models()
        if model.gpus > c.NRP_MAX_GPUS_ANY_POD
    ]


def tensor_parallel_layout(config: GraceConfig) -> list[Finding]:
    """vLLM shards attention heads across tensor-parallel ranks: TP must divide the heads. (That TP uses
    every GPU is GraceConfig's own validation, which refuses tensorParallelSize != gpus before any rule.)"""
    findings = []
    for model in config.served_models():
        tp = model.tensor_parallel_size
        if model.num_attention_heads % tp:
            findings.append(Finding(
                "tensor-parallel-heads", Severity.ERROR, model.key,
                f"model {model.key} has {model.num_attention_heads} attention heads, which tensor parallel "
                f"size {tp} does not divide; use a divisor of {model.num_attention_heads}.",
            ))
    return findings


def container_limit_findings(
    pod_spec: Mapping[str, Any], owner: str, model: str | None = None
) -> list[Finding]:
    """Every container (init, sidecar, main) of a rendered pod spec: each limit <= 1.2 x its request."""
    findings = []
    containers = [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]
    for container in containers:
        resources = container.get("resources", {})
        requests, limits = resources.get("requests", {}), resources.get("limits", {})
        for resource, limit in limits.items():
            request = requests.get(resource, limit)  # Kubernetes defaults a missing request to the limit
            allowed = quantities.parse_quantity(request) * Decimal(str(c.NRP_LIMIT_TO_REQUEST_MAX_RATIO))
            if quantities.parse_quantity(limit) > allowed:
                findings.append(Finding(
                    "limit-over-request", Severity.ERROR, model,
                    f"{owner} container {container.get('name')} has {resource} limit {limit} over "
                    f"{c.NRP_LIMIT_TO_REQUEST_MAX_RATIO} x its request {request}; "
                    "NRP allows a limit at most 20 % above its request.",
                ))
    return findings


def model_server_limits(config: GraceConfig) -> list[Finding]:
    """The limit rule applied to exactly the containers the program will render for every model."""
    findings = []
    for model in config.served_models():
        if model.serving_mode == ServingMode.PERSISTENT:
            spec = vllm_server.statefulset_pod_spec(model, config)
            owner = f"StatefulSet {model.server_name}"
        else:
            init_containers, _ = vllm_server.vllm_sidecar_parts(model, config)
            spec = {"initContainers": init_containers}
            owner = f"model {model.key}'s job-mode sidecar"
        findings.extend(container_limit_findings(spec, owner, model.key))
        download = download_job.download_job_manifest(model, config)["spec"]["template"]["spec"]
        owner = f"Job {download_job.download_job_name(model)}"
        findings.extend(container_limit_findings(download, owner, model.key))
    return findings


def two_week_limit(config: GraceConfig) -> list[Finding]:
    """NRP deletes workloads older than two weeks: warn when a persistent server must outlive that."""
    days = config.plan.campaign_days
    if days <= c.NRP_MAX_WORKLOAD_DAYS:
        return []
    return [
        Finding(
            "two-week-limit", Severity.WARNING, model.key,
            f"model {model.key} runs as a persistent server for grace:plan.campaignDays={days:g} days "
            f"but NRP deletes workloads after {c.NRP_MAX_WORKLOAD_DAYS} days; use servingMode=job or add a "
            f"grace:exceptions entry (model {model.key}, rule {ExceptionRule.TWO_WEEK_LIMIT.value}).",
        )
        for model in config.served_models()
        if model.serving_mode == ServingMode.PERSISTENT
        and not config.has_exception(model.key, ExceptionRule.TWO_WEEK_LIMIT)
    ]


def persistent_idle_gpus(config: GraceConfig) -> list[Finding]:
    """NRP counts GPUs used under 40 % of what a pod requests against the namespace, and flags pods
    using under 20 % or over 150 % of their memory request (cluster_facts.POLICY_SOURCE): a persistent
    server holds its GPUs for the whole campaign and works only while the matrix runs on it. Warn with
    the share of its planned GPU-hours it would be busy."""
    persistent = {m.key: m for m in config.served_models() if m.serving_mode == ServingMode.PERSISTENT}
    if not persistent:
        return []
    bundle, _ = plan_experiments(config)
    planned = {m.model: m for m in gpu_hour_plan(config, bundle).models}
    findings = []
    for key, model in persistent.items():
        hours = planned.get(key)
        campaign_hours = config.plan.campaign_days * c.HOURS_PER_DAY
        # Rounded as plan.json rounds them, so the warning and the GPU-hour table print the same numbers.
        held = round(hours.persistent_gpu_hours if hours else model.gpus * campaign_hours, 2)
        busy = round(model.gpus * hours.busy_wall_hours, 2) if hours else 0.0
        instead = (
            f"servingMode=job would hold {round(hours.job_gpu_hours, 2):,.1f}" if hours
            else "it runs no experiment of the matrix"
        )
        findings.append(Finding(
            "persistent-idle-gpus", Severity.WARNING, key,
            f"model {key} runs as a persistent server: busy {busy:,.1f} of the {held:,.1f} GPU-hours it "
            f"holds over grace:plan.campaignDays={config.plan.campaign_days:g} ({busy / held:.1%}); NRP "
            f"counts GPUs used under {c.NRP_IDLE_GPU_UTILISATION:.0%} of their request against the "
            f"namespace; {instead}.",
        ))
    return findings


@dataclass(frozen=True)
class GpuFit:
    """GPU memory of one model server, in GB (10^9 bytes), as vLLM will budget it."""

    usable_gb: float  # gpus x memory_gb x gpu_memory_utilization
    weights_gb: float
    runtime_gb: float  # CUDA context, activations and CUDA graphs, per GPU x gpus
    kv_bytes_per_token: int  # 2 (K and V) x layers x kv_heads x head_dim x bytes per element
    kv_gb: float  # KV cache of one max-model-len sequence

    @property
    def needed_gb(self) -> float:
        return self.weights_gb + self.runtime_gb + self.kv_gb


def gpu_fit(model: Any, memory_gb: float) -> GpuFit:
    """Weights + runtime + the KV cache of one full-length sequence against what vLLM may allocate."""
    kv_per_token = model.kv_bytes_per_token
    return GpuFit(
        usable_gb=model.gpus * memory_gb * model.gpu_memory_utilization,
        weights_gb=model.weights_gb,
        runtime_gb=model.gpus * c.VLLM_RUNTIME_OVERHEAD_GB_PER_GPU,
        kv_bytes_per_token=kv_per_token,
        kv_gb=kv_per_token * model.max_model_len / 1e9,
    )


def gpu_memory_fit(config: GraceConfig) -> list[Finding]:
    """Warn when a model cannot hold even one max-model-len sequence: vLLM refuses to start then."""
    findings = []
    for model in config.served_models():
        memory_gb = cluster_facts.gpu_memory_gb(model.gpu_product, config.gpu.memory_gb)
        fit = gpu_fit(model, memory_gb)
        if fit.needed_gb <= fit.usable_gb:
            continue
        findings.append(Finding(
            "gpu-memory-fit", Severity.WARNING, model.key,
            f"model {model.key} needs {fit.needed_gb:.1f} GB ({fit.weights_gb:.1f} GB weights + "
            f"{fit.kv_gb:.1f} GB KV cache for one {model.max_model_len}-token sequence + "
            f"{fit.runtime_gb:.1f} GB runtime) but {model.gpus} x {memory_gb:g} GB GPUs at "
            f"gpu-memory-utilization {model.gpu_memory_utilization:g} give {fit.usable_gb:.1f} GB; "
            "select 80 GB cards (grace:gpu) or a quantized checkpoint, or lower maxModelLen.",
        ))
    return findings


# --- GPU resource rules (cluster_facts.GPU_SOURCE) -----------------------------------------------


def _resource_key(config: GraceConfig, model: ServedModel) -> str:
    """The config key that set a model's GPU resource, for the message."""
    i = _model_index(config, model.key)
    if config.models[i].gpu_resource:
        return f"grace:models[{i}].gpuResource"
    return "grace:gpu.resourceName" if config.gpu.resource_name else "the product table"


def gpu_resource_matches_product(config: GraceConfig) -> list[Finding]:
    """NRP advertises each special GPU only under its own resource (A100 nodes offer nvidia.com/a100 and
    no nvidia.com/gpu): a pod pairing a product with another resource stays Pending forever."""
    findings = []
    for model in config.served_models():
        if not model.gpu_product:
            continue
        expected = cluster_facts.gpu_resource_for_product(model.gpu_product)
        if model.gpu_resource == expected:
            continue
        findings.append(Finding(
            "gpu-resource-product", Severity.ERROR, model.key,
            f"model {model.key} selects nvidia.com/gpu.product={model.gpu_product}, which NRP serves as "
            f"{expected}, but requests {model.gpu_resource} ({_resource_key(config, model)}); the pod could "
            f"never schedule: request {expected} or select another product.",
        ))
    return findings


def reserved_gpu_resource(config: GraceConfig) -> list[Finding]:
    """A100, H100, H200 and GH200 quotas are 0 in every namespace until NRP raises them: warn."""
    reserved = {kind.resource: kind for kind in cluster_facts.GPU_KINDS if kind.reservation}
    by_resource: dict[str, list[str]] = {}
    for model in config.served_models():
        if model.gpu_resource in reserved:
            by_resource.setdefault(model.gpu_resource, []).append(model.key)
    return [
        Finding(
            "gpu-reservation-needed", Severity.WARNING, None,
            f"{', '.join(keys)} request {resource} ({reserved[resource].name}), whose namespace quota NRP "
            "keeps at 0 until it grants a reservation; without one these pods stay Pending (the generic "
            "pool needs none: Pulumi.nrp-generic.yaml).",
        )
        for resource, keys in by_resource.items()
    ]


RULES: list[Rule] = [
    forbidden_storage_class,
    many_writers_on_block_class,
    single_node_shared_volume,
    quota_fits,
    pod_fits_quota,
    all_pods_fit_quota,
    stateful_pod_gpus,
    pod_gpus,
    tensor_parallel_layout,
    model_server_limits,
    two_week_limit,
    persistent_idle_gpus,
    gpu_memory_fit,
    gpu_resource_matches_product,
    reserved_gpu_resource,
]


def check_config(config: GraceConfig, rules: Iterable[Rule] | None = None) -> list[Finding]:
    """Every finding of every rule, errors and warnings, in rule order."""
    return [finding for rule in (RULES if rules is None else rules) for finding in rule(config)]


def check_secrets(
    config: GraceConfig, *, has_hf_token: bool, has_deepseek_key: bool, plaintext: Iterable[str] = ()
) -> list[Finding]:
    """Secrets the config depends on. Only their presence is known here, never their values.

    `plaintext` names secret keys that hold a value NOT set with `--secret`: it would sit unencrypted
    in Pulumi.<stack>.yaml, so the stack is refused.
    """
    findings = [
        Finding(
            "secret-in-plaintext", Severity.ERROR, None,
            f"grace:{key} is stored in plaintext; run `pulumi config rm grace:{key}` and set it again "
            f"with `pulumi config set --secret grace:{key} <value>`.",
        )
        for key in plaintext
    ]
    findings += [
        Finding(
            "secret-hf-token-missing", Severity.ERROR, model.key,
            f"model {model.key} ({model.hf_repo}) is gated but grace:hfToken is not set; run "
            "`pulumi config set --secret grace:hfToken <token>`.",
        )
        for model in config.served_models()
        if model.gated and not has_hf_token
    ]
    if config.jobs.deepseek_endpoint and not has_deepseek_key:
        findings.append(Finding(
            "secret-deepseek-key-missing", Severity.ERROR, None,
            f"grace:jobs.deepseekEndpoint={config.jobs.deepseek_endpoint!r} is set but grace:deepseekApiKey "
            "is not; run `pulumi config set --secret grace:deepseekApiKey <key>`.",
        ))
    return findings


def enforce(findings: Iterable[Finding], warn: Callable[[str], None]) -> None:
    """Hand every warning to `warn` (the stack passes `pulumi.log.warn`), then raise PolicyViolation
    naming the first error (and how many more)."""
    findings = list(findings)
    for finding in findings:
        if finding.severity == Severity.WARNING:
            warn(f"[{finding.rule}] {finding.message}")
    errors = [f for f in findings if f.severity == Severity.ERROR]
    if errors:
        more = f" ({len(errors) - 1} more policy errors)" if len(errors) > 1 else ""
        raise PolicyViolation(f"[{errors[0].rule}] {errors[0].message}{more}")
