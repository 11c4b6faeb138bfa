"""`grace preflight` against recorded Kubernetes API responses, through the real `kubernetes` client.

Each check has a passing and a failing fixture under tests/fixtures/preflight/ (real API object
shapes: VersionInfo, Namespace, ResourceQuotaList with status.hard/used, StorageClassList, NodeList
with labels and status.allocatable, CustomResourceDefinitionList, Secret, and the API's 404 Status).
The stack is the nrp stack with the keys a check depends on pinned in an extra config file, so the
tests say which setting each outcome comes from.
"""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
import yaml

from grace_infra import constants as c
from grace_infra.commands import cli
from grace_infra.commands.kube_client import ClusterUnreachable, stack_kubernetes_context
from grace_infra.commands.preflight import stack_facts
from grace_infra.commands.preflight.checks import quota_needs
from tests.support.kube_api import CONTEXT, NOWHERE, TOKEN, KubeApi, Routes, pin_stack_context, recorded

from .support import PROJECT_ROOT

NS = "grace-experiments"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def route(fixture: str, status: int = HTTPStatus.OK) -> tuple[int, Any]:
    return recorded(f"preflight/{fixture}", status)


PASSING: Routes = {
    ("GET", "/version"): route("version-v1.33.json"),
    ("GET", f"/api/v1/namespaces/{NS}"): route("namespace.json"),
    ("GET", f"/api/v1/namespaces/{NS}/resourcequotas"): route("resourcequotas-room.json"),
    ("GET", "/apis/storage.k8s.io/v1/storageclasses"): route("storageclasses-nrp.json"),
    ("GET", "/api/v1/nodes"): route("nodes-a100.json"),
    ("GET", CRDS): route("crds-prometheus-operator.json"),
    ("GET", f"/api/v1/namespaces/{NS}/secrets/huggingface-token"): route("secret-pulumi-managed.json"),
    ("GET", f"/api/v1/namespaces/{NS}/secrets/gitlab-registry"): route("secret-registry.json"),
}
JOB_IMAGE = "gitlab-registry.nrp-nautilus.io/example-lab/grace-job:0.1.0"  # a researcher's own project
# One gated persistent model on 1 A100 and a job-mode 70B on 4, monitoring on, the token set, the job
# image in the researcher's own registry with its pull secret.
STACK: dict[str, Any] = {
    "gpu": {"resourceName": "nvidia.com/a100", "nodeProduct": "NVIDIA-A100-SXM4-80GB", "memoryGb": 80},
    "images": {"vllm": "vllm/vllm-openai:v0.32.0", "job": JOB_IMAGE, "pullSecret": "gitlab-registry"},
    "models": [
        {"key": "gemma-2-2b", "servingMode": "persistent"}, {"key": "llama-3-70b", "servingMode": "job"},
    ],
    "monitoring": {"enabled": True},
    "hfToken": "hf_fixture",
}


def run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *, routes: Routes | None = None,
    stack: dict[str, Any] | None = None, extra_args: tuple[str, ...] = (), current: str = CONTEXT,
) -> tuple[int, list[str], str, KubeApi]:
    """`grace preflight --stack nrp` against the recorded API: (exit code, stdout lines, stderr, api)."""
    config_file = tmp_path / "stack.yaml"
    config_file.write_text(yaml.safe_dump(STACK if stack is None else stack), encoding="utf-8")
    with KubeApi(PASSING if routes is None else routes) as api:
        kubeconfig = api.write_kubeconfig(tmp_path, current=current)
        code = cli.main([
            "preflight", "--stack", "nrp", "--config-file", str(config_file),
            "--kubeconfig", str(kubeconfig), *extra_args,
        ])  # fmt: skip
    out, err = capsys.readouterr()
    return code, out.splitlines(), err, api


def line(lines: list[str], check: str) -> str:
    found = [ln for ln in lines if ln.split(maxsplit=1)[1].startswith(check)]
    assert len(found) == 1, (check, lines)
    return found[0]


def with_route(path: str, answer: tuple[int, Any]) -> Routes:
    return {**PASSING, ("GET", path): answer}


