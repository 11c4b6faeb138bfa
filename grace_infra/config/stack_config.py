"""The whole stack configuration as ONE pydantic model, parsed once at the edge (`__main__.py`).

Pulumi keys are `grace:<camelCaseName>`; each top-level field of `GraceConfig` is one key and nested
fields use camelCase aliases. A bad value raises `ConfigError` whose message is one sentence naming
the key, e.g. `grace:models[3].tensorParallelSize=3 must equal gpus=4`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from grace_infra import constants as c
from grace_infra.config.catalog import (
    CATALOG,
    Dtype,
    Exp2ReasoningMode,
    ModelSpec,
    ReasoningEffort,
    ServingMode,
)
from grace_infra.config.quantities import QuantityError, parse_quantity
from grace_infra.errors import ConfigError
from grace_infra.nrp import cluster_facts
from worker.errors import validation_problem

__all__ = ["ConfigError", "Design", "GraceConfig", "ModelConfig", "ServedModel", "required_model_fields"]


class AccessMode(StrEnum):
    READ_WRITE_ONCE = "ReadWriteOnce"
    READ_ONLY_MANY = "ReadOnlyMany"
    READ_WRITE_MANY = "ReadWriteMany"
    READ_WRITE_ONCE_POD = "ReadWriteOncePod"


class Study(StrEnum):
    STUDY1 = "study1"
    STUDY2 = "study2"


class Experiment(StrEnum):
    EXP1 = "exp1"  # raw responses (worker query)
    EXP2 = "exp2"  # probability distributions (worker probs)
    # Extraction of exp1 free text into schema-valid JSON (worker extract). "structured" is what stack
    # files write, and what output folders, file names and Job names keep.
    EXTRACTION = "structured"


class Design(StrEnum):
    """A design of the studies: a folder of study files, jobs/studies/<design>/ (worker.contract.DESIGNS)."""

    RESEARCHERS = "researchers"  # the requests the researchers' own scripts send (the default)
    CHAT = "chat"  # Grace's chat-template design: chat turns, reworded questions, variant summing


class _Section(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, use_enum_values=False
    )


class QuotaConfig(_Section):
    requests_cpu: str = Field(default="200", description="ResourceQuota requests.cpu (cores).")
    requests_memory: str = Field(default="800Gi", description="ResourceQuota requests.memory.")
    requests_gpu: int = Field(
        default=15,
        ge=0,
        description="ResourceQuota requests.<gpu resource> (GPUs), for each GPU resource the models request.",
    )
    persistent_volume_claims: int = Field(
        default=20, ge=0, description="ResourceQuota persistentvolumeclaims."
    )
    pods: int = Field(default=50, ge=0, description="ResourceQuota pods.")

    @field_validator("requests_cpu", "requests_memory")
    @classmethod
    def _quantity(cls, value: str, info: Any) -> str:
        # The quota rule adds requests up against these: a typo must be a config error, not a crash.
        try:
            parse_quantity(value)
        except QuantityError:
            key = to_camel(info.field_name)
            raise ValueError(f"{key}={value!r} is not a Kubernetes quantity such as 200 or 800Gi") from None
        return value


class NamespaceConfig(_Section):
    name: str = Field(default=c.NAMESPACE_DEFAULT, description="Namespace every object is placed in.")
    create: bool = Field(
        default=False,
        description=(
            "Create the Namespace and its ResourceQuota (true), or adopt an existing one by name (false: "
            "NRP creates namespaces through its portal)."
        ),
    )
    quota: QuotaConfig = Field(default_factory=QuotaConfig, description="The namespace's ResourceQuota.")

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
            raise ValueError(f"name={value!r} is not a valid Kubernetes namespace name (a DNS-1123 label)")
        return value


class VolumeConfig(_Section):
    size: str = Field(description="PVC size, a Kubernetes quantity such as 100Gi.")
    access_mode: AccessMode = Field(description="PVC access mode.")
    storage_class: str | None = Field(
        default=None, description="Storage class; defaults to storage.sharedClass."
    )

    @field_validator("size")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9]+(Ki|Mi|Gi|Ti)", value):
            raise ValueError(f"size={value!r} is not a binary quantity such as 10Gi")
        return value

    @field_validator("storage_class")
    @classmethod
    def _known_class(cls, value: str | None) -> str | None:
        return None if value is None else _known_storage_class(value, "storageClass")


def _known_storage_class(value: str, key: str) -> str:
    """A class NRP does not have leaves its claims Pending forever: refuse it while parsing."""
    if value not in cluster_facts.KNOWN_STORAGE_CLASSES:
        known = ", ".join(sorted(cluster_facts.KNOWN_STORAGE_CLASSES))
        raise ValueError(f"{key}={value!r} is not a storage class NRP offers (known: {known})")
    return value


class StorageConfig(_Section):
    shared_class: str = Field(
        default="rook-cephfs", description="CephFS class for input, output and logs (ReadWriteMany)."
    )
    weights_class: str = Field(
        default="rook-ceph-block", description="RBD class for model weights (ReadWriteOnce, fast reads)."
    )
    input: VolumeConfig = Field(
        default_factory=lambda: VolumeConfig(size="5Gi", access_mode=AccessMode.READ_WRITE_MANY),
        description="The study CSVs (grace-input-data).",
    )
    output: VolumeConfig = Field(
        default_factory=lambda: VolumeConfig(size="100Gi", access_mode=AccessMode.READ_WRITE_MANY),
        description="Every Job's results (grace-output-data).",
    )
    logs: VolumeConfig = Field(
        default_factory=lambda: VolumeConfig(size="10Gi", access_mode=AccessMode.READ_WRITE_MANY),
        description="Every Job's logs (grace-logs).",
    )

    @field_validator("shared_class", "weights_class")
    @classmethod
    def _known_class(cls, value: str, info: Any) -> str:
        return _known_storage_class(value, to_camel(info.field_name))


class Toleration(_Section):
    """One Kubernetes toleration, spelled as in a pod spec (key, operator, value, effect)."""

    key: str | None = Field(default=None, description="Taint key; empty with operator Exists: every taint.")
    operator: Literal["Equal", "Exists"] = Field(default="Equal", description="Equal or Exists.")
    value: str | None = Field(default=None, description="Taint value (operator Equal only).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect; unset: every effect."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # The API server's own rules (ValidateTolerations): Exists takes no value, an empty key needs Exists.
        if self.operator == "Exists" and self.value is not None:
            raise ValueError(f"value={self.value!r} must be unset with operator Exists")
        if self.key is None and self.operator != "Exists":
            raise ValueError("key must be set unless operator is Exists")
        return self

    def to_k8s(self) -> dict[str, str]:
        return self.model_dump(by_alias=True, exclude_none=True)

    def tolerates(self, taint: Mapping[str, Any]) -> bool:
        """Kubernetes' matching (k8s.io/api/core/v1 Toleration.ToleratesTaint): same effect or none,
        same key or none, and Exists or an equal value."""
        if self.effect is not None and self.effect != taint.get("effect"):
            return False
        if self.key is not None and self.key != taint.get("key"):
            return False
        return self.operator == "Exists" or (self.value or "") == (taint.get("value") or "")


class NodeSelectorRequirement(_Section):
    key: str = Field(description="Node label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(description="Operator.")
    values: tuple[str, ...] = Field(default=(), description="Label values (In/NotIn: some; Gt/Lt: one).")

    @model_validator(mode="after")
    def _values_fit_operator(self) -> Self:
        need = {"In": "some", "NotIn": "some", "Gt": "one", "Lt": "one"}.get(self.operator, "none")
        count = len(self.values)
        if (need == "some" and not count) or (need == "none" and count) or (need == "one" and count != 1):
            raise ValueError(f"values={list(self.values)!r} does not fit operator {self.operator} ({need})")
        return self

    def to_k8s(self) -> dict[str, Any]:
        rendered: dict[str, Any] = {"key": self.key, "operator": self.operator}
        if self.values:
            rendered["values"] = list(self.values)
        return rendered


class NodeSelectorTerm(_Section):
    match_expressions: tuple[NodeSelectorRequirement, ...] = Field(
        min_length=1, description="Requirements that must all hold."
    )

    def to_k8s(self) -> dict[str, Any]:
        return {"matchExpressions": [r.to_k8s() for r in self.match_expressions]}


class RequiredNodeSelector(_Section):
    node_selector_terms: tuple[NodeSelectorTerm, ...] = Field(
        min_length=1, description="A node qualifies when any term holds."
    )


class PreferredSchedulingTerm(_Section):
    weight: int = Field(ge=1, le=100, description="Weight 1-100.")
    preference: NodeSelectorTerm = Field(description="The term preferred.")


class NodeAffinity(_Section):
    """A pod's `affinity.nodeAffinity`, in Kubernetes' own spelling (the `grace:models[i].nodeAffinity`
    override): required terms restrict the nodes a model's GPU pods may use beside the product label."""

    required_during_scheduling_ignored_during_execution: RequiredNodeSelector | None = Field(
        default=None, description="Nodes the pod may run on (any term)."
    )
    preferred_during_scheduling_ignored_during_execution: tuple[PreferredSchedulingTerm, ...] = Field(
        default=(), description="Nodes the scheduler prefers."
    )

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.required_during_scheduling_ignored_during_execution is None and not (
            self.preferred_during_scheduling_ignored_during_execution
        ):
            raise ValueError(
                "nodeAffinity must set requiredDuringSchedulingIgnoredDuringExecution or "
                "preferredDuringSchedulingIgnoredDuringExecution"
            )
        return self

    def required_terms(self) -> tuple[NodeSelectorTerm, ...]:
        required = self.required_during_scheduling_ignored_during_execution
        return required.node_selector_terms if required else ()

    def to_k8s(self) -> dict[str, Any]:
        rendered: dict[str, Any] = {}
        if self.required_terms():
            rendered["requiredDuringSchedulingIgnoredDuringExecution"] = {
                "nodeSelectorTerms": [t.to_k8s() for t in self.required_terms()]
            }
        preferred = self.preferred_during_scheduling_ignored_during_execution
        if preferred:
            rendered["preferredDuringSchedulingIgnoredDuringExecution"] = [
                {"weight": p.weight, "preference": p.preference.to_k8s()} for p in preferred
            ]
        return rendered


