"""The weight-download Job of one model as a Kubernetes manifest: its container (running
payloads/download_weights.py inside the job image), pod, deadline and await timeout.
Why it is a Job of its own is in components/weights_job.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from grace_infra import constants as c
from grace_infra.config.quantities import cpu_quantity, gib_quantity
from grace_infra.config.stack_config import GraceConfig, ServedModel
from grace_infra.manifests import job_lifecycle, naming, security, vllm_server
from grace_infra.planning.sizing import ephemeral_limit_within

__all__ = [
    "HF_CACHE_VOLUME",
    "HF_TOKEN_VOLUME",
    "WORKER_NAME_LABEL",
    "download_await_timeout",
    "download_container",
    "download_deadline_s",
    "download_job_manifest",
    "download_job_name",
    "download_pod_labels",
    "download_pod_spec",
]


HF_CACHE_VOLUME = "hf-cache"
HF_TOKEN_VOLUME = "hf-token"  # noqa: S105 (a volume name, not a credential)
WORKER_NAME_LABEL = "weights-download"

# The download program ships as `python3 -c <source>`: no ConfigMap, nothing installed at run time.
_DOWNLOAD_SOURCE = (Path(__file__).parents[1] / "payloads" / "download_weights.py").read_text()


def download_job_name(model: ServedModel) -> str:
    return f"{c.WEIGHTS_DOWNLOAD_JOB_PREFIX}{model.key}"


def download_container(model: ServedModel, config: GraceConfig) -> dict[str, Any]:
    """Downloads `hf_repo@revision` (and the model's tiktoken vocabularies) into the weights claim
    unless that revision is already complete there.

    Uses the job image (jobs/Dockerfile installs huggingface_hub), as its non-root user on a read-only
    root filesystem. That image is the one the matrix pods' worker runs, so a private or mistyped image
    fails here, in a CPU pod `pulumi up` awaits, before any GPU is allocated. The Hub cache lives on a
    node-local emptyDir, requested as ephemeral storage. The token arrives as a file (HF_TOKEN_PATH)
    from a Secret volume that is optional for ungated repos and required for gated ones, so a missing
    Secret holds a gated model's download at ContainerCreating
    (event FailedMount naming the Secret) instead of a confusing 401 later.
    """
    cpu = c.DOWNLOAD_CPU_REQUEST
    memory = gib_quantity(c.DOWNLOAD_MEMORY_REQUEST_GI)
    vocabularies = ",".join(f"{name}={c.TIKTOKEN_SHA256[name]}" for name in model.tiktoken_files)
    return {
        "name": c.WEIGHTS_DOWNLOAD_CONTAINER_NAME,
        "image": config.images.job,
        "imagePullPolicy": c.IMAGE_PULL_POLICY,
        "command": ["python", "-c", _DOWNLOAD_SOURCE],
        "env": [
            {"name": "GRACE_HF_REPO", "value": model.hf_repo},
            {"name": "GRACE_HF_REVISION", "value": model.revision},
            {"name": "GRACE_WEIGHTS_DIR", "value": c.WEIGHTS_MOUNT},
            {"name": "GRACE_IGNORE_PATTERNS", "value": ",".join(c.WEIGHTS_IGNORE_PATTERNS)},
            {"name": "GRACE_TIKTOKEN_FILES", "value": vocabularies},
            {"name": "GRACE_TIKTOKEN_BASE_URL", "value": c.TIKTOKEN_BASE_URL},
            {"name": "GRACE_TIKTOKEN_DIR", "value": c.TIKTOKEN_DIR},
            {"name": "HF_HOME", "value": c.HF_HOME},
            {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
            {"name": "HF_TOKEN_PATH", "value": f"{c.HF_TOKEN_MOUNT}/{c.HF_TOKEN_SECRET_KEY}"},
        ],
        "resources": {
            "requests": {
                "cpu": cpu_quantity(cpu),
                "memory": memory,
                "ephemeral-storage": gib_quantity(c.HF_CACHE_SIZE_GI),
            },
            "limits": {
                "cpu": cpu_quantity(cpu * c.VLLM_CPU_LIMIT_RATIO),
                "memory": memory,
                "ephemeral-storage": gib_quantity(ephemeral_limit_within(c.HF_CACHE_SIZE_GI)),
            },
        },
        "volumeMounts": [
            {"name": vllm_server.WEIGHTS_VOLUME, "mountPath": c.WEIGHTS_MOUNT},
            {"name": HF_CACHE_VOLUME, "mountPath": c.HF_CACHE_MOUNT},
            {"name": HF_TOKEN_VOLUME, "mountPath": c.HF_TOKEN_MOUNT, "readOnly": True},
        ],
        "securityContext": security.job_image_security_context(),
    }


def download_pod_labels(model: ServedModel) -> dict[str, str]:
    """The only grace pods running the vLLM image with HTTPS egress: they reach huggingface.co (and, for
    gpt-oss, openaipublic.blob.core.windows.net)."""
    labels = naming.recommended_labels(
        name=WORKER_NAME_LABEL, instance=download_job_name(model), component=c.COMPONENT_WEIGHTS_DOWNLOAD
    )
    return {**labels, "model": model.key, **naming.https_egress_labels()}


def download_pod_spec(model: ServedModel, config: GraceConfig) -> dict[str, Any]:
    token_item = {"key": c.HF_TOKEN_SECRET_KEY, "path": c.HF_TOKEN_SECRET_KEY}
    return {
        "serviceAccountName": c.SA_MODEL_SERVER,
        "automountServiceAccountToken": False,  # the download never calls the Kubernetes API
        "enableServiceLinks": False,
        # Never: a failed attempt (e.g. exit 3, no access to a gated repo) shows as a failed pod with its
        # log, and the Job fails after backoffLimit, failing `pulumi up`.
        "restartPolicy": "Never",
        # fsGroup: the RBD weights claim is created root-owned; the non-root download writes it. The
        # group is vLLM's, which reads the claim later; Always (not OnRootMismatch) makes every file and
        # folder a former download left group-writable, so this uid may replace a revision (a checkpoint
        # is a few dozen files: the walk is cheap). The servers mount the claim read-only: no walk there.
        "securityContext": {**vllm_server.pod_security_context(), "fsGroupChangePolicy": "Always"},
        **security.job_image_pull_secrets(config),
        "containers": [download_container(model, config)],
        "volumes": [
            {
                "name": vllm_server.WEIGHTS_VOLUME,
                "persistentVolumeClaim": {"claimName": model.weights_pvc_name},
            },
            {"name": HF_CACHE_VOLUME, "emptyDir": {"sizeLimit": gib_quantity(c.HF_CACHE_SIZE_GI)}},
            {
                "name": HF_TOKEN_VOLUME,
                "secret": {
                    "secretName": c.HF_TOKEN_SECRET, "items": [token_item], "optional": not model.gated,
                },
            },
        ],
    }


def download_job_manifest(model: ServedModel, config: GraceConfig) -> dict[str, Any]:
    """The Job `weights-<key>` (apiVersion/kind omitted: the resource class sets them)."""
    labels = download_pod_labels(model)
    pod = download_pod_spec(model, config)
    return {
        "metadata": {
            "name": download_job_name(model),
            "namespace": config.namespace.name,
            "labels": labels,
            "annotations": {
                **job_lifecycle.replace_unready_annotations(),
                **security.checkov_skip_annotations(pod),
            },
        },
        "spec": {
            "backoffLimit": c.JOB_BACKOFF_LIMIT,
            "activeDeadlineSeconds": download_deadline_s(model),
            "podFailurePolicy": job_lifecycle.download_pod_failure_policy(),
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def _download_budget_s(model: ServedModel) -> float:
    """Pull and scheduling margin + the checkpoint at the assumed bandwidth."""
    return c.AWAIT_MARGIN_S + model.weights_gb * 1000 / c.DOWNLOAD_ASSUMED_MB_PER_S


def download_await_timeout(model: ServedModel) -> str:
    """How long `pulumi up` waits for the download, in whole minutes."""
    return f"{math.ceil(_download_budget_s(model) / 60)}m"


def download_deadline_s(model: ServedModel) -> int:
    """The download Job's `activeDeadlineSeconds`: the same budget with the Jobs' safety factor, so a
    download stuck on a slow mirror or a hung pull ends instead of holding its claim; a `pulumi up` that
    gave up waiting earlier finds the Job failed, not running forever."""
    return math.ceil(c.JOB_DEADLINE_SAFETY_FACTOR * _download_budget_s(model))
