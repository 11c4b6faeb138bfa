"""The vLLM server's pod as plain camelCase Kubernetes dicts: its container, probes, volumes and
placement, the StatefulSet and Service of a persistent server, and its in-cluster URL.

The same `vllm_container` runs in both serving modes: in the StatefulSet of a persistent server
(components/model_server.py) and as the native sidecar of a job-mode Job (manifests/worker_job.py).
Pod anatomy, flags and the reasons for each are in docs/model-servers.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from grace_infra import constants as c
from grace_infra.config.quantities import gib_quantity
from grace_infra.config.stack_config import GraceConfig, ServedModel
from grace_infra.manifests import job_lifecycle, naming, security
from grace_infra.nrp import cluster_facts
from grace_infra.planning.gpu_hours import startup_window_s
from grace_infra.planning.sizing import model_server_resources
from worker import contract

__all__ = [
    "SCRATCH_VOLUME",
    "SHM_VOLUME",
    "WEIGHTS_VOLUME",
    "apply_gpu_placement",
    "await_timeout",
    "container_security_context",
    "liveness_probe",
    "model_server_pod_labels",
    "node_selector",
    "pod_security_context",
    "pod_tolerations",
    "pod_volumes",
    "readiness_probe",
    "server_start_env",
    "service_manifest",
    "startup_probe",
    "statefulset_manifest",
    "statefulset_pod_spec",
    "structured_outputs_config",
    "tokenizer_vocabulary_env",
    "vllm_args",
    "vllm_container",
    "vllm_resources",
    "vllm_sidecar_parts",
]



WEIGHTS_VOLUME = "model-weights"
SCRATCH_VOLUME = "vllm-scratch"
SHM_VOLUME = "dshm"
_SERVER_START_SOURCE = (Path(__file__).parents[1] / "payloads" / "server_start.py").read_text()




def structured_outputs_config() -> str:
    """`--structured-outputs-config` value: xgrammar, compact JSON (the extraction pipeline parses
    responses byte-for-byte and a model may otherwise pad JSON with whitespace until max_tokens)."""
    return json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}, separators=(",", ":"))


def vllm_args(model: ServedModel) -> list[str]:
    """`vllm serve` arguments for `model`; catalog extras last so a model may refine the defaults.

    The weights directory is the positional model argument (first, as `vllm serve <model> [options]`):
    vLLM 0.32 logs that the `--model` option of `serve` "will be removed in a future version"
    (vllm/utils/argparse_utils.py).
    """
    return [
        c.WEIGHTS_MOUNT,
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
    quota rule add up), with GPUs under the model's extended resource in requests and limits."""
    del config  # kept for a uniform builder signature
    return model_server_resources(model).as_k8s()


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
        "failureThreshold": startup_window_s(model) // c.STARTUP_PROBE_PERIOD_S,
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


def pod_tolerations(model: ServedModel) -> list[dict[str, str]]:
    """grace:gpu.tolerations (a reserved pool's taint, say), plus NRP's arm64 taints for a Grace Hopper
    product, each once."""
    kind = cluster_facts.gpu_kind_for_product(model.gpu_product) if model.gpu_product else None
    implied = [dict(t) for t in cluster_facts.ARM64_TOLERATIONS] if kind and kind.arm64 else []
    tolerations: list[dict[str, str]] = []
    for toleration in [*(t.to_k8s() for t in model.tolerations), *implied]:
        if toleration not in tolerations:
            tolerations.append(toleration)
    return tolerations


def apply_gpu_placement(spec: dict[str, Any], model: ServedModel) -> None:
    """Node selector, node affinity and tolerations of a pod running `model`'s server (StatefulSet or
    job-mode Job): the product label, the model's nodeAffinity override, the GPU tolerations."""
    selector = node_selector(model)
    if selector:
        spec["nodeSelector"] = selector
    if model.node_affinity is not None:
        spec["affinity"] = {"nodeAffinity": model.node_affinity.to_k8s()}
    tolerations = pod_tolerations(model)
    if tolerations:
        spec["tolerations"] = tolerations


def _volume_mounts(model: ServedModel, *, read_only_weights: bool) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": WEIGHTS_VOLUME, "mountPath": c.WEIGHTS_MOUNT, "readOnly": read_only_weights},
        {"name": SCRATCH_VOLUME, "mountPath": c.VLLM_HOME, "subPath": "home"},
        {"name": SCRATCH_VOLUME, "mountPath": "/tmp", "subPath": "tmp"},  # noqa: S108 (an emptyDir)
    ]
    if model.tensor_parallel_size > 1:
        mounts.append({"name": SHM_VOLUME, "mountPath": c.SHM_MOUNT})
    return mounts