class GpuConfig(_Section):
    resource_name: str | None = Field(
        default=None,
        description=(
            "Extended resource name every GPU pod requests. Unset: derived from each model's node product "
            "by NRP's table (GPU_KINDS: A100 -> nvidia.com/a100, ...; the rest nvidia.com/gpu). "
            "Set it only to pick a pool without naming a product (e.g. nvidia.com/a40)."
        ),
    )
    node_product: str | None = Field(
        default=None,
        description="Default nvidia.com/gpu.product node label value; a model may override it.",
    )
    memory_gb: float = Field(
        default=80.0,
        gt=0,
        description=(
            "Memory of one GPU in GB for the fit check, used when the product's size is not known from "
            "NRP's GPU table or its label."
        ),
    )
    tolerations: tuple[Toleration, ...] = Field(
        default=(),
        description=(
            "Tolerations every GPU pod carries, e.g. {key: nautilus.io/reservation, operator: Equal, value: "
            "<your reservation>, effect: NoSchedule} once NRP has granted a reserved GPU pool; "
            "`grace preflight` checks them against the taints of the nodes carrying each model's product."
        ),
    )

    @field_validator("resource_name")
    @classmethod
    def _known_resource(cls, value: str | None) -> str | None:
        return _known_gpu_resource(value, "resourceName")


