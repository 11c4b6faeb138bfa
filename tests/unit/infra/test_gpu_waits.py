"""No GPU pod waits for another Job's output: a check over the rendered nrp manifests alone.

For every Job whose pod requests a GPU, each task its worker runs (the `run --tasks` list shipped in the
studies ConfigMap, or the container's own args) reads an `--input` that is
  - already present: a study CSV in the ConfigMap (/etc/grace) or on the input claim (/input), or
  - produced earlier in the same pod (an earlier task's `--output`), or
  - the Job is created with `spec.suspend: true` and the only thing that can resume it is a pod that
    requests no GPU: the one Role allowed to patch it names it alone and is bound to a ServiceAccount
    that only CPU pods use, and that pod waits (`wait-for-inputs`) over the very task list the Job runs.
The test reads nothing from the planning code: only the manifests `pulumi up` would send.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import PurePosixPath
from typing import Any

from grace_infra import constants as c
from grace_infra.commands.offline import OfflineRun
from grace_infra.config.stack_config import GraceConfig
from grace_infra.payloads import resume_job
from grace_infra.planning.matrix import plan_experiments
from worker import contract
from worker.cli import parse_subcommand

from . import support

GPU_PREFIX = "nvidia.com/"
ALREADY_PRESENT = (PurePosixPath(contract.STUDIES_MOUNT), PurePosixPath(c.INPUT_MOUNT))


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _requests_gpu(pod: dict[str, Any]) -> bool:
    return any(
        name.startswith(GPU_PREFIX)
        for container in _containers(pod)
        for name in container.get("resources", {}).get("requests", {})
    )


def _tasks(run: OfflineRun, pod: dict[str, Any]) -> tuple[str, list[list[str]]]:
    """(task list path or '', the worker's argv lists) of a Job's worker container."""
    worker = next(ct for ct in pod["containers"] if ct["name"] == c.WORKER_CONTAINER_NAME)
    args = worker["args"]
    if args[0] != contract.RUN_COMMAND:
        return "", [args]
    path = args[args.index("--tasks") + 1]
    return path, _task_list(run, pod, path)


def _task_list(run: OfflineRun, pod: dict[str, Any], path: str) -> list[list[str]]:
    """The task list as the pod sees it: the ConfigMap key its studies volume projects at `path`."""
    relative = str(PurePosixPath(path).relative_to(contract.STUDIES_MOUNT))
    volume = next(v for v in pod["volumes"] if v.get("configMap", {}).get("name") == c.STUDIES_CONFIGMAP)
    key = next(item["key"] for item in volume["configMap"]["items"] if item["path"] == relative)
    return json.loads(run.manifest("ConfigMap", c.STUDIES_CONFIGMAP)["data"][key])


def _flag(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def _resumers(run: OfflineRun, job: str) -> list[dict[str, Any]]:
    """The pod templates of every pod whose ServiceAccount may patch Job `job`."""
    manifests = run.manifests()
    roles = {
        m["metadata"]["name"]: m
        for m in manifests
        if m["kind"] == "Role"
        and any(
            "jobs" in rule["resources"] and {"patch", "update", "*"} & set(rule["verbs"])
            for rule in m.get("rules", [])
        )
    }
    for role in roles.values():
        for rule in role["rules"]:
            if "jobs" in rule["resources"]:
                assert rule.get("resourceNames"), f"Role {role['metadata']['name']} may patch every Job"
    accounts = {
        subject["name"]
        for m in manifests
        if m["kind"] == "RoleBinding"
        and m["roleRef"]["name"] in roles
        and any(job in rule.get("resourceNames", []) for rule in roles[m["roleRef"]["name"]]["rules"])
        for subject in m["subjects"]
        if subject["kind"] == "ServiceAccount"
    }
    return [
        template["spec"]
        for template in support.pod_templates(manifests).values()
        if template["spec"].get("serviceAccountName") in accounts
    ]


def check_no_gpu_pod_waits(run: OfflineRun) -> list[str]:
    """Every GPU Job's tasks, judged as the module docstring says; the problems found (empty: none)."""
    problems = []
    jobs = [m for m in run.manifests() if m["kind"] == "Job"]
    for manifest in jobs:
        name, spec = manifest["metadata"]["name"], manifest["spec"]
        pod = spec["template"]["spec"]
        if not _requests_gpu(pod) or not any(
            ct["name"] == c.WORKER_CONTAINER_NAME for ct in pod["containers"]
        ):
            continue
        tasks_path, tasks = _tasks(run, pod)
        written: set[str] = set()
        for task in tasks:
            _, args = parse_subcommand(task)
            source = PurePosixPath(str(args.input))
            present = any(source.is_relative_to(root) for root in ALREADY_PRESENT)
            if not present and str(source) not in written:
                resumers = _resumers(run, name)
                gated = (
                    spec.get("suspend") is True
                    and resumers
                    and not any(_requests_gpu(p) for p in resumers)
                    and all(
                        any(
                            ct["args"][:3] == [contract.WAIT_FOR_INPUTS_COMMAND, "--tasks", tasks_path]
                            for ct in p.get("initContainers", [])
                        )
                        for p in resumers
                    )
                )
                if not gated:
                    problems.append(f"{name}: {task[0]} reads {source}, written by another Job, on a GPU")
            written.add(str(args.output))
    return problems


def test_no_gpu_pod_waits_for_another_jobs_output(nrp_run: OfflineRun) -> None:
    jobs = {m["metadata"]["name"]: m for m in nrp_run.manifests() if m["kind"] == "Job"}
    assert check_no_gpu_pod_waits(nrp_run) == []
    # The nrp stack's coder does read other Jobs' outputs, so the gated branch is what this checked.
    suspended = [name for name, m in jobs.items() if m["spec"].get("suspend")]
    assert suspended == [f"{c.EXTRACTION_JOB_PREFIX}gemma-2-27b"]
    gate = jobs[f"{c.GATE_JOB_PREFIX}{suspended[0]}"]["spec"]["template"]["spec"]
    assert not _requests_gpu(gate)


def test_the_check_finds_extraction_on_a_gpu_that_is_not_suspended(nrp_run: OfflineRun) -> None:
    # The same render with the extraction Job created running: the check must name it.
    resources = []
    for resource in nrp_run.resources:
        inputs = resource.inputs
        if inputs.get("kind") == "Job" and inputs.get("spec", {}).get("suspend"):
            inputs = {**inputs, "spec": {k: v for k, v in inputs["spec"].items() if k != "suspend"}}
        resources.append(dataclasses.replace(resource, inputs=inputs))
    unsuspended = OfflineRun(resources=resources, warnings=[])
    problems = check_no_gpu_pod_waits(unsuspended)
    assert problems
    assert all(
        p.startswith(f"{c.EXTRACTION_JOB_PREFIX}gemma-2-27b: extract reads /output/exp1/") for p in problems
    )


def test_the_gate_waits_for_every_input_the_suspended_job_reads(nrp_rendered: Any) -> None:
    config: GraceConfig = nrp_rendered.config
    _, planned = plan_experiments(config)
    suspended = next(job for job in planned if job.suspended)
    gate = next(job for job in planned if job.resumes == suspended.name)
    # One task list for both: the gate's wait and the Job's run read the same ConfigMap key.
    assert gate.args[gate.args.index("--tasks") + 1] == suspended.args[suspended.args.index("--tasks") + 1]
    for task in suspended.tasks:
        assert _flag(list(task), "--wait-for-digest"), task  # the gate checks the planned exp1 run
        assert _flag(list(task), "--wait-for-input") == str(c.GATED_INPUT_WAIT_S)


def test_the_resume_step_keeps_the_contracts_names() -> None:
    assert resume_job.RESUME_JOB_ENV == contract.RESUME_JOB_ENV
    assert resume_job.AFTER_JOBS_ENV == contract.AFTER_JOBS_ENV


def test_the_resume_step_sends_one_merge_patch_to_its_job() -> None:
    request = resume_job.resume_request("https://10.0.0.1:443", "grace-experiments", "extraction-x", "token")
    assert request.get_method() == "PATCH"
    assert request.full_url == "https://10.0.0.1:443/apis/batch/v1/namespaces/grace-experiments/jobs/extraction-x"
    assert request.headers["Content-type"] == "application/merge-patch+json"
    assert json.loads(request.data or b"") == {"spec": {"suspend": False}}
    assert resume_job.finished({"status": {"conditions": [{"type": "Failed", "status": "True"}]}})
    assert not resume_job.finished({"status": {"conditions": [{"type": "Suspended", "status": "True"}]}})
    assert not resume_job.finished({"status": {}})


def test_every_rendered_object_of_the_gate_validates(nrp_run: OfflineRun, assert_valid_k8s: Any) -> None:
    # Kubernetes 1.30's schema, strict: the suspended Job, the gate Job, its Role and RoleBinding, the
    # ServiceAccount and the NetworkPolicy that lets it reach the API server.
    names = {
        ("Job", f"{c.EXTRACTION_JOB_PREFIX}gemma-2-27b"),
        ("Job", f"{c.GATE_JOB_PREFIX}{c.EXTRACTION_JOB_PREFIX}gemma-2-27b"),
        ("Role", c.SA_EXTRACTION_GATE),
        ("RoleBinding", c.SA_EXTRACTION_GATE),
        ("ServiceAccount", c.SA_EXTRACTION_GATE),
        ("NetworkPolicy", c.NETPOL_GATE_API_EGRESS),
    }
    for kind, name in names:
        assert_valid_k8s(nrp_run.manifest(kind, name))


def test_only_the_suspended_job_ignores_the_gates_change(nrp_run: OfflineRun) -> None:
    # The gate patches spec.suspend; a refresh reads it back, and the next `pulumi up` must not undo it.
    ignoring = {
        r.inputs["metadata"]["name"]: r.ignore_changes
        for r in nrp_run.of_type("kubernetes:batch/v1:Job")
        if r.ignore_changes
    }
    assert ignoring == {f"{c.EXTRACTION_JOB_PREFIX}gemma-2-27b": ["spec.suspend"]}
