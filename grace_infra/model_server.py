"""VllmModelServer: one vLLM OpenAI-compatible server per model, and the pure builders of its pod.

The builders return plain camelCase Kubernetes dicts (the manifest shape; pulumi_kubernetes passes them
through unchanged) and create no resources, so tests and the ExperimentJob (`job` serving mode) call
them directly. The same `vllm_container` output runs in both modes:

    persistent:  StatefulSet vllm-<key>  initContainers [download-weights]  containers [vllm]
                 Service vllm-<key> (ClusterIP, 8000/http)  [+ ServiceMonitor vllm-<key>]
    job:         the model's Job pod     initContainers [download-weights, vllm (restartPolicy: Always)]
                                          containers [worker]  -> talks to http://localhost:8000/v1

Pod anatomy, flags and the reasons for each are in docs/model-servers.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from grace_infra import constants as c
from grace_infra import job_lifecycle, monitoring, naming, security
from grace_infra.config import GraceConfig, ServedModel
from grace_infra.quantities import cpu_quantity, gib_quantity
from grace_infra.sizing import model_server_resources

__all__ = [
    "TYPE_TOKEN",
    "VllmModelServer",
    "VllmModelServerArgs",
    "await_timeout",
    "node_selector",
    "pod_volumes",
    "service_manifest",
    "startup_probe",
    "statefulset_manifest",
    "vllm_args",
    "vllm_container",
    "vllm_sidecar_parts",
    "weights_download_init_container",
]

TYPE_TOKEN = "grace:index:VllmModelServer"  # noqa: S105  (a Pulumi type token, not a secret)

WEIGHTS_VOLUME = "model-weights"
HF_CACHE_VOLUME = "hf-cache"
HF_TOKEN_VOLUME = "hf-token"  # noqa: S105 (a volume name, not a credential)
SCRATCH_VOLUME = "vllm-scratch"
SHM_VOLUME = "dshm"

# The download program ships as `python3 -c <source>`: no ConfigMap, nothing installed at run time.
_DOWNLOAD_SOURCE = (Path(__file__).with_name("weights_download.py")).read_text()



# ---------------------------------------------------------------------------------------------------
# Pure builders
# ---------------------------------------------------------------------------------------------------


def structured_outputs_config() -> str:
    """`--structured-outputs-config` value: xgrammar, compact JSON (the extraction pipeline parses
    responses byte-for-byte and a model may otherwise pad JSON with whitespace until max_tokens)."""
    return json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}, separators=(",", ":"))


def vllm_args(model: ServedModel) -> list[str]:
    """`vllm serve` arguments for `model`; catalog extras last so a model may refine the defaults."""
    return [
        f"--model={c.WEIGHTS_MOUNT}",
        f"--served-model-name={model.key}",
        f"--port={c.VLLM_PORT}",
        f"--tensor-parallel-size={model.tensor_parallel_size}",
        f"--dtype={model.dtype.value}",
        f"--max-model-len={model.max_model_len}",
        f"--gpu-memory-utilization={model.gpu_memory_utilization}",
        "--enable-chunked-prefill",
        "--enable-prefix-caching",
        f"--max-logprobs={c.VLLM_MIN_MAX_LOGPROBS}",
        f"--structured-outputs-config={structured_outputs_config()}",
        *model.extra_args,
    ]


def vllm_resources(model: ServedModel, config: GraceConfig) -> dict[str, dict[str, str]]:
    """Requests and limits of the vLLM container, from `sizing` (the same numbers plan.json and the
    quota rule add up), with GPUs under the configured resource name in requests and limits."""
    return model_server_resources(model, config.gpu).as_k8s()


def _http_get() -> dict[str, Any]:
    return {"path": c.VLLM_HEALTH_PATH, "port": c.VLLM_PORT_NAME}


def startup_probe(model: ServedModel) -> dict[str, Any]:
    """/health until the weights are loaded; gives up after at least `load_budget_s` seconds.

    A fixed liveness delay restarts a 70B model still reading 140 GB from Ceph; the startup probe
    holds liveness and readiness back until the first success instead.
    """
    return {
        "httpGet": _http_get(),
        "periodSeconds": c.STARTUP_PROBE_PERIOD_S,
        "timeoutSeconds": c.PROBE_TIMEOUT_S,
        "failureThreshold": math.ceil(model.load_budget_s / c.STARTUP_PROBE_PERIOD_S),
    }


def liveness_probe() -> dict[str, Any]:
    return {
        "httpGet": _http_get(),
        "periodSeconds": c.LIVENESS_PROBE_PERIOD_S,
        "timeoutSeconds": c.PROBE_TIMEOUT_S,
        "failureThreshold": c.LIVENESS_FAILURE_THRESHOLD,
    }


def readiness_probe() -> dict[str, Any]:
    return {
        "httpGet": _http_get(),
        "periodSeconds": c.READINESS_PROBE_PERIOD_S,
        "timeoutSeconds": c.PROBE_TIMEOUT_S,
        "failureThreshold": 3,
    }


def container_security_context() -> dict[str, Any]:
    """Both containers of the vLLM image run as its own non-root `vllm` user on a read-only root
    filesystem; what they write goes to emptyDirs (scratch, Hub cache) or the weights claim."""
    return {
        "runAsNonRoot": True,
        "runAsUser": c.VLLM_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict[str, Any]:
    """`fsGroup`: the weights claim (and a CephFS claim) is created root-owned; the kubelet hands it to
    this group, which every container of the pod joins, so the non-root download can write it. Changed
    only when the volume's root does not match yet, not on every mount of 100 GB of weights."""
    return {
        "fsGroup": c.VLLM_UID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def node_selector(model: ServedModel) -> dict[str, str]:
    """`nvidia.com/gpu.product` when the model (or gpu.nodeProduct) names one; empty otherwise."""
    return {"nvidia.com/gpu.product": model.gpu_product} if model.gpu_product else {}


def _volume_mounts(model: ServedModel, *, read_only_weights: bool) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": WEIGHTS_VOLUME, "mountPath": c.WEIGHTS_MOUNT, "readOnly": read_only_weights},
        {"name": SCRATCH_VOLUME, "mountPath": c.VLLM_HOME, "subPath": "home"},
        {"name": SCRATCH_VOLUME, "mountPath": "/tmp", "subPath": "tmp"},  # noqa: S108 (an emptyDir)
    ]
    if model.tensor_parallel_size > 1:
        mounts.append({"name": SHM_VOLUME, "mountPath": c.SHM_MOUNT})
    return mounts