def _known_gpu_resource(value: str | None, key: str) -> str | None:
    known = cluster_facts.known_gpu_resources()
    if value is not None and value not in known:
        raise ValueError(f"{key}={value!r} is not a GPU resource NRP advertises (known: {', '.join(known)})")
    return value


class ImagesConfig(_Section):
    vllm: str = Field(description="vLLM OpenAI server image, pinned by tag or digest (never latest).")
    job: str = Field(description="The worker job image built from jobs/Dockerfile, pinned.")
    pull_secret: str | None = Field(
        default=None,
        description=(
            "Name of a kubernetes.io/dockerconfigjson Secret in the namespace that can pull the job image "
            "(a private NRP GitLab registry: a deploy token with read_registry); rendered as "
            "imagePullSecrets on every pod that runs the job image. `grace preflight` checks it exists."
        ),
    )

    @field_validator("pull_secret")
    @classmethod
    def _secret_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", value):
            raise ValueError(f"pullSecret={value!r} is not a valid Secret name (a DNS-1123 subdomain)")
        return value

    @field_validator("vllm", "job")
    @classmethod
    def _pinned(cls, value: str, info: Any) -> str:
        reference = value.rsplit("/", 1)[-1]
        if "@sha256:" not in value and (":" not in reference or reference.endswith(":latest")):
            key = to_camel(info.field_name)
            raise ValueError(f"{key}={value!r} must be pinned to a tag or digest, not latest")
        return value