def test_all_pass_exit_0_one_line_per_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err, api = run(tmp_path, capsys)
    assert code == 0, lines
    assert err == ""
    assert [ln.split()[0] for ln in lines[:-1]] == ["PASS"] * 12
    assert line(lines, "server version").endswith("v1.33.2 >= 1.29 (native sidecars for job-mode pods)")
    assert "1 of 2" not in line(lines, "GPU NVIDIA-A100-SXM4-80GB")
    assert "2 of 2 nodes expose nvidia.com/a100 (up to 8 a node, a pod needs 4)" in line(lines, "GPU")
    placement = line(lines, "placement llama-3-70b")
    assert placement.endswith("2 of 2 NVIDIA-A100-SXM4-80GB node(s) admit its pods, no taints")
    placeholder = c.PLACEHOLDER_JOB_IMAGE_REPOSITORY
    assert line(lines, "job image").endswith(f"{JOB_IMAGE} (not the placeholder {placeholder})")
    secret = line(lines, "pull secret gitlab-registry")
    assert secret.endswith("exists in grace-experiments (kubernetes.io/dockerconfigjson)")
    assert lines[-1].startswith(f"preflight: 12 passed, 0 failed, 0 skipped on context {CONTEXT} ({api.url})")
    # The real client sent the kubeconfig's bearer token on every request.
    assert set(api.authorizations) == {f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    ("path", "fixture", "status", "check", "expected"),
    [
        ("/version", "version-v1.28.json", 200, "server version", "v1.28.15 < 1.29"),
        (f"/api/v1/namespaces/{NS}", "namespace-not-found.json", 404, "namespace", f"{NS} does not exist"),
        (
            f"/api/v1/namespaces/{NS}/resourcequotas", "resourcequotas-exhausted.json", 200, "resource quota",
            "requests.nvidia.com/a100 needs 5, 1 free of 8 in grace-experiments-quota",
        ),
        (
            "/apis/storage.k8s.io/v1/storageclasses", "storageclasses-no-block.json", 200,
            "storage class rook-ceph-block",
            "does not exist; grace-model-weights-gemma-2-2b, grace-model-weights-llama-3-70b would stay",
        ),
        (
            "/apis/storage.k8s.io/v1/storageclasses", "storageclasses-no-block.json", 200,
            "storage class rook-ceph-block", "Fix: use one of rook-cephfs in grace:storage",
        ),
        (
            "/api/v1/nodes", "nodes-a100-none-allocatable.json", 200, "GPU NVIDIA-A100-SXM4-80GB",
            "1 node(s) carry the product but none has nvidia.com/a100 allocatable",
        ),
        (
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "crds-no-prometheus-operator.json",
            200,
            "Prometheus Operator CRDs", "servicemonitors.monitoring.coreos.com does not exist",
        ),
        (
            f"/api/v1/namespaces/{NS}/secrets/huggingface-token", "secret-created-by-hand.json", 200,
            "Secret huggingface-token", "was not created by Pulumi",
        ),
        (
            f"/api/v1/namespaces/{NS}/secrets/gitlab-registry", "secret-not-found.json", 404,
            "pull secret gitlab-registry", "does not exist in grace-experiments: the job image cannot be",
        ),
        (
            f"/api/v1/namespaces/{NS}/secrets/gitlab-registry", "secret-registry-opaque.json", 200,
            "pull secret gitlab-registry", "has type Opaque, not kubernetes.io/dockerconfigjson",
        ),
    ],
)  # fmt: skip
def test_each_failing_fixture_fails_its_check_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str, fixture: str, status: int, check: str,
    expected: str,
) -> None:
    code, lines, err, _ = run(tmp_path, capsys, routes=with_route(path, route(fixture, status)))
    assert code == 2
    assert err == ""
    failed = [ln for ln in lines[:-1] if ln.startswith("FAIL")]
    assert failed == [line(lines, check)], lines
    assert expected in failed[0]
    assert " Fix: " in failed[0]
    assert ", 1 failed," in lines[-1]
    assert lines[-1].endswith("fix the FAIL lines before pulumi up")


def test_the_committed_placeholder_image_is_refused_with_what_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    committed = yaml.safe_load((PROJECT_ROOT / "Pulumi.nrp.yaml").read_text(encoding="utf-8"))
    images = committed["config"]["grace:images"]
    assert images["job"].rsplit(":", 1)[0] == c.PLACEHOLDER_JOB_IMAGE_REPOSITORY  # what the stack ships
    code, lines, _, _ = run(tmp_path, capsys, stack={**STACK, "images": images})
    assert code == 2
    failed = [ln for ln in lines[:-1] if ln.startswith("FAIL")]
    assert failed == [line(lines, "job image")]
    assert f"grace:images.job={images['job']} is the committed placeholder" in failed[0]
    assert "Fix: build and push jobs/Dockerfile" in failed[0]
    assert "pulumi config set --path grace:images.job gitlab-registry.nrp-nautilus.io/" in failed[0]
    # No pull secret configured: that check is skipped, and no Secret is read for it.
    assert line(lines, "image pull secret").startswith("SKIP")


