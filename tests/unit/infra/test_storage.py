"""GraceStorage rendered under mocks: exact claims, and data surviving `destroy --exclude-protected`."""

from __future__ import annotations

import pytest

from grace_infra import constants as c
from grace_infra.commands.offline import OfflineRun, RecordedResource
from grace_infra.components.storage import TYPE_TOKEN
from grace_infra.config.catalog import CATALOG
from worker import contract

from .support import base_config, render_stack

PVC_TYPE = "kubernetes:core/v1:PersistentVolumeClaim"
ORIGINAL_WEIGHTS_GI = {  # the researchers' original weights claims
    "gemma-2-2b": 10, "gemma-2-9b": 25, "gemma-2-27b": 70,
    "llama-3-70b": 160, "gpt-oss-20b": 15, "gpt-oss-120b": 70,
}  # fmt: skip


def claims(run: OfflineRun) -> dict[str, dict]:
    return {m["metadata"]["name"]: m for m in run.manifests() if m["kind"] == "PersistentVolumeClaim"}


def _summary(claim: dict) -> tuple[str, str, str]:
    spec = claim["spec"]
    [mode] = spec["accessModes"]
    return spec["resources"]["requests"]["storage"], mode, spec["storageClassName"]


def test_shared_claims_keep_the_original_names_modes_sizes_and_classes(nrp_run: OfflineRun) -> None:
    found = claims(nrp_run)
    assert _summary(found[c.INPUT_PVC]) == ("5Gi", "ReadWriteMany", "rook-cephfs")
    assert _summary(found[c.OUTPUT_PVC]) == ("100Gi", "ReadWriteMany", "rook-cephfs")
    assert _summary(found[c.LOGS_PVC]) == ("10Gi", "ReadWriteMany", "rook-cephfs")


def test_one_weights_claim_per_model_sized_from_the_catalog(nrp_run: OfflineRun) -> None:
    found = claims(nrp_run)
    assert set(found) == {c.INPUT_PVC, c.OUTPUT_PVC, c.LOGS_PVC} | {
        f"grace-model-weights-{k}" for k in CATALOG
    }
    for key, size in ORIGINAL_WEIGHTS_GI.items():
        claim = found[f"grace-model-weights-{key}"]
        assert _summary(claim) == (f"{size}Gi", "ReadWriteOnce", "rook-ceph-block")
        assert claim["metadata"]["labels"]["model"] == key
        assert claim["metadata"]["labels"]["project"] == "grace"


def test_claims_follow_overrides() -> None:
    storage = {
        **base_config()["storage"],
        "weightsClass": "rook-ceph-block-central",
        "logs": {"size": "20Gi", "accessMode": "ReadWriteMany", "storageClass": "rook-cephfs-central"},
    }
    run = render_stack(base_config(storage=storage, models=[{"key": "gpt-oss-20b", "weightsPvcGi": 40}]))
    found = claims(run)
    assert set(found) == {c.INPUT_PVC, c.OUTPUT_PVC, c.LOGS_PVC, "grace-model-weights-gpt-oss-20b"}
    assert _summary(found[c.LOGS_PVC]) == ("20Gi", "ReadWriteMany", "rook-cephfs-central")
    assert _summary(found["grace-model-weights-gpt-oss-20b"]) == (
        "40Gi",
        "ReadWriteOnce",
        "rook-ceph-block-central",
    )


def test_every_claim_is_protected_and_retained(
    nrp_run: OfflineRun, created_namespace_run: OfflineRun
) -> None:
    for run in (nrp_run, created_namespace_run):
        pvcs = run.of_type(PVC_TYPE)
        assert len(pvcs) == 9
        for pvc in pvcs:
            assert pvc.protect, pvc.name
            assert pvc.retain_on_delete, pvc.name


def _kept_by_exclude_protected(run: OfflineRun) -> set[str]:
    """What `pulumi destroy --exclude-protected` keeps: protected resources and their ancestors
    (pulumi/pulumi#8359; a parent cannot be deleted before its children)."""
    by_urn = {resource.urn: resource for resource in run.resources}
    kept: set[str] = set()
    for resource in run.resources:
        if resource.protect:
            urn = resource.urn
            while urn in by_urn and urn not in kept:  # the Stack itself is not recorded
                kept.add(urn)
                urn = by_urn[urn].parent
    return kept