def _override(field: str) -> Any:
    """An optional per-model setting of a catalog field, with the catalog field's own constraints and
    description, so a stack entry is validated exactly as strictly as a catalog entry."""
    spec = ModelSpec.model_fields[field]
    # annotated_types constraints (Gt, Ge, Le, ...) are dataclasses of their one bound, e.g. {"gt": 0}.
    bounds = [m for m in spec.metadata if is_dataclass(m) and not isinstance(m, type)]
    constraints = {k: v for m in bounds for k, v in asdict(m).items()}
    return Field(default=None, description=f"The catalog's {field}: {spec.description}", **constraints)


def required_model_fields() -> list[str]:
    """The ModelSpec fields without a default: what a model that is not in the catalog must set."""
    return [name for name, info in ModelSpec.model_fields.items() if info.is_required() and name != "key"]


class ModelConfig(_Section):
    """One served model: a catalog key with optional overrides, or a new key with every required field.

    A key of config/catalog.py takes the catalog's values as defaults; any other key is a model the
    catalog does not know, and its entry must set every field the catalog would (hfRepo, gpus, dtype,
    maxModelLen, ...).
    """

    key: str = Field(
        description=(
            "Model key: the vLLM served model name and the suffix of its objects' names. A catalog key "
            "(e.g. gemma-2-2b) or a new one."
        )
    )
    serving_mode: ServingMode = Field(
        default=ServingMode.JOB,
        description=(
            "job (vLLM runs inside the model's Job and frees its GPUs when the work ends; the default, "
            "since NRP bans users whose GPUs idle) or persistent (a StatefulSet for the whole campaign)."
        ),
    )
    gpu_product: str | None = Field(
        default=None,
        description="nvidia.com/gpu.product node label for this model; defaults to gpu.nodeProduct.",
    )
    gpu_resource: str | None = Field(
        default=None,
        description=(
            "GPU extended resource for this model; defaults to gpu.resourceName, else derived from the "
            "product by NRP's table."
        ),
    )
    node_affinity: NodeAffinity | None = Field(
        default=None,
        description=(
            "Kubernetes nodeAffinity for this model's GPU pods, in the pod spec's own spelling, beside the "
            "product's node selector (e.g. required: a region's nodes, or the nodes of a reservation)."
        ),
    )
    design: Design | None = Field(
        default=None,
        description=(
            "The design of the studies this model runs (researchers or chat); unset: "
            "grace:experiments.design."
        ),
    )
    await_readiness: bool = Field(
        default=False,
        description=(
            "persistent mode: make `pulumi up` wait for the server to be Ready (weights loaded; the "
            "download Job itself is always awaited). Off by default: the Jobs wait for /health in the "
            "cluster, and a busy GPU pool can keep a pod Pending for longer than any sensible timeout."
        ),
    )
    hf_repo: str | None = _override("hf_repo")
    revision: str | None = _override("revision")
    gated: bool | None = _override("gated")
    params_billion: float | None = _override("params_billion")
    active_params_billion: float | None = _override("active_params_billion")
    weights_gb: float | None = _override("weights_gb")
    num_attention_heads: int | None = _override("num_attention_heads")
    num_kv_heads: int | None = _override("num_kv_heads")
    num_layers: int | None = _override("num_layers")
    head_dim: int | None = _override("head_dim")
    gpus: int | None = _override("gpus")
    tensor_parallel_size: int | None = _override("tensor_parallel_size")
    dtype: Dtype | None = _override("dtype")
    kv_cache_bytes_per_element: int | None = _override("kv_cache_bytes_per_element")
    max_model_len: int | None = _override("max_model_len")
    gpu_memory_utilization: float | None = _override("gpu_memory_utilization")
    weights_pvc_gi: int | None = _override("weights_pvc_gi")
    cpu_request: float | None = _override("cpu_request")
    memory_request_gi: int | None = _override("memory_request_gi")
    extra_args: tuple[str, ...] | None = _override("extra_args")
    extra_env: dict[str, str] | None = _override("extra_env")
    stop: tuple[str, ...] | None = _override("stop")
    tiktoken_files: tuple[str, ...] | None = _override("tiktoken_files")
    answer_prefix: str | None = _override("answer_prefix")
    reasoning_tokens: int | None = _override("reasoning_tokens")
    planned_reasoning_tokens: int | None = _override("planned_reasoning_tokens")
    reasoning_format: str | None = _override("reasoning_format")
    reasoning_effort: ReasoningEffort | None = _override("reasoning_effort")
    exp2_reasoning_mode: Exp2ReasoningMode | None = _override("exp2_reasoning_mode")
    load_budget_s: int | None = _override("load_budget_s")
    throughput_rps: float | None = _override("throughput_rps")

    @field_validator("gpu_resource")
    @classmethod
    def _known_resource(cls, value: str | None) -> str | None:
        return _known_gpu_resource(value, "gpuResource")

    @field_validator("tiktoken_files")
    @classmethod
    def _known_vocabulary(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        unknown = [name for name in value or () if name not in c.TIKTOKEN_SHA256]
        if unknown:
            known = ", ".join(c.TIKTOKEN_SHA256)
            raise ValueError(f"tiktokenFiles={unknown[0]!r} has no recorded SHA-256 (known: {known})")
        return value

    @field_validator("key")
    @classmethod
    def _name_safe(cls, value: str) -> str:
        # The key ends the names of the model's objects (grace-model-weights-<key>, vllm-<key>, Jobs),
        # which Kubernetes limits to 63-character DNS-1123 labels.
        if len(value) > c.MODEL_KEY_MAX_LENGTH or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value):
            raise ValueError(
                f"key={value!r} must be lowercase letters, digits and '-', start and end with a letter "
                f"or digit, and be at most {c.MODEL_KEY_MAX_LENGTH} characters (it ends Kubernetes names)"
            )
        return value

    @model_validator(mode="after")
    def _complete_when_new(self) -> Self:
        if self.key in CATALOG:
            return self
        missing = [to_camel(name) for name in required_model_fields() if getattr(self, name) is None]
        if missing:
            raise ValueError(
                f"key={self.key!r} is not in the catalog ({', '.join(CATALOG)}), so the entry must set "
                f"every required model field; missing: {', '.join(missing)}"
            )
        return self

    def overrides(self) -> dict[str, Any]:
        """The catalog fields this entry sets explicitly."""
        spec_fields = set(ModelSpec.model_fields)
        return {k: v for k, v in self.model_dump(exclude_unset=True).items() if k in spec_fields}

    def spec(self) -> dict[str, Any]:
        """The model's catalog fields: the catalog's values (none for a new key) under this entry's."""
        defaults = CATALOG[self.key].model_dump() if self.key in CATALOG else {}
        return {**defaults, **self.overrides()}