def tokenizer_vocabulary_env(model: ServedModel) -> list[dict[str, str]]:
    """gpt-oss: vLLM's harmony code (openai_harmony) loads `o200k_base.tiktoken` at start-up and, unless
    TIKTOKEN_ENCODINGS_BASE names a folder holding it, downloads it from openaipublic.blob.core.windows.net
    whatever HF_HUB_OFFLINE says (openai/harmony src/tiktoken_ext/public_encodings.rs). The download Job
    stages it on the weights claim; with this variable the server never needs the internet."""
    return [{"name": "TIKTOKEN_ENCODINGS_BASE", "value": c.TIKTOKEN_DIR}] if model.tiktoken_files else []


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
        *tokenizer_vocabulary_env(model),
        # What the download Job recorded: repo, requested revision and the commit it resolved to.
        {"name": contract.WEIGHTS_MARKER_ENV, "value": c.WEIGHTS_MARKER_PATH},
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


def pod_volumes(model: ServedModel, config: GraceConfig) -> list[dict[str, Any]]:
    """The weights PVC (created by GraceStorage, filled by the model's download Job), vLLM's scratch
    ($HOME and /tmp on a read-only root filesystem) and /dev/shm when tensor parallel size > 1 (the
    64 MB default makes NCCL fail). Memory-backed shm counts against the container's memory limit.

    The weights claim is read-only at the VOLUME level, not only in each mount: the kubelet applies
    fsGroup ownership only to writable volumes (pkg/volume/csi/csi_mounter.go, supportsFSGroup: `if
    fsGroup == nil || driverPolicy == storage.NoneFSGroupPolicy || c.readOnly { return false }`), so no
    pod running a server walks or re-groups the checkpoint; the download Job set its group already."""
    del config  # volume names and sizes are constants; kept for a uniform builder signature
    volumes: list[dict[str, Any]] = [
        {
            "name": WEIGHTS_VOLUME,
            "persistentVolumeClaim": {"claimName": model.weights_pvc_name, "readOnly": True},
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
    - `init_containers`: `[vllm]`, `vllm_container(model, config)` plus `restartPolicy: Always`
      (a native sidecar, Kubernetes >= 1.29), started through the start-budget wrapper, which keeps its
      state in the pod's run-state emptyDir (the caller adds that volume). Put it after any init
      container that must finish first (the Job's outputs check). The kubelet starts the pod's main
      containers only after the sidecar's startupProbe succeeds, so the worker starts with the server
      loaded and talks to `http://localhost:8000/v1`; the sidecar is stopped when the main containers
      exit, so the GPUs are released with the Job.
    - `volumes`: `model-weights` (PVC grace-model-weights-<key>), `vllm-scratch` and, when TP > 1,
      `dshm`. Your own volume names must differ from these.
    The GPU requests/limits sit on the sidecar, which Kubernetes counts in the pod's requests. Also
    apply `apply_gpu_placement(spec, model)` to the Job's pod template, and create the Job after the
    model's download Job (`weights_job.WeightsDownload`) has completed: the weights are there when the
    pod starts, and the pod needs no HTTPS egress.
    """
    server = vllm_container(model, config)
    # The start budget (payloads/server_start.py): after SERVER_START_ATTEMPTS failed starts the wrapper
    # answers /health and leaves the marker the worker turns into EXIT_SERVER_START_FAILED (FailJob).
    # `$(VAR)` is the kubelet's own expansion of a container variable in the command.
    sidecar = {
        **server,
        "restartPolicy": "Always",
        "command": ["python3", "-c", f"$({c.SERVER_START_SOURCE_ENV})", *server["command"]],
        "env": [*server["env"], *server_start_env()],
        "volumeMounts": [
            *server["volumeMounts"],
            {"name": c.RUN_STATE_VOLUME, "mountPath": c.RUN_STATE_MOUNT, "readOnly": False},
        ],
    }
    return [sidecar], pod_volumes(model, config)


def server_start_env() -> list[dict[str, str]]:
    """The start wrapper's source and inputs (names in worker/contract.py)."""
    return [
        {"name": c.SERVER_START_SOURCE_ENV, "value": _SERVER_START_SOURCE},
        {"name": contract.SERVER_START_ATTEMPTS_ENV, "value": str(c.SERVER_START_ATTEMPTS)},
        {"name": contract.SERVER_START_STATE_ENV, "value": c.SERVER_START_STATE},
        {"name": contract.SERVER_START_FAILED_ENV, "value": c.SERVER_START_FAILED_MARKER},
    ]


def model_server_pod_labels(model: ServedModel) -> dict[str, str]:
    """Labels of a persistent server's pods. No HTTPS egress: the weights and the tokenizer vocabulary
    are on the weights claim before the pod starts, and vLLM runs with HF_HUB_OFFLINE."""
    return naming.model_server_labels(model.key)


def statefulset_pod_spec(model: ServedModel, config: GraceConfig) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": c.SA_MODEL_SERVER,
        # vLLM never calls the Kubernetes API: no token in the pod.
        "automountServiceAccountToken": False,
        # Service links inject <SERVICE>_PORT variables; vLLM reads VLLM_PORT and similar names itself.
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [vllm_container(model, config)],
        "volumes": pod_volumes(model, config),
    }
    apply_gpu_placement(spec, model)
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
    scheduling margin + the load budget (the weights are downloaded before, by the download Job)."""
    return f"{math.ceil((c.AWAIT_MARGIN_S + model.load_budget_s) / 60)}m"