def vllm_container(model: ServedModel, config: GraceConfig) -> dict[str, Any]:
    """The vLLM server container, identical in `persistent` and `job` mode."""
    env = [
        # Weights are local: never reach the Hub at serve time (and no egress is needed after download).
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
        # The image's user, named explicitly: its caches resolve under $HOME (an emptyDir, see
        # _volume_mounts) and getpass.getuser() answers without a passwd lookup.
        {"name": "HOME", "value": c.VLLM_HOME},
        {"name": "USER", "value": "vllm"},
        *({"name": k, "value": v} for k, v in sorted(model.extra_env.items())),
    ]
    return {
        "name": c.VLLM_CONTAINER_NAME,
        "image": config.images.vllm,
        "imagePullPolicy": c.IMAGE_PULL_POLICY,
        "command": ["vllm", "serve"],
        "args": vllm_args(model),
        "env": env,
        "ports": [{"name": c.VLLM_PORT_NAME, "containerPort": c.VLLM_PORT, "protocol": "TCP"}],
        "resources": vllm_resources(model, config),
        "volumeMounts": _volume_mounts(model, read_only_weights=True),
        "startupProbe": startup_probe(model),
        "livenessProbe": liveness_probe(),
        "readinessProbe": readiness_probe(),
        "securityContext": container_security_context(),
    }