RESERVED_NODES = with_route("/api/v1/nodes", route("nodes-a100-reserved.json"))
RESERVATION = {
    "key": "nautilus.io/reservation", "operator": "Equal", "value": "grace-a100", "effect": "NoSchedule",
}  # fmt: skip


def test_a_reserved_pool_fails_until_its_taint_is_tolerated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, _, _ = run(tmp_path, capsys, routes=RESERVED_NODES)
    assert code == 2
    failed = [ln for ln in lines[:-1] if ln.startswith("FAIL")]
    assert failed == [line(lines, "placement gemma-2-2b"), line(lines, "placement llama-3-70b")]
    assert "is tainted nautilus.io/reservation=grace-a100:NoSchedule" in failed[1]
    assert "add the toleration to grace:gpu.tolerations" in failed[1]
    stack = {**STACK, "gpu": {**STACK["gpu"], "tolerations": [RESERVATION]}}
    code, lines, _, _ = run(tmp_path, capsys, routes=RESERVED_NODES, stack=stack)
    assert code == 0, lines
    assert "tolerating nautilus.io/reservation=grace-a100:NoSchedule" in line(lines, "placement llama-3-70b")
    # Another reservation's value is not tolerated: Equal compares values.
    other = {**RESERVATION, "value": "someone-else"}
    stack = {**STACK, "gpu": {**STACK["gpu"], "tolerations": [other]}}
    code, lines, _, _ = run(tmp_path, capsys, routes=RESERVED_NODES, stack=stack)
    assert code == 2


def test_a_node_affinity_that_admits_no_product_node_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def affinity(region: str) -> dict[str, Any]:
        requirement = {"key": "topology.kubernetes.io/region", "operator": "In", "values": [region]}
        return {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [requirement]}
        ]}}  # fmt: skip

    models = [{"key": "llama-3-70b", "servingMode": "job", "nodeAffinity": affinity("us-east")}]
    code, lines, _, _ = run(tmp_path, capsys, stack={**STACK, "models": models})
    assert code == 2
    assert "nodeAffinity of llama-3-70b admits none of the 2 NVIDIA-A100-SXM4-80GB node(s)" in line(
        lines, "placement llama-3-70b"
    )
    models = [{"key": "llama-3-70b", "servingMode": "job", "nodeAffinity": affinity("us-west")}]
    code, lines, _, _ = run(tmp_path, capsys, stack={**STACK, "models": models})
    assert code == 0, lines


def test_quota_needs_come_from_the_plan(tmp_path: Path) -> None:
    config_file = tmp_path / "stack.yaml"
    config_file.write_text(yaml.safe_dump(STACK), encoding="utf-8")
    facts = stack_facts("nrp", [config_file])
    rows = {row["model"]: row for row in facts.plan["models"]}
    needs = quota_needs(facts)
    # gemma-2-2b persistent (1 GPU) + the job-mode llama-3-70b pod (4 GPUs), every claim of the plan.
    assert needs["requests.nvidia.com/a100"] == rows["gemma-2-2b"]["gpus"] + rows["llama-3-70b"]["gpus"] == 5
    assert needs["pods"] == 2
    assert needs["persistentvolumeclaims"] == len(facts.plan["storage"]) == 5


def test_shipped_gpu_resource_mistake_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Requesting nvidia.com/gpu on A100 nodes that expose only nvidia.com/a100 fails, naming both."""
    stack = {**STACK, "gpu": {**STACK["gpu"], "resourceName": "nvidia.com/gpu"}}
    code, lines, _, _ = run(tmp_path, capsys, stack=stack)
    assert code == 2
    assert "none has nvidia.com/gpu allocatable (they expose nvidia.com/a100)" in line(lines, "GPU")


def test_pod_larger_than_any_node_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A pod's GPUs must all sit on one node: 4 GPUs fit 4-GPU nodes, 8 do not."""
    routes = with_route("/api/v1/nodes", route("nodes-a100-4-per-node.json"))
    code, lines, _, _ = run(tmp_path, capsys, routes=routes)
    assert code == 0
    assert "(up to 4 a node, a pod needs 4)" in line(lines, "GPU")
    big = {"key": "llama-3-70b", "servingMode": "job", "gpus": 8, "tensorParallelSize": 8}
    code, lines, _, _ = run(tmp_path, capsys, routes=routes, stack={**STACK, "models": [big]})
    assert code == 2
    assert "a pod needs 8 nvidia.com/a100 on one node; one node offers at most 4" in line(lines, "GPU")