class ServedModel(ModelSpec):
    """A catalog entry with the stack's overrides applied: what the components build from."""

    serving_mode: ServingMode
    gpu_product: str | None
    gpu_resource: str  # the extended resource this model's GPU pods request and limit
    await_readiness: bool = False
    tolerations: tuple[Toleration, ...] = ()  # grace:gpu.tolerations
    node_affinity: NodeAffinity | None = None  # grace:models[i].nodeAffinity
    design: Design = Design.RESEARCHERS

    @property
    def server_name(self) -> str:
        return f"{c.MODEL_SERVER_PREFIX}{self.key}"

    @property
    def weights_pvc_name(self) -> str:
        return f"{c.WEIGHTS_PVC_PREFIX}{self.key}"


class ExperimentsConfig(_Section):
    design: Design = Field(
        default=Design.RESEARCHERS,
        description=(
            "The design of the studies every model runs unless its entry sets `design`: researchers (their "
            "scripts' raw completion requests and their scoring rule, jobs/studies/researchers/) or chat "
            "(Grace's chat-template design, jobs/studies/chat/); `grace studies diff chat` lists every "
            "difference."
        ),
    )
    studies: tuple[Study, ...] = Field(default=tuple(Study), description="Studies to run.")
    experiments: tuple[Experiment, ...] = Field(default=tuple(Experiment), description="Experiments to run.")
    models: tuple[str, ...] | None = Field(
        default=None, description="Model keys to run the matrix on; default: every configured model."
    )
    input_files: dict[Study, str] = Field(
        default_factory=dict,
        description=(
            "Local study CSVs (path relative to the project root, each under 1 MiB) shipped in the studies "
            "ConfigMap instead of read from the input PVC; a study not named here reads /input/<study>.csv."
        ),
    )