def weights_download_init_container(model: ServedModel, config: GraceConfig) -> dict[str, Any]:
    """Downloads `hf_repo@revision` into the weights PVC unless that revision is already complete.

    Uses the pinned vLLM image (it has huggingface_hub); the Hub cache lives on node-local /tmp.
    The token arrives as a file (HF_TOKEN_PATH) from a Secret volume that is optional for ungated repos
    and required for gated ones, so a missing Secret holds a gated model's pod at ContainerCreating
    (event FailedMount naming the Secret) instead of a confusing 401 later.
    """
    cpu = c.DOWNLOAD_CPU_REQUEST
    memory = gib_quantity(c.DOWNLOAD_MEMORY_REQUEST_GI)
    return {
        "name": c.WEIGHTS_DOWNLOAD_CONTAINER_NAME,
        "image": config.images.vllm,
        "imagePullPolicy": c.IMAGE_PULL_POLICY,
        "command": ["python3", "-c", _DOWNLOAD_SOURCE],
        "env": [
            {"name": "GRACE_HF_REPO", "value": model.hf_repo},
            {"name": "GRACE_HF_REVISION", "value": model.revision},
            {"name": "GRACE_WEIGHTS_DIR", "value": c.WEIGHTS_MOUNT},
            {"name": "GRACE_IGNORE_PATTERNS", "value": ",".join(c.WEIGHTS_IGNORE_PATTERNS)},
            {"name": "HF_HOME", "value": c.HF_HOME},
            {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
            {"name": "HF_TOKEN_PATH", "value": f"{c.HF_TOKEN_MOUNT}/{c.HF_TOKEN_SECRET_KEY}"},
        ],
        "resources": {
            "requests": {"cpu": cpu_quantity(cpu), "memory": memory},
            "limits": {"cpu": cpu_quantity(cpu * c.VLLM_CPU_LIMIT_RATIO), "memory": memory},
        },
        "volumeMounts": [
            {"name": WEIGHTS_VOLUME, "mountPath": c.WEIGHTS_MOUNT},
            {"name": HF_CACHE_VOLUME, "mountPath": c.HF_CACHE_MOUNT},
            {"name": HF_TOKEN_VOLUME, "mountPath": c.HF_TOKEN_MOUNT, "readOnly": True},
        ],
        "securityContext": container_security_context(),
    }


def pod_volumes(model: ServedModel, config: GraceConfig) -> list[dict[str, Any]]:
    """The weights PVC (created by GraceStorage), node-local /tmp for the Hub cache, the token Secret
    as a file, vLLM's scratch ($HOME and /tmp on a read-only root filesystem), and /dev/shm when
    tensor parallel size > 1 (the 64 MB default makes NCCL fail). Memory-backed shm counts against
    the container's memory limit."""
    del config  # volume names and sizes are constants; kept for a uniform builder signature
    token_item = {"key": c.HF_TOKEN_SECRET_KEY, "path": c.HF_TOKEN_SECRET_KEY}
    volumes: list[dict[str, Any]] = [
        {"name": WEIGHTS_VOLUME, "persistentVolumeClaim": {"claimName": model.weights_pvc_name}},
        {"name": HF_CACHE_VOLUME, "emptyDir": {"sizeLimit": c.HF_CACHE_SIZE_LIMIT}},
        {
            "name": HF_TOKEN_VOLUME,
            "secret": {"secretName": c.HF_TOKEN_SECRET, "items": [token_item], "optional": not model.gated},
        },
        {"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": c.VLLM_SCRATCH_SIZE_LIMIT}},
    ]
    if model.tensor_parallel_size > 1:
        volumes.append(
            {
                "name": SHM_VOLUME,
                "emptyDir": {"medium": "Memory", "sizeLimit": gib_quantity(c.SHM_SIZE_LIMIT_GI)},
            }
        )
    return volumes


def vllm_sidecar_parts(
    model: ServedModel, config: GraceConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What an ExperimentJob pod needs to run `model`'s server as a native sidecar (`job` mode).

    Returns `(init_containers, volumes)`, camelCase Kubernetes dicts:
    - `init_containers`: `[download-weights, vllm]`; `vllm` is exactly `vllm_container(model, config)`
      plus `restartPolicy: Always` (a native sidecar, Kubernetes >= 1.29). Keep them in this order
      and after any init container that must run before the download (the Job's outputs check).
      The kubelet starts the pod's main containers only after the sidecar's startupProbe succeeds,
      so the worker starts with the server loaded and talks to `http://localhost:8000/v1`; the
      sidecar is stopped when the main containers exit, so the GPUs are released with the Job.
    - `volumes`: `model-weights` (PVC grace-model-weights-<key>), `hf-cache` and, when TP > 1,
      `dshm`. Your own volume names must differ from these.
    The GPU requests/limits sit on the sidecar, which Kubernetes counts in the pod's requests. Also
    apply `node_selector(model)` to the Job's pod template, give it an `fsGroup` (the non-root
    download writes the weights claim), set `automountServiceAccountToken: false` unless the worker
    needs the API, and give the pod the HTTPS-egress label (the download reaches huggingface.co).
    """
    sidecar = {**vllm_container(model, config), "restartPolicy": "Always"}
    return [weights_download_init_container(model, config), sidecar], pod_volumes(model, config)


def model_server_pod_labels(model: ServedModel) -> dict[str, str]:
    """Labels of a persistent server's pods: model-server labels plus HTTPS egress for the download."""
    return {**naming.model_server_labels(model.key), **naming.https_egress_labels()}


def statefulset_pod_spec(model: ServedModel, config: GraceConfig) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": c.SA_MODEL_SERVER,
        # vLLM never calls the Kubernetes API: no token in the pod.
        "automountServiceAccountToken": False,
        # Service links inject <SERVICE>_PORT variables; vLLM reads VLLM_PORT and similar names itself.
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "initContainers": [weights_download_init_container(model, config)],
        "containers": [vllm_container(model, config)],
        "volumes": pod_volumes(model, config),
    }
    selector = node_selector(model)
    if selector:
        spec["nodeSelector"] = selector
    return spec


