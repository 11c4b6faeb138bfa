"""The security scan's remaining findings, each waived ON the object it concerns with its reason.

CI runs checkov (https://www.checkov.io/) over the nrp render and allows no failure without a reason.
What can be fixed is fixed in the builders (non-root users, read-only root filesystems, dropped
capabilities, RuntimeDefault seccomp, pull policy Always, the token as a file). What cannot is listed
in `WAIVERS` and written onto the StatefulSet or Job as checkov's own skip annotations,
`checkov.io/skip<N>: <CHECK_ID>=<reason>` (checkov's kubernetes_utils.get_skipped_checks reads
`metadata.annotations` of the object and splits the value at `=`, so a reason must not contain one).

A waiver applies only where its condition holds on that pod spec: pin an image by digest in
`grace:images` and its digest waiver disappears from the objects running it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from grace_infra import constants as c
from grace_infra.config.stack_config import GraceConfig
from worker import contract

__all__ = [
    "SKIP_ANNOTATION_PREFIX",
    "WAIVERS",
    "Waiver",
    "checkov_skip_annotations",
    "job_image_pull_secrets",
    "job_image_security_context",
]

SKIP_ANNOTATION_PREFIX = "checkov.io/skip"
HIGH_UID = 10000  # CKV_K8S_40 wants runAsUser above 10000, clear of host users


def job_image_security_context() -> dict[str, Any]:
    """Every container of the job image (an experiment Job's worker, the results reader pod) runs as
    the image's non-root worker user on a read-only root filesystem, with nothing to escalate to."""
    return {
        "runAsNonRoot": True,
        "runAsUser": c.WORKER_UID,
        "runAsGroup": c.WORKER_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def job_image_pull_secrets(config: GraceConfig) -> dict[str, Any]:
    """`imagePullSecrets` for a pod running the job image, when grace:images.pullSecret names one: a
    private registry (NRP GitLab projects are private unless made public) is then pulled with it. The
    field is per pod, so the pod's other images (vLLM's, from Docker Hub) are pulled with it too, which
    a registry that is not the secret's ignores."""
    secret = config.images.pull_secret
    return {"imagePullSecrets": [{"name": secret}]} if secret else {}


@dataclass(frozen=True)
class Waiver:
    """One checkov check that stays failed where `applies(containers)` holds, and why."""

    check_id: str
    reason: str
    applies: Callable[[list[dict[str, Any]]], bool]

    def __post_init__(self) -> None:
        if "=" in self.reason or not self.reason.strip():
            raise ValueError(f"{self.check_id}: a checkov skip reason must be non-empty and free of '='")


def _containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]


def _secret_env(containers: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for container in containers:
        for env in container.get("env", []):
            if "secretKeyRef" in env.get("valueFrom", {}):
                yield env


WAIVERS: tuple[Waiver, ...] = (
    Waiver(
        "CKV_K8S_43",
        "images are pinned by tag in grace:images (vLLM's release tag and the job image's version); "
        "the digest cannot be known offline. Set image@sha256:<digest> in grace:images to pin it "
        "and this waiver disappears",
        lambda containers: any("@sha256:" not in c["image"] for c in containers),
    ),
    Waiver(
        "CKV_K8S_40",
        "the vllm/vllm-openai image ships its non-root user as uid 2000 (HOME /home/vllm); a uid above "
        "10000 has no passwd entry there and torch's compile cache fails at import on getpass.getuser()",
        lambda containers: any(
            c.get("securityContext", {}).get("runAsUser", HIGH_UID + 1) <= HIGH_UID for c in containers
        ),
    ),
    Waiver(
        "CKV_K8S_38",
        "the extraction gate resumes its suspended Job through the API with this token; its Role allows "
        "get and patch on that one Job and nothing else",
        lambda containers: any(
            env.get("name") == contract.RESUME_JOB_ENV for c in containers for env in c.get("env", [])
        ),
    ),
    Waiver(
        "CKV_K8S_35",
        f"the worker reads the DeepSeek API key from {contract.DEEPSEEK_API_KEY_ENV}; the value comes from "
        "the Secret by reference and never enters the manifest",
        lambda containers: any(True for _ in _secret_env(containers)),
    ),
)


def checkov_skip_annotations(pod_spec: dict[str, Any]) -> dict[str, str]:
    """`checkov.io/skip<N>` annotations for the waivers that apply to this pod spec, numbered from 1."""
    containers = _containers(pod_spec)
    applying = [waiver for waiver in WAIVERS if waiver.applies(containers)]
    return {
        f"{SKIP_ANNOTATION_PREFIX}{n}": f"{waiver.check_id}={waiver.reason}"
        for n, waiver in enumerate(applying, start=1)
    }
