"""The facts of NRP's real cluster (grace_infra/nrp/cluster_facts.py, docs/nrp-cluster.md), checked on the
rendered manifests of the committed stacks: GPU pods that can schedule, CephFS volumes the non-root
worker can write, no idle GPUs in the plan, no vLLM pod with internet egress, ephemeral storage
requested, and the refusals of what cannot work on NRP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from grace_infra import constants as c
from grace_infra.commands import render
from grace_infra.commands.offline import OfflineRun
from grace_infra.commands.render import Rendered
from grace_infra.config.quantities import parse_quantity
from grace_infra.config.stack_config import ConfigError, GraceConfig
from grace_infra.errors import PolicyViolation
from grace_infra.nrp import cluster_facts
from worker import contract

from .support import MIXED_MODELS, PROJECT_ROOT, assert_valid_k8s, base_config, pod_templates, render_stack

STACKS = ("nrp", "nrp-generic")
GPU_RESOURCES = set(cluster_facts.known_gpu_resources())


@pytest.fixture(scope="module")
def rendered_stacks() -> dict[str, Rendered]:
    """`python -m grace_infra render --stack <s>` for both committed stacks."""
    return {stack: render.render(stack) for stack in STACKS}


@pytest.fixture(scope="module", params=[*STACKS, "mixed"])
def run(request: pytest.FixtureRequest, rendered_stacks: dict[str, Rendered]) -> OfflineRun:
    """Each committed stack, and the nrp stack with persistent servers beside a job-mode model."""
    if request.param == "mixed":
        return render_stack(base_config(models=MIXED_MODELS))
    return rendered_stacks[request.param].run


def containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def gpu_requests(container: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in container.get("resources", {}).get("requests", {}).items() if k in GPU_RESOURCES}


# --- GPUs that schedule ---------------------------------------------------------------------------


def test_every_gpu_pod_requests_the_resource_its_product_is_served_under(run: OfflineRun) -> None:
    gpu_pods = 0
    for where, template in pod_templates(run.manifests()).items():
        spec = template["spec"]
        for container in containers(spec):
            requested = gpu_requests(container)
            if not requested:
                continue
            gpu_pods += 1
            product = spec["nodeSelector"]["nvidia.com/gpu.product"]
            (resource,) = requested
            assert resource == cluster_facts.gpu_resource_for_product(product), (where, product, resource)
            assert container["resources"]["limits"][resource] == requested[resource], where
            assert not set(container["resources"]["limits"]) - {resource} & GPU_RESOURCES, where
    assert gpu_pods >= 6  # one per model: a StatefulSet or a job-mode Job


def test_the_a100_stack_asks_for_a100s_and_the_generic_stack_for_the_generic_pool(
    rendered_stacks: dict[str, Rendered],
) -> None:
    for stack, resource in (("nrp", "nvidia.com/a100"), ("nrp-generic", "nvidia.com/gpu")):
        models = rendered_stacks[stack].plan["models"]
        assert {m["gpuResource"] for m in models} == {resource}, stack
    warnings = " ".join(rendered_stacks["nrp"].run.warnings)
    assert "[gpu-reservation-needed]" in warnings
    assert "nvidia.com/a100 (NVIDIA A100)" in warnings
    assert not [w for w in rendered_stacks["nrp-generic"].run.warnings if "gpu-reservation" in w]


def test_the_generic_stack_says_which_models_fit_its_cards(rendered_stacks: dict[str, Rendered]) -> None:
    plan = rendered_stacks["nrp-generic"].plan
    gpus = {g["model"]: g for g in plan["gpus"]}
    assert set(gpus) == {m["model"] for m in plan["models"]}
    assert {g["gpuMemoryGb"] for g in gpus.values()} == {48.0}
    # 48 GB cards: the 27B and 120B models on two, Llama-3-70B on four; the fit check agrees.
    counts = {key: gpus[key]["gpus"] for key in ("gemma-2-27b", "gpt-oss-120b", "llama-3-70b")}
    assert counts == {"gemma-2-27b": 2, "gpt-oss-120b": 2, "llama-3-70b": 4}
    assert all(g["fits"] for g in gpus.values())
    assert not [f for f in plan["findings"] if f["rule"] == "gpu-memory-fit"]
    assert "fits" in render.summary(plan)


def test_the_product_table_maps_nrp_label_values() -> None:
    expected = {
        "NVIDIA-A100-SXM4-80GB": "nvidia.com/a100",
        "NVIDIA-A100-80GB-PCIe": "nvidia.com/a100",
        "NVIDIA-A100-PCIE-40GB": "nvidia.com/a100",
        "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb": "nvidia.com/mig-small",
        "NVIDIA-H100-80GB-HBM3": "nvidia.com/h100",
        "NVIDIA-H200": "nvidia.com/h200",
        "NVIDIA-GH200-480GB": "nvidia.com/gh200",
        "NVIDIA-A40": "nvidia.com/a40",
        "NVIDIA-RTX-A6000": "nvidia.com/rtxa6000",
        "Quadro-RTX-8000": "nvidia.com/rtx8000",
        "NVIDIA-RTX-PRO-6000-Blackwell-Server-Edition": "nvidia.com/rtx6000bw",
        "NVIDIA-L40": "nvidia.com/gpu",
        "NVIDIA-RTX-A4000": "nvidia.com/gpu",  # not an A40
        "NVIDIA-GeForce-RTX-3090": "nvidia.com/gpu",
    }
    assert {product: cluster_facts.gpu_resource_for_product(product) for product in expected} == expected
    assert cluster_facts.gpu_resource_for_product(None) == "nvidia.com/gpu"


def test_a_product_paired_with_the_wrong_resource_is_a_policy_error_naming_both() -> None:
    raw = base_config(gpu={"nodeProduct": "NVIDIA-A100-SXM4-80GB", "resourceName": "nvidia.com/gpu"})
    message = (
        r"^\[gpu-resource-product\] model gemma-2-2b selects nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB, "
        r"which NRP serves as nvidia.com/a100, but requests nvidia.com/gpu \(grace:gpu.resourceName\)"
    )
    with pytest.raises(PolicyViolation, match=message):
        render_stack(raw)
    model = {"key": "gemma-2-2b", "gpuProduct": "NVIDIA-L40", "gpuResource": "nvidia.com/a40"}
    message = (
        r"NVIDIA-L40, which NRP serves as nvidia.com/gpu, but requests nvidia.com/a40 "
        r"\(grace:models\[0\].gpuResource\)"
    )
    with pytest.raises(PolicyViolation, match=message):
        render_stack(base_config(models=[model]))


def test_a_resource_without_a_product_picks_a_pool() -> None:
    raw = base_config(gpu={"resourceName": "nvidia.com/a40", "memoryGb": 48}, models=[{"key": "gemma-2-2b"}])
    job = render_stack(raw).manifest("Job", "matrix-gemma-2-2b")
    (vllm,) = [x for x in job["spec"]["template"]["spec"]["initContainers"] if x["name"] == "vllm"]
    assert gpu_requests(vllm) == {"nvidia.com/a40": "1"}
    assert "nodeSelector" not in job["spec"]["template"]["spec"]


def test_an_unknown_gpu_resource_is_a_config_error() -> None:
    message = r"^grace:gpu.resourceName='nvidia.com/a1000' is not a GPU resource NRP advertises \(known: "
    with pytest.raises(ConfigError, match=message):
        GraceConfig.parse(base_config(gpu={"resourceName": "nvidia.com/a1000"}))


def test_grace_hopper_pods_tolerate_the_arm64_taint() -> None:
    raw = base_config(gpu={"nodeProduct": "NVIDIA-GH200-480GB"}, models=[{"key": "gpt-oss-20b"}])
    run = render_stack(raw)
    spec = run.manifest("Job", "matrix-gpt-oss-20b")["spec"]["template"]["spec"]
    # NRP's taint system puts special hardware under nautilus.io/hardware (special-use page, "All
    # Taints"): nautilus.io/hardware=arm64:NoSchedule; the GPU page's older key nautilus.io/arm64 too.
    assert spec["tolerations"] == [
        {"key": "nautilus.io/hardware", "operator": "Equal", "value": "arm64", "effect": "NoSchedule"},
        {"key": "nautilus.io/arm64", "operator": "Exists", "effect": "NoSchedule"},
    ]
    (vllm,) = [x for x in spec["initContainers"] if x["name"] == "vllm"]
    assert gpu_requests(vllm) == {"nvidia.com/gh200": "1"}
    assert_valid_k8s(run.manifest("Job", "matrix-gpt-oss-20b"))
    no_arm = render_stack(base_config(models=[{"key": "gpt-oss-20b"}]))
    assert "tolerations" not in no_arm.manifest("Job", "matrix-gpt-oss-20b")["spec"]["template"]["spec"]


def test_the_quota_caps_the_resource_the_pods_request() -> None:
    raw = base_config()
    raw["namespace"] = {**raw["namespace"], "create": True}
    hard = render_stack(raw).manifest("ResourceQuota", c.QUOTA_NAME)["spec"]["hard"]
    assert {k for k in hard if k.removeprefix("requests.") in GPU_RESOURCES} == {"requests.nvidia.com/a100"}


# --- CephFS volumes the worker can write -------------------------------------------------------------


def _cephfs_claims(rendered: Rendered) -> set[str]:
    cephfs = cluster_facts.FILESYSTEM_STORAGE_CLASSES
    return {s["name"] for s in rendered.plan["storage"] if s["storageClass"] in cephfs}


def _non_root_cephfs_writers(spec: dict[str, Any], cephfs: set[str]) -> list[dict[str, Any]]:
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    }
    pod_user = spec.get("securityContext", {}).get("runAsUser")
    writers = []
    for container in containers(spec):
        user = container.get("securityContext", {}).get("runAsUser", pod_user)
        writes = [
            m
            for m in container.get("volumeMounts", [])
            if claims.get(m["name"]) in cephfs and not m.get("readOnly")
        ]
        if writes and user not in (None, 0):
            writers.append(container)
    return writers


def test_every_non_root_pod_writing_cephfs_has_an_fs_group(rendered_stacks: dict[str, Rendered]) -> None:
    checked = 0
    for rendered in rendered_stacks.values():
        cephfs = _cephfs_claims(rendered)
        assert {c.OUTPUT_PVC, c.LOGS_PVC} <= cephfs
        for where, template in pod_templates(rendered.run.manifests()).items():
            spec = template["spec"]
            for container in _non_root_cephfs_writers(spec, cephfs):
                checked += 1
                context = spec["securityContext"]
                assert context["fsGroup"] == container["securityContext"]["runAsGroup"] == c.WORKER_UID, where
                assert context["fsGroupChangePolicy"] == "OnRootMismatch", where
    assert checked >= 12  # every experiment Job of both stacks


def test_the_documented_upload_pod_has_an_fs_group() -> None:
    text = (PROJECT_ROOT / "jobs" / "README.md").read_text(encoding="utf-8")
    documents = [yaml.safe_load(block) for block in re.findall(r"<<'EOF'\n(.*?)\nEOF", text, re.DOTALL)]
    pods = [d for d in documents if d and d.get("kind") == "Pod"]
    (pod,) = [d for d in pods if d["metadata"]["name"] == "grace-upload"]
    assert_valid_k8s(pod)
    spec = pod["spec"]
    assert _non_root_cephfs_writers(spec, {c.INPUT_PVC}) == spec["containers"]
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsUser"] == c.WORKER_UID
    assert spec["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"


# --- no idle GPUs ------------------------------------------------------------------------------------------


# A ceiling on each committed stack's planned GPU-hours for the whole matrix at the researchers' samples
# per row (docs/studies.md), with some room above the plan: a change that makes the campaign much dearer
# has to say so here. The generic pool's L40s have 42 % of an A100's memory bandwidth and 58 % of its
# FLOPS (grace_infra/planning/gpu_performance.py), so the same matrix costs more there.
PLANNED_GPU_HOURS_AT_MOST = {"nrp": 20, "nrp-generic": 30}


@pytest.mark.parametrize("stack", STACKS)
def test_the_committed_plan_stays_within_its_gpu_hours(
    rendered_stacks: dict[str, Rendered], stack: str
) -> None:
    # Every model in job mode: no GPU waits in a server between runs.
    plan = rendered_stacks[stack].plan
    totals = plan["gpuHours"]["totals"]
    assert totals["configuredGpuHours"] <= PLANNED_GPU_HOURS_AT_MOST[stack]
    # Every reply is planned at its max_tokens; only reasoning (none in the researchers' design) can
    # spend more than planned.
    assert totals["configuredGpuHoursAtBudget"] >= totals["configuredGpuHours"]
    assert {m["servingMode"] for m in plan["models"]} == {"job"}
    assert next(iter(plan)) == "headline"
    assert plan["headline"].startswith(f"GPU-hours: {totals['configuredGpuHours']:,.1f} as configured (")
    # The plan rests on the real study rows, not on a template.
    assert {v["measuredOn"] for v in plan["gpuHours"]["assumptions"]["prompts"].values()} == {
        "300 rows", "2,424 rows"
    }


def test_persistent_serving_stays_an_explicit_choice_with_its_warnings() -> None:
    raw = base_config(models=[{"key": "gemma-2-2b", "servingMode": "persistent"}], plan={"campaignDays": 20})
    run = render_stack(raw)
    assert run.manifest("StatefulSet", "vllm-gemma-2-2b")
    assert any("[two-week-limit] model gemma-2-2b runs as a persistent server" in w for w in run.warnings)
    (default,) = GraceConfig.parse(base_config(models=[{"key": "gemma-2-2b"}])).served_models()
    assert default.serving_mode == "job"


# --- gpt-oss offline; no vLLM pod with internet egress ----------------------------------------------------


def test_no_pod_running_vllm_has_the_https_egress_label(run: OfflineRun) -> None:
    vllm_pods = 0
    for where, template in pod_templates(run.manifests()).items():
        servers = [x for x in containers(template["spec"]) if x["name"] == c.VLLM_CONTAINER_NAME]
        if not servers:
            continue
        vllm_pods += 1
        assert c.LABEL_EGRESS_HTTPS not in template["metadata"]["labels"], where
        env = {e["name"]: e.get("value") for e in servers[0]["env"]}
        assert env["HF_HUB_OFFLINE"] == "1", where
    assert vllm_pods >= 6


def test_gpt_oss_reads_the_vocabulary_its_download_job_stages(run: OfflineRun) -> None:
    staged = 0
    for where, template in pod_templates(run.manifests()).items():
        for server in (x for x in containers(template["spec"]) if x["name"] == c.VLLM_CONTAINER_NAME):
            model = template["metadata"]["labels"]["model"]
            env = {e["name"]: e.get("value") for e in server["env"]}
            download = run.manifest("Job", f"weights-{model}")["spec"]["template"]
            (fetch,) = download["spec"]["containers"]
            fetch_env = {e["name"]: e.get("value") for e in fetch["env"]}
            assert download["metadata"]["labels"][c.LABEL_EGRESS_HTTPS] == "true"
            if model.startswith("gpt-oss"):
                staged += 1
                assert env["TIKTOKEN_ENCODINGS_BASE"] == fetch_env["GRACE_TIKTOKEN_DIR"], where
                assert fetch_env["GRACE_TIKTOKEN_FILES"].startswith("o200k_base.tiktoken="), where
            else:
                assert "TIKTOKEN_ENCODINGS_BASE" not in env
                assert fetch_env["GRACE_TIKTOKEN_FILES"] == ""
            # The weights claim is the same volume in both pods.
            claims = {
                p["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
                for p in (download, template)
                if p["spec"]["volumes"][0].get("persistentVolumeClaim")
            }
            assert claims == {f"{c.WEIGHTS_PVC_PREFIX}{model}"}, where
    assert staged == 2


# --- ephemeral storage ----------------------------------------------------------------------------------


def test_every_container_with_node_local_scratch_requests_ephemeral_storage(run: OfflineRun) -> None:
    checked = 0
    for where, template in pod_templates(run.manifests()).items():
        spec = template["spec"]
        disk = {
            v["name"]: v["emptyDir"]
            for v in spec["volumes"]
            if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"  # memory counts as memory
        }
        for container in containers(spec):
            # One volume may be mounted at several paths (subPath): count each volume once.
            names = {m["name"] for m in container.get("volumeMounts", []) if m["name"] in disk}
            mounted = [disk[name] for name in sorted(names)]
            # vLLM's compile caches live on the writable layer, emptyDir or not.
            if not mounted and container["name"] != c.VLLM_CONTAINER_NAME:
                continue
            checked += 1
            requests, limits = container["resources"]["requests"], container["resources"]["limits"]
            request = parse_quantity(requests["ephemeral-storage"])
            limit = parse_quantity(limits["ephemeral-storage"])
            assert request <= limit <= request * Decimal(str(c.NRP_LIMIT_TO_REQUEST_MAX_RATIO)), where
            assert sum(parse_quantity(v["sizeLimit"]) for v in mounted) <= limit, where
    assert checked >= 12


# --- storage classes ---------------------------------------------------------------------------------------


def test_an_unknown_storage_class_exits_2_with_one_line_naming_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    override = tmp_path / "standard.yaml"
    storage = {**base_config()["storage"], "sharedClass": "standard"}
    override.write_text(yaml.safe_dump({"config": {"grace:storage": storage}}))
    out = tmp_path / "out"
    assert render.main(["--stack", "nrp", "--config-file", str(override), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "error: grace:storage.sharedClass='standard' is not a storage class NRP offers (known: "
    )
    assert "rook-cephfs-central" in err
    assert "rook-ceph-block-east" in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_the_purge_prone_class_stays_refused() -> None:
    storage = {**base_config()["storage"], "sharedClass": "rook-cephfs-ucsd"}
    message = r"^\[storage-forbidden-class\] grace:storage.sharedClass='rook-cephfs-ucsd' is refused"
    with pytest.raises(PolicyViolation, match=message):
        render_stack(base_config(storage=storage))


def test_the_storage_tables_are_nrps_families() -> None:
    assert all(name.startswith("rook-cephfs") for name in cluster_facts.FILESYSTEM_STORAGE_CLASSES)
    assert all(name.startswith("rook-ceph-block") for name in cluster_facts.BLOCK_STORAGE_CLASSES)
    assert cluster_facts.PURGE_PRONE_STORAGE_CLASSES <= cluster_facts.FILESYSTEM_STORAGE_CLASSES


# --- the checkpoint each model is served from ------------------------------------------------------------


def test_the_stack_exports_each_models_checkpoint_and_where_its_commit_is_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exported: dict[str, Any] = {}
    monkeypatch.setattr(pulumi, "export", exported.__setitem__)
    run = render_stack(base_config())
    weights = exported["weights"]
    assert set(weights) == {m["metadata"]["labels"]["model"] for m in run.manifests() if m["kind"] == "Job"}
    assert weights["llama-3-70b"]["hfRepo"] == "meta-llama/Meta-Llama-3-70B-Instruct"
    assert weights["llama-3-70b"]["revision"] == "main"
    assert weights["llama-3-70b"]["weightsMarker"] == c.WEIGHTS_MARKER_PATH
    # Every vLLM container and every job-mode worker can read the marker the download wrote.
    for where, template in pod_templates(run.manifests()).items():
        for container in containers(template["spec"]):
            if container["name"] not in {c.VLLM_CONTAINER_NAME, c.WORKER_CONTAINER_NAME}:
                continue
            env = {e["name"]: e.get("value") for e in container["env"]}
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert env[contract.WEIGHTS_MARKER_ENV] == c.WEIGHTS_MARKER_PATH, where
            assert mounts[c.WEIGHTS_MOUNT]["readOnly"] is True, where