class SamplingOverride(_Section):
    """The stack's override of a study's `sampling:` settings; an unset field keeps the study's value."""

    temperature: float | None = Field(
        default=None, ge=0, description="Experiment 1 sampling temperature (worker --temperature)."
    )
    samples_per_row: int | None = Field(
        default=None, ge=1, description="Experiment 1 answers per input row (worker --samples)."
    )
    base_seed: int | None = Field(
        default=None, ge=0, description="Base seed every request seed derives from (worker --seed)."
    )


class JobsConfig(_Section):
    batch_size: int = Field(default=64, gt=0, description="Worker --batch-size: requests in flight.")
    timeout_s: int = Field(default=120, gt=0, description="Worker --timeout: deadline per request attempt.")
    max_retries: int = Field(default=5, ge=0, description="Worker --max-retries.")
    wait_timeout_s: int = Field(
        default=3600, gt=0, description="How long a Job waits for its server or input before failing."
    )
    input_wait_timeout_s: int = Field(
        default=6 * 3600,
        gt=0,
        description=(
            "How long an extraction Job waits for the exp1 file it reads: exp1 may first wait for its "
            "server to load, then run for a while (worker extract --wait-for-input)."
        ),
    )
    logprobs: int = Field(default=20, gt=0, le=20, description="Worker probs --logprobs (top-N, at most 20).")
    sampling: SamplingOverride = Field(
        default_factory=SamplingOverride,
        description=(
            "Overrides of the study files' sampling settings {temperature, samplesPerRow, baseSeed}; unset "
            "keeps each study's (the researchers' configuration: 0.3, 5 samples, seed 42)."
        ),
    )
    tokens: tuple[str, ...] = Field(
        default=("0", "1", "2", "3", "yes", "no"),
        description="Worker probs --tokens (as a Job drafted in the researchers' plans asks).",
    )
    cpu_request: float = Field(default=1.0, gt=0, description="Worker container CPU request (cores).")
    memory_request_gi: int = Field(default=2, gt=0, description="Worker container memory request (GiB).")
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        gt=0,
        description=(
            "Seconds Kubernetes keeps a finished Job; unset (the default) keeps it until `pulumi destroy`. "
            "Must outlast plan.campaignDays: a Job deleted behind Pulumi's back is recreated by the next "
            "`pulumi refresh` + `pulumi up`."
        ),
    )
    log_level: str = Field(default="INFO", description="LOG_LEVEL of the worker.")
    deepseek_endpoint: str | None = Field(
        default=None,
        description=(
            "External OpenAI-compatible extraction endpoint (DeepSeek, the coder the researchers planned) "
            "that codes every model's replies; unset: the stack's one extractor (jobs.extractor) codes them."
        ),
    )
    deepseek_model: str = Field(default="deepseek-chat", description="Model name at the external endpoint.")
    extractor: str | None = Field(
        default=None,
        description=(
            "Key of the ONE configured model that codes every model's replies when deepseekEndpoint is "
            "unset (one coder for all, so coding quality is not confounded with the model under study); a "
            "persistent one serves separate extraction Jobs, a job-mode one codes every model's replies at "
            "the end of its own matrix Job. Unset: the largest model that does not reason first, a "
            "persistent one preferred."
        ),
    )


class MonitoringConfig(_Section):
    enabled: bool = Field(
        default=False,
        description="Create ServiceMonitor/PodMonitor objects (needs the Prometheus Operator CRDs).",
    )
    prometheus_namespace: str = Field(
        default="monitoring",
        description=(
            "Namespace of the Prometheus that scrapes grace pods; with monitoring enabled a NetworkPolicy "
            "lets it (and nothing else outside grace) reach the metrics ports."
        ),
    )