def _kinds(resources: list[RecordedResource]) -> set[str]:
    return {r.type.rsplit(":", 1)[-1] for r in resources}


def test_destroy_exclude_protected_keeps_data_and_namespace_and_removes_workloads(
    created_namespace_run: OfflineRun,
) -> None:
    run = created_namespace_run
    kept = _kept_by_exclude_protected(run)
    kept_custom = [r for r in run.resources if r.urn in kept and r.custom]
    removed = [r for r in run.resources if r.urn not in kept and r.custom]
    assert _kinds(kept_custom) == {"PersistentVolumeClaim", "Namespace"}
    assert len(kept_custom) == 10
    assert {"Job", "Secret", "ServiceAccount", "NetworkPolicy"} <= _kinds(removed)
    # Kept objects only need kept objects: nothing they live in is deleted under them.
    for resource in kept_custom:
        assert set(resource.depends_on) <= kept, resource.name


def test_claims_are_children_of_the_storage_component(nrp_run: OfflineRun) -> None:
    [component] = nrp_run.of_type(TYPE_TOKEN)
    for pvc in nrp_run.of_type(PVC_TYPE):
        assert pvc.parent == component.urn
        assert pvc.name.startswith(f"{component.name}-")


@pytest.mark.parametrize("run_name", ["nrp_run", "mixed_run"])
def test_each_weights_claim_is_mounted_by_its_download_then_one_single_pod_workload(
    run_name: str, request: pytest.FixtureRequest
) -> None:
    """ReadWriteOnce attaches to one node: the model's download Job fills it, and the workloads that
    serve the model (one pod each) are created only after that Job. A second serving workload (the job-mode
    coder's extraction Job) is created suspended, and its gate resumes it only after the first has
    finished (GRACE_AFTER_JOBS on the gate's resume container), so no two pods hold the claim together."""
    run: OfflineRun = request.getfixturevalue(run_name)
    mounts: dict[str, list[tuple[str, str]]] = {}
    for manifest in run.manifests():
        spec = manifest.get("spec") or {}
        template = spec.get("template")
        if not template:
            continue
        for volume in template["spec"].get("volumes", []):
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName", "")
            if claim.startswith(c.WEIGHTS_PVC_PREFIX):
                workload = f"{manifest['kind']}/{manifest['metadata']['name']}"
                assert spec.get("replicas", 1) == 1, workload
                assert spec.get("parallelism", 1) == 1, workload
                mounts.setdefault(claim, []).append((workload, template["metadata"]["labels"]["model"]))
    assert set(mounts) == {f"{c.WEIGHTS_PVC_PREFIX}{key}" for key in CATALOG}
    urns = {
        f"{r.type.rsplit(':', 1)[-1]}/{r.inputs['metadata']['name']}": r
        for r in run.resources
        if r.custom and r.type in {"kubernetes:batch/v1:Job", "kubernetes:apps/v1:StatefulSet"}
    }
    jobs = {m["metadata"]["name"]: m for m in run.manifests() if m["kind"] == "Job"}
    for claim, users in mounts.items():
        key = claim.removeprefix(c.WEIGHTS_PVC_PREFIX)
        assert {model for _, model in users} == {key}, users
        download = f"Job/weights-{key}"
        servers = [workload for workload, _ in users if workload != download]
        assert download in [workload for workload, _ in users]
        for server in servers:
            assert urns[download].urn in urns[server].depends_on, server
        running = [
            s for s in servers if not jobs.get(s.removeprefix("Job/"), {}).get("spec", {}).get("suspend")
        ]
        assert len(running) == 1, servers
        for suspended in set(servers) - set(running):
            name = suspended.removeprefix("Job/")
            gate = jobs[f"{c.GATE_JOB_PREFIX}{name}"]["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e["value"] for e in gate["env"]}
            assert env[contract.RESUME_JOB_ENV] == name
            assert env[contract.AFTER_JOBS_ENV].split(",") == [r.removeprefix("Job/") for r in running]