def test_checks_the_stack_does_not_need_are_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = {k: v for k, v in STACK["images"].items() if k != "pullSecret"}
    stack = {**STACK, "monitoring": {"enabled": False}, "models": [{"key": "gpt-oss-20b"}], "images": images}
    routes = {
        key: answer for key, answer in PASSING.items()
        if "customresourcedefinitions" not in key[1] and "secrets" not in key[1]
    }  # fmt: skip
    code, lines, _, api = run(tmp_path, capsys, routes=routes, stack=stack)
    assert code == 0
    assert line(lines, "Prometheus Operator CRDs").startswith("SKIP")
    assert line(lines, "Secret huggingface-token").startswith("SKIP")
    assert line(lines, "image pull secret").startswith("SKIP")
    assert not any("customresourcedefinitions" in path or "secrets" in path for _, path, _ in api.requests)


def test_gated_model_without_token_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = {k: v for k, v in STACK.items() if k != "hfToken"}
    code, lines, _, _ = run(tmp_path, capsys, stack=stack)
    assert code == 2
    assert "gemma-2-2b, llama-3-70b are gated but grace:hfToken is not set" in line(lines, "Secret")


def test_absent_secret_passes_when_pulumi_will_create_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = f"/api/v1/namespaces/{NS}/secrets/huggingface-token"
    code, lines, _, _ = run(tmp_path, capsys, routes=with_route(path, route("secret-not-found.json", 404)))
    assert code == 0
    assert "pulumi up creates it from grace:hfToken" in line(lines, "Secret")


def test_forbidden_read_fails_that_check_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    forbidden = route("crds-no-prometheus-operator.json", HTTPStatus.FORBIDDEN)
    code, lines, _, _ = run(tmp_path, capsys, routes=with_route(CRDS, forbidden))
    assert code == 2
    assert [ln.split()[0] for ln in lines[:-1]].count("FAIL") == 1
    assert "the API answered HTTP 403" in line(lines, "monitoring crds")


@pytest.mark.parametrize(
    ("stack_context", "argv", "source"),
    [
        (None, ("--context", "nope"), "--context nope"),
        ("nrp-gone", (), "kubernetes:context nrp-gone set in Pulumi.nrp.yaml"),
    ],
)
def test_an_unknown_context_is_one_line(
    stack_context: str | None, argv: tuple[str, ...], source: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    if stack_context:
        pin_stack_context(monkeypatch, tmp_path / "project", stack_context)
    code, lines, err, api = run(tmp_path, capsys, extra_args=argv)
    assert code == 2
    assert lines == []
    assert err == f"error: {source} is not in the kubeconfig (contexts: elsewhere, nautilus).\n"
    assert api.requests == []


@pytest.mark.parametrize(
    ("stack_context", "argv"),
    [
        (None, ("--context", CONTEXT)),  # --context wins over the current context
        (CONTEXT, ()),  # the stack's kubernetes:context wins over the current context
        (NOWHERE, ("--context", CONTEXT)),  # --context wins over both
    ],
)
def test_the_context_is_the_flag_then_the_stacks_then_the_current_one(
    stack_context: str | None, argv: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The current context is another cluster, where nothing answers; only the recorded one can pass."""
    if stack_context:
        pin_stack_context(monkeypatch, tmp_path / "project", stack_context)
    code, lines, _, api = run(tmp_path, capsys, extra_args=argv, current=NOWHERE)
    assert code == 0
    assert f" on context {CONTEXT} ({api.url})" in lines[-1]


def test_missing_kubeconfig_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["preflight", "--stack", "nrp", "--kubeconfig", str(tmp_path / "absent")])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith(f"error: cannot read {tmp_path / 'absent'}: ")


def test_unreachable_cluster_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with KubeApi({}) as api:
        kubeconfig = api.write_kubeconfig(tmp_path)  # the server stops here: its port is closed
    code = cli.main(["preflight", "--stack", "nrp", "--kubeconfig", str(kubeconfig)])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith(f"error: the API server at {api.url} did not answer: ")


def test_a_stack_context_that_is_not_a_name_is_one_sentence(tmp_path: Path) -> None:
    stack_file = tmp_path / "Pulumi.nrp.yaml"
    stack_file.write_text("config:\n  kubernetes:context: {secure: abc}\n", encoding="utf-8")
    with pytest.raises(ClusterUnreachable, match=r"^kubernetes:context in Pulumi.nrp.yaml must be a context"):
        stack_kubernetes_context("nrp", tmp_path)
    stack_file.write_text("config:\n  grace:namespace: {}\n", encoding="utf-8")
    assert stack_kubernetes_context("nrp", tmp_path) is None