class ExceptionRule(StrEnum):
    GPUS_PER_STATEFUL_POD = "gpus-per-stateful-pod"  # more than 2 GPUs in a StatefulSet pod
    TWO_WEEK_LIMIT = "two-week-limit"  # a persistent server that outlives two weeks


class ExceptionConfig(_Section):
    model: str = Field(description="Model key the exception applies to.")
    rule: ExceptionRule = Field(description="Which NRP rule the exception waives.")
    reason: str = Field(min_length=1, description="Why, and the NRP ticket or approval that granted it.")


class PlanConfig(_Section):
    campaign_days: float = Field(
        default=14.0,
        gt=0,
        description="How long persistent servers stay up for the campaign (GPU-hour plan).",
    )
    study_rows: dict[Study, PositiveInt] = Field(
        default_factory=dict,
        description=(
            "Rows per study CSV for the GPU-hour plan, for studies whose CSV is on the input PVC (a local "
            "inputFiles CSV is counted instead); unset studies use the published counts (300 and 2,424)."
        ),
    )


class GraceConfig(_Section):
    """Every `grace:*` key of a stack."""

    namespace: NamespaceConfig = Field(default_factory=NamespaceConfig, description="Target namespace.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="PVC classes and sizes.")
    gpu: GpuConfig = Field(default_factory=GpuConfig, description="GPU resource and node selection.")
    images: ImagesConfig = Field(description="Container images, pinned.")
    models: tuple[ModelConfig, ...] = Field(
        min_length=1, description="Models to serve: catalog keys, or new keys with every required field."
    )
    experiments: ExperimentsConfig = Field(
        default_factory=ExperimentsConfig, description="The experiment matrix."
    )
    jobs: JobsConfig = Field(default_factory=JobsConfig, description="Experiment Job settings.")
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig, description="Prometheus objects.")
    exceptions: tuple[ExceptionConfig, ...] = Field(
        default=(), description="NRP exceptions granted for specific models."
    )
    plan: PlanConfig = Field(default_factory=PlanConfig, description="GPU-hour plan assumptions.")
    render_yaml_to: str | None = Field(
        default=None, description="Render YAML to this directory instead of applying (GitOps)."
    )

    @model_validator(mode="after")
    def _cross_field(self) -> Self:
        keys = [m.key for m in self.models]
        for i, key in enumerate(keys):
            if key in keys[:i]:
                raise ValueError(f"models[{i}].key={key!r} is configured twice")
        for i, model in enumerate(self.served_models()):
            if model.tensor_parallel_size != model.gpus:
                raise ValueError(
                    f"models[{i}].tensorParallelSize={model.tensor_parallel_size} "
                    f"must equal gpus={model.gpus}"
                )
        for i, key in enumerate(self.experiments.models or ()):
            if key not in keys:
                raise ValueError(
                    f"experiments.models[{i}]={key!r} is not a configured model "
                    f"(configured: {', '.join(keys)})"
                )
        for i, exc in enumerate(self.exceptions):
            if exc.model not in keys:
                raise ValueError(f"exceptions[{i}].model={exc.model!r} is not a configured model")
        ttl = self.jobs.ttl_seconds_after_finished
        campaign_s = self.plan.campaign_days * c.HOURS_PER_DAY * c.SECONDS_PER_HOUR
        if ttl is not None and ttl < campaign_s:
            # Kubernetes would delete finished Jobs mid-campaign; `pulumi refresh` then drops them from
            # the state and the next `pulumi up` recreates every one of them.
            raise ValueError(
                f"jobs.ttlSecondsAfterFinished={ttl} is shorter than the campaign "
                f"(plan.campaignDays={self.plan.campaign_days:g} = {campaign_s:.0f} s); unset it to keep "
                "finished Jobs until `pulumi destroy`"
            )
        self._check_extractor(keys)
        return self

    def _check_extractor(self, keys: list[str]) -> None:
        """The self-hosted extractor must be a configured model every extraction can reach."""
        extracting = Experiment.EXTRACTION in self.experiments.experiments
        if self.jobs.deepseek_endpoint is not None or not extracting:
            return
        chosen = self.jobs.extractor
        if chosen is not None and chosen not in keys:
            raise ValueError(
                f"jobs.extractor={chosen!r} is not a configured model (configured: {', '.join(keys)})"
            )
        extractor = self.extractor_model()
        matrix = [m.key for m in self.matrix_models()]
        if (
            extractor is not None
            and extractor.serving_mode is ServingMode.JOB
            and extractor.key not in matrix
        ):
            raise ValueError(
                f"jobs.extractor={extractor.key!r} is served in job mode, where its server runs only inside "
                "its own matrix Job, but it is not in experiments.models; add it there, serve it "
                "persistently, or set jobs.deepseekEndpoint"
            )

    def extractor_model(self) -> ServedModel | None:
        """The self-hosted model that codes every model's replies; None with an external endpoint.

        Unset: the largest reachable model that does not reason first (a reasoning model spends its budget
        thinking before the JSON) and fits NRP's 2-GPU StatefulSet pod, so it could also be served
        persistently; a persistent one preferred (every extraction Job reaches its Service); among equals
        the first configured. The coder answers every model's replies, several times more requests than
        any one model's share, so a 4-GPU model is chosen only when named.
        """
        if self.jobs.deepseek_endpoint is not None:
            return None
        served = self.served_models()
        if self.jobs.extractor is not None:
            return next((m for m in served if m.key == self.jobs.extractor), None)
        matrix = {m.key for m in self.matrix_models()}
        reachable = [m for m in served if m.serving_mode is ServingMode.PERSISTENT or m.key in matrix]
        if not reachable:
            return None
        return min(
            reachable,
            key=lambda m: (
                m.serving_mode is not ServingMode.PERSISTENT,
                m.reasoning_tokens > 0,
                m.gpus > c.NRP_MAX_GPUS_STATEFUL_POD,
                -m.params_billion,
            ),
        )

    def served_models(self) -> list[ServedModel]:
        """The configured models with overrides applied, in config order."""
        served = []
        for m in self.models:
            product = m.gpu_product or self.gpu.node_product
            served.append(
                ServedModel(
                    **m.spec(),
                    serving_mode=m.serving_mode,
                    gpu_product=product,
                    gpu_resource=(
                        m.gpu_resource
                        or self.gpu.resource_name
                        or cluster_facts.gpu_resource_for_product(product)
                    ),
                    await_readiness=m.await_readiness,
                    tolerations=self.gpu.tolerations,
                    node_affinity=m.node_affinity,
                    design=m.design or self.experiments.design,
                )
            )
        return served

    def matrix_models(self) -> list[ServedModel]:
        """The served models the experiment matrix runs on."""
        wanted = self.experiments.models
        return [m for m in self.served_models() if wanted is None or m.key in wanted]

    def designs(self) -> list[Design]:
        """The designs of the studies the matrix runs, in the order the models first name them."""
        return list(dict.fromkeys(m.design for m in self.matrix_models()))

    def has_exception(self, model_key: str, rule: ExceptionRule) -> bool:
        return any(e.model == model_key and e.rule == rule for e in self.exceptions)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> GraceConfig:
        """Validate `grace:*` values (keys without the `grace:` prefix).

        Raises ConfigError on the first problem."""
        try:
            return cls.model_validate(dict(raw))
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc)) from None


_ASSIGNMENT = re.compile(r"^[A-Za-z_][\w.\[\]]*=")


def format_validation_error(exc: ValidationError) -> str:
    """One sentence for the first error: `grace:<path>...` naming the key and the problem."""
    problem = validation_problem(exc)
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in problem.location).lstrip(".")
    message = problem.message
    if problem.kind == "value_error" and _ASSIGNMENT.match(message):
        # Validators name the field relative to the object they validate; prefix that object's path
        # (a field validator's path already ends with the field it names).
        field = message.split("=", 1)[0]
        if path == field or path.endswith(f".{field}"):
            return f"grace:{path}{message[len(field) :]}"
        return f"grace:{path}.{message}" if path else f"grace:{message}"
    if problem.kind == "missing":
        return f"grace:{path} is required but not set."
    if problem.kind == "extra_forbidden":
        return f"grace:{path} is not a known setting (check the spelling against Pulumi.yaml)."
    value = problem.value
    shown = "" if isinstance(value, dict | list) else f"={value!r}"
    return f"grace:{path}{shown}: {problem.sentence}"
