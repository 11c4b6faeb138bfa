"""What later `pulumi up`s do to the weight downloads, the studies ConfigMap, Job policies, the weights
volumes and a removed model, each read from the render under Pulumi's mocks and, where the behaviour is
the provider's or the engine's, from their mirrored source (skipped where the mirror is absent), so a
provider change that breaks the reasoning fails here. docs/lifecycle.md names these tests.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from grace_infra import constants as c
from grace_infra.commands.offline import OfflineRun
from grace_infra.manifests import job_lifecycle

from .support import PROJECT_ROOT, base_config, render_stack

PROVIDER_REPO = Path("/work/.mirror/pulumi+pulumi-kubernetes/repo")
ENGINE_REPO = Path("/work/.mirror/pulumi+pulumi/repo")
JOB_TYPE = "kubernetes:batch/v1:Job"


def _source(repo: Path, path: str) -> str:
    if not repo.exists():
        pytest.skip(f"{repo.parent.name} source mirror not present")
    return subprocess.run(
        ["git", "-C", str(repo), "show", f"HEAD:{path}"], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture(scope="module")
def nrp_run() -> OfflineRun:
    """The committed nrp stack, every model in its Jobs."""
    return render_stack(base_config())


def _jobs(run: OfflineRun, component: str | None = None) -> list[dict[str, Any]]:
    return [
        m
        for m in run.manifests()
        if m["kind"] == "Job"
        and (component is None or m["metadata"]["labels"][c.LABEL_COMPONENT] == component)
    ]


# --- a failed weight download is replaced by the next pulumi up ----------------------------------------


def test_the_provider_replaces_a_job_that_is_not_ready_when_annotated() -> None:
    provider = _source(PROVIDER_REPO, "provider/pkg/provider/provider.go")
    annotations = _source(PROVIDER_REPO, "provider/pkg/metadata/annotations.go")
    assert 'AnnotationReplaceUnready = AnnotationPrefix + "replaceUnready"' in annotations
    block = provider[provider.index("if metadata.ReplaceUnready(newInputs) {") :]
    block = block[: block.index("deleteBeforeReplace :=")]
    assert 'case newInputs.GetKind() == "Job":' in block
    assert "if !jobChecker.Ready(job) {" in block
    assert 'replaces = append(replaces, `.metadata.annotations["pulumi.com/replaceUnready"]`)' in block
    # Ready means Complete: a Failed Job is not Ready (await/checker/job/check.go).
    checker = _source(PROVIDER_REPO, "provider/pkg/await/checker/job/check.go")
    assert "Conditions: []checker.Condition{jobStarted, jobComplete}" in checker


def test_every_weight_download_carries_replace_unready_and_no_experiment_job_does(
    nrp_run: OfflineRun,
) -> None:
    downloads = _jobs(nrp_run, c.COMPONENT_WEIGHTS_DOWNLOAD)
    assert len(downloads) == len(base_config()["models"])
    for job in downloads:
        assert job["metadata"]["annotations"][c.REPLACE_UNREADY_ANNOTATION] == "true", job["metadata"]["name"]
    # A running experiment Job is not Ready either: replaceUnready would kill it at every pulumi up.
    experiments = [j for j in _jobs(nrp_run) if j not in downloads]
    assert experiments
    assert all(c.REPLACE_UNREADY_ANNOTATION not in j["metadata"]["annotations"] for j in experiments)


# --- a changed podFailurePolicy replaces the Job -------------------------------------------------------


def test_every_job_is_replaced_when_its_pod_failure_policy_changes(nrp_run: OfflineRun) -> None:
    # The provider's own replacement triggers for a Job do not include podFailurePolicy, which the API
    # server refuses to update: the option must add it.
    diff = _source(PROVIDER_REPO, "provider/pkg/provider/diff.go")
    job_fields = diff[diff.index("var job = append(") :]
    job_fields = job_fields[: job_fields.index(")")]
    assert '".spec.template"' in job_fields
    assert "podFailurePolicy" not in job_fields
    jobs = nrp_run.of_type(JOB_TYPE)
    assert len(jobs) == len(_jobs(nrp_run))
    for job in jobs:
        assert job.replace_on_changes == list(job_lifecycle.REPLACE_ON_CHANGES), job.name
        assert job.delete_before_replace, job.name  # fixed names: the old Job goes first
        assert "podFailurePolicy" in job.inputs["spec"]
    # The engine's replaceOnChanges keeps the provider's DeleteBeforeReplace, which the provider sets
    # only for its own triggers: the resource option must ask for it.
    engine = _source(ENGINE_REPO, "pkg/resource/deploy/step_generator.go")
    apply = engine[engine.index("func applyReplaceOnChanges(") :]
    apply = apply[: apply.index("\n}\n")]
    assert apply.count("DeleteBeforeReplace") == 2  # passed through unchanged:
    assert "DeleteBeforeReplace: diff.DeleteBeforeReplace," in apply
    assert "deleteBeforeReplace := diff.DeleteBeforeReplace" in engine
    assert "if goal.DeleteBeforeReplace != nil {" in engine


# --- the studies ConfigMap is updated in place -------------------------------------------------------


def test_the_provider_replaces_configmap_data_unless_mutable_configmaps_are_enabled() -> None:
    diff = _source(PROVIDER_REPO, "provider/pkg/provider/diff.go")
    condition = "clients.IsConfigMap(obj) && (!k.enableConfigMapMutable || clients.IsImmutable(obj)) {"
    assert f"}} else if {condition}" in diff
    assert 'props = append(props, properties{".binaryData", ".data"}...)' in diff
    provider = _source(PROVIDER_REPO, "provider/pkg/provider/provider.go")
    # The default provider reads the stack setting kubernetes:enableConfigMapMutable under this name.
    assert 'if enabled, exists := vars["kubernetes:config:enableConfigMapMutable"]; exists {' in provider


@pytest.mark.parametrize("stack", ["nrp", "nrp-generic"])
def test_both_committed_stacks_enable_mutable_configmaps(stack: str) -> None:
    document = yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8"))
    assert document["config"][c.CONFIGMAP_MUTABLE_SETTING] == "true"


def test_the_program_warns_when_configmaps_would_be_replaced(nrp_run: OfflineRun) -> None:
    assert not [w for w in nrp_run.warnings if c.CONFIGMAP_MUTABLE_SETTING in w]
    (configmap,) = [m for m in nrp_run.manifests() if m["kind"] == "ConfigMap"]
    assert "immutable" not in configmap  # an immutable map is replaced whatever the setting
    from grace_infra.commands.offline import run_offline  # noqa: PLC0415 (run without the setting)

    raw = {**base_config(), "hfToken": "hf_placeholder"}
    without = run_offline(raw, secret_keys=["grace:hfToken"])
    (warning,) = [w for w in without.warnings if c.CONFIGMAP_MUTABLE_SETTING in w]
    assert f"deletes and recreates the {c.STUDIES_CONFIGMAP} ConfigMap" in warning
    assert warning.endswith(f"pulumi config set {c.CONFIGMAP_MUTABLE_SETTING} true")


def test_the_yaml_provider_updates_configmaps_in_place_too(tmp_path: Path) -> None:
    run = render_stack(base_config(renderYamlTo=str(tmp_path)))
    (provider,) = run.of_type("pulumi:providers:kubernetes")
    assert provider.inputs["enableConfigMapMutable"] in {True, "true"}


# --- servers mount the weights read-only at the volume level -----------------------------------------


def test_only_the_download_may_write_the_weights_volume(nrp_run: OfflineRun) -> None:
    checked = 0
    for job in _jobs(nrp_run):
        pod = job["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            claim = volume.get("persistentVolumeClaim", {}).get("claimName", "")
            if not claim.startswith(c.WEIGHTS_PVC_PREFIX):
                continue
            checked += 1
            is_download = job["metadata"]["labels"][c.LABEL_COMPONENT] == c.COMPONENT_WEIGHTS_DOWNLOAD
            # readOnly on the volume, not only on each mount: the kubelet skips fsGroup ownership for it.
            assert volume["persistentVolumeClaim"].get("readOnly", False) is not is_download
    # Each model's download and its matrix Job, and the coder's suspended extraction Job.
    assert checked == 2 * len(base_config()["models"]) + 1


# --- removing a model --------------------------------------------------------------------------------


def test_the_engine_refuses_to_delete_a_protected_claim_before_retain_on_delete_applies() -> None:
    step = _source(ENGINE_REPO, "pkg/resource/deploy/step.go")
    apply = step[step.index("func (s *DeleteStep) Apply()") :]
    protected = apply.index("return resource.StatusOK, nil, deleteProtectedError{urn: s.old.URN}")
    retained = apply.index("} else if s.old.RetainOnDelete {")
    assert protected < retained  # protect is checked first: retainOnDelete never gets its turn
    assert "`pulumi state unprotect %[2]s`" in step


def test_the_documented_removal_commands_name_the_rendered_urns(nrp_run: OfflineRun) -> None:
    """docs/lifecycle.md gives `pulumi state unprotect '<urn>'` for a removed model's weights claim: the
    URN pattern there must be the one the program registers."""
    text = (PROJECT_ROOT / "docs" / "lifecycle.md").read_text(encoding="utf-8")
    (documented,) = set(re.findall(r"pulumi state unprotect '(urn:pulumi:[^']+)'", text))
    claims = [r.urn for r in nrp_run.resources if r.type == "kubernetes:core/v1:PersistentVolumeClaim"]
    model = "gemma-2-2b"
    expected = documented.replace("<stack>", "nrp").replace("<model>", model)
    assert expected in claims
    (claim,) = [r for r in nrp_run.resources if r.urn == expected]
    assert claim.protect
    assert claim.retain_on_delete