def statefulset_manifest(model: ServedModel, config: GraceConfig) -> dict[str, Any]:
    """The StatefulSet `vllm-<key>` (apiVersion/kind omitted: the resource class sets them)."""
    labels = model_server_pod_labels(model)
    pod_spec = statefulset_pod_spec(model, config)
    return {
        "metadata": {
            "name": model.server_name,
            "namespace": config.namespace.name,
            "labels": labels,
            # `pulumi up` does not wait for the model to load unless the model sets awaitReadiness.
            "annotations": {
                **security.checkov_skip_annotations(pod_spec),
                **job_lifecycle.await_annotations(await_readiness=model.await_readiness),
            },
        },
        "spec": {
            "serviceName": model.server_name,
            "replicas": 1,
            "selector": {"matchLabels": naming.selector_labels(labels)},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def service_manifest(model: ServedModel, config: GraceConfig) -> dict[str, Any]:
    """The ClusterIP Service `vllm-<key>`: the Jobs reach `http://vllm-<key>:8000/v1`."""
    labels = naming.model_server_labels(model.key)
    return {
        "metadata": {"name": model.server_name, "namespace": config.namespace.name, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": naming.selector_labels(labels),
            "ports": [
                {
                    "name": c.VLLM_PORT_NAME,
                    "port": c.VLLM_PORT,
                    "targetPort": c.VLLM_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def await_timeout(model: ServedModel) -> str:
    """How long `pulumi up` waits for the StatefulSet's first rollout, in whole minutes: pull and
    scheduling margin + the weight download at the assumed bandwidth + the load budget."""
    download_s = model.weights_gb * 1000 / c.DOWNLOAD_ASSUMED_MB_PER_S
    return f"{math.ceil((c.AWAIT_MARGIN_S + download_s + model.load_budget_s) / 60)}m"


def server_url(model: ServedModel) -> str:
    return f"http://{model.server_name}:{c.VLLM_PORT}/v1"


# ---------------------------------------------------------------------------------------------------
# Component
# ---------------------------------------------------------------------------------------------------


@dataclass
class VllmModelServerArgs:
    """Inputs of one model's persistent vLLM server."""

    model: ServedModel
    """The catalog entry with the stack's overrides; must be in `persistent` serving mode."""
    config: GraceConfig
    """The stack config (namespace, images, GPU resource name, monitoring switch)."""
    weights_claim: pulumi.Resource | None = None
    """The model's weights PVC from GraceStorage; the StatefulSet waits for it."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """Other resources the server needs first (Namespace, ServiceAccount, token Secret)."""


class VllmModelServer(pulumi.ComponentResource):
    """StatefulSet + ClusterIP Service (+ optional ServiceMonitor) serving one model with vLLM."""

    service_name: pulumi.Output[str]
    """`vllm-<key>`: the Service (and StatefulSet) name."""
    url: pulumi.Output[str]
    """`http://vllm-<key>:8000/v1`, the OpenAI base URL the Jobs use."""
    statefulset: k8s.apps.v1.StatefulSet
    service: k8s.core.v1.Service

    def __init__(
        self, name: str, args: VllmModelServerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        if args.model.serving_mode.value != "persistent":
            raise ValueError(
                f"model {args.model.key!r} is in {args.model.serving_mode.value!r} serving mode; "
                "only persistent models get a VllmModelServer (job mode runs inside its ExperimentJob)"
            )
        self._args = args
        statefulset = self._create_statefulset(name)
        service = self._create_service(name)
        if args.config.monitoring.enabled:
            self._create_service_monitor(name, service)
        self.statefulset = statefulset
        self.service = service
        self.service_name = pulumi.Output.from_input(args.model.server_name)
        self.url = pulumi.Output.from_input(server_url(args.model))
        self.register_outputs({"serviceName": self.service_name, "url": self.url})

    def _create_statefulset(self, name: str) -> k8s.apps.v1.StatefulSet:
        model, config = self._args.model, self._args.config
        manifest = statefulset_manifest(model, config)
        needs = [*self._args.depends_on, *([self._args.weights_claim] if self._args.weights_claim else [])]
        timeout = await_timeout(model)
        # Only an awaited rollout needs a timeout beyond Pulumi's default ten minutes.
        timeouts = pulumi.CustomTimeouts(create=timeout, update=timeout) if model.await_readiness else None
        return k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=needs, custom_timeouts=timeouts),
        )

    def _create_service(self, name: str) -> k8s.core.v1.Service:
        manifest = service_manifest(self._args.model, self._args.config)
        return k8s.core.v1.Service(
            f"{name}-service",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(self._args.depends_on)),
        )

    def _create_service_monitor(self, name: str, service: k8s.core.v1.Service) -> None:
        model, config = self._args.model, self._args.config
        manifest = monitoring.service_monitor_manifest(
            name=model.server_name,
            namespace=config.namespace.name,
            labels=naming.model_server_labels(model.key),
            selector=naming.selector_labels(naming.model_server_labels(model.key)),
        )
        k8s.apiextensions.CustomResource(
            f"{name}-servicemonitor",
            api_version=manifest["apiVersion"],
            kind=manifest["kind"],
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[service]),
        )
