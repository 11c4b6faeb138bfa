"""Images and placement as rendered: `grace:images.pullSecret` on every pod that runs the job image, the
weight downloads in the job image (a pull failure shows before any GPU is allocated), and
`grace:gpu.tolerations` and `grace:models[i].nodeAffinity` on every GPU pod, in both serving modes.
Preflight's checks of the same settings against a recorded cluster are in test_preflight.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from grace_infra import constants as c
from grace_infra.commands.offline import OfflineRun
from grace_infra.commands.results.pull import reader_pod_manifest
from grace_infra.config.stack_config import GraceConfig
from grace_infra.errors import ConfigError

from .support import assert_valid_k8s, base_config, render_stack

PULL_SECRET = "gitlab-registry"
JOB_IMAGE = "gitlab-registry.nrp-nautilus.io/example-lab/grace-job:0.1.0"
RESERVATION = {
    "key": "nautilus.io/reservation", "operator": "Equal", "value": "a100-lab", "effect": "NoSchedule",
}  # fmt: skip
REGION = {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["us-west"]}
AFFINITY = {
    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [REGION]}]},
}  # fmt: skip


def _config(**overrides: Any) -> dict[str, Any]:
    """The nrp stack with a pull secret, a reservation toleration and an affinity on one job-mode and one
    persistent model (the other models keep none)."""
    raw = base_config()
    models = [
        {"key": "gemma-2-2b", "nodeAffinity": AFFINITY},
        {"key": "gemma-2-9b", "servingMode": "persistent", "nodeAffinity": AFFINITY},
        {"key": "llama-3-70b"},
    ]
    return {
        **raw,
        "images": {**raw["images"], "job": JOB_IMAGE, "pullSecret": PULL_SECRET},
        "gpu": {**raw["gpu"], "tolerations": [RESERVATION]},
        "models": models,
        "jobs": {"extractor": "gemma-2-9b"},
        **overrides,
    }


@pytest.fixture(scope="module")
def run() -> OfflineRun:
    return render_stack(_config())


def _pods(run: OfflineRun) -> list[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) of every Job and StatefulSet."""
    return [
        (m["metadata"]["name"], m["spec"]["template"]["spec"])
        for m in run.manifests()
        if m["kind"] in {"Job", "StatefulSet"}
    ]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _gpus(pod: dict[str, Any]) -> int:
    return sum(
        int(amount)
        for container in _containers(pod)
        for resource, amount in container.get("resources", {}).get("requests", {}).items()
        if resource.startswith("nvidia.com/")
    )


def test_every_pod_running_the_job_image_carries_the_pull_secret(run: OfflineRun) -> None:
    pulling = [(n, pod) for n, pod in _pods(run) if any(x["image"] == JOB_IMAGE for x in _containers(pod))]
    names = {name for name, _ in pulling}
    # Every experiment Job and every weight download (which runs the job image, not vLLM's).
    assert {f"weights-{key}" for key in ("gemma-2-2b", "gemma-2-9b", "llama-3-70b")} <= names
    assert {"matrix-gemma-2-2b", "matrix-llama-3-70b"} <= names
    for name, pod in pulling:
        assert pod["imagePullSecrets"] == [{"name": PULL_SECRET}], name
    # The persistent server runs only vLLM's public image: no secret needed there.
    (server,) = [pod for name, pod in _pods(run) if name == "vllm-gemma-2-9b"]
    assert "imagePullSecrets" not in server
    reader = reader_pod_manifest(GraceConfig.parse(_config()), "grace-reader-test")
    assert reader["spec"]["imagePullSecrets"] == [{"name": PULL_SECRET}]
    for manifest in [*run.manifests(), reader]:
        assert_valid_k8s(manifest)


def test_no_pull_secret_renders_none(mixed_run: OfflineRun) -> None:
    assert all("imagePullSecrets" not in pod for _, pod in _pods(mixed_run))


def test_the_weight_download_runs_the_job_image_on_no_gpu(run: OfflineRun) -> None:
    downloads = [pod for name, pod in _pods(run) if name.startswith(c.WEIGHTS_DOWNLOAD_JOB_PREFIX)]
    assert len(downloads) == 3
    for pod in downloads:
        (container,) = pod["containers"]
        assert container["image"] == JOB_IMAGE
        assert container["command"][:2] == ["python", "-c"]
        assert container["securityContext"]["runAsUser"] == c.WORKER_UID  # the job image's own user
        assert _gpus(pod) == 0
        assert "tolerations" not in pod  # a CPU pod, placed anywhere
        assert "affinity" not in pod


def test_every_gpu_pod_carries_the_tolerations_and_its_models_affinity(run: OfflineRun) -> None:
    gpu_pods = {name: pod for name, pod in _pods(run) if _gpus(pod)}
    assert set(gpu_pods) == {"matrix-gemma-2-2b", "vllm-gemma-2-9b", "matrix-llama-3-70b"}
    for name, pod in gpu_pods.items():
        assert pod["tolerations"] == [RESERVATION], name
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}, name
    assert gpu_pods["matrix-gemma-2-2b"]["affinity"] == {"nodeAffinity": AFFINITY}
    assert gpu_pods["vllm-gemma-2-9b"]["affinity"] == {"nodeAffinity": AFFINITY}
    assert "affinity" not in gpu_pods["matrix-llama-3-70b"]  # the override is per model
    # CPU-only pods (the persistent model's worker Jobs, the downloads) get neither.
    for name, pod in _pods(run):
        if not _gpus(pod):
            assert "tolerations" not in pod, name
            assert "affinity" not in pod, name


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"gpu": {"tolerations": [{"key": "a", "operator": "Exists", "value": "b"}]}}, "must be unset with"),
        ({"gpu": {"tolerations": [{"operator": "Equal", "value": "b"}]}}, "key must be set unless operator"),
        ({"gpu": {"tolerations": [{"key": "a", "effect": "NoWhere"}]}}, "grace:gpu.tolerations[0].effect"),
        ({"images": {"vllm": "v:1", "job": "j:1", "pullSecret": "Not_A_Name"}}, "pullSecret='Not_A_Name'"),
        ({"models": [{"key": "gemma-2-2b", "nodeAffinity": {}}]}, "must set requiredDuringScheduling"),
        (
            {"models": [{"key": "gemma-2-2b", "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": "In"}]}]
                }
            }}]},
            "does not fit operator In",
        ),
    ],
)  # fmt: skip
def test_a_bad_placement_or_image_setting_is_one_sentence(setting: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as raised:
        GraceConfig.parse({**base_config(), **setting})
    assert "\n" not in str(raised.value)
