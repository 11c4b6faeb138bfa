"""What every `pulumi up` does to Jobs and model servers, as the rendered manifests carry it
(docs/lifecycle.md names these tests row by row).

The await mechanism rests on pulumi-kubernetes' source; where the mirrored source is present the test
reads it, so a provider change that breaks the reasoning breaks this test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from grace_infra import constants as c
from grace_infra.commands.offline import OfflineRun
from grace_infra.components.stack import readiness_commands
from grace_infra.config.input_files import offline_input_files
from grace_infra.config.stack_config import GraceConfig
from grace_infra.errors import ConfigError
from grace_infra.manifests import download_job, job_lifecycle
from grace_infra.manifests.extraction_gate import gate_deadline_s
from grace_infra.payloads import download_weights
from grace_infra.planning.gpu_hours import gpu_hour_plan, pod_deadline_s, server_start_bound_s
from grace_infra.planning.matrix import plan_experiments
from grace_infra.planning.study_bundle import load_study_bundle
from tests.support.worker_process import wait_until
from worker import contract

from .support import MIXED_MODELS, PROJECT_ROOT, assert_valid_k8s, render_stack
from .support import base_config as stack_config

PROVIDER_REPO = Path("/work/.mirror/pulumi+pulumi-kubernetes/repo")
WAIT_FOR = {c.AWAIT_OVERRIDE_ANNOTATION: c.AWAIT_CREATED_ONLY}


def base_config(**overrides: Any) -> dict[str, Any]:
    """The nrp stack with persistent servers beside a job-mode model (support.MIXED_MODELS) unless
    `models` is overridden: the committed stack serves every model in its Jobs."""
    return stack_config(**{"models": MIXED_MODELS, **overrides})


JOB_MODE_CONFIG = base_config(
    models=[
        {"key": "gemma-2-2b", "servingMode": "job"},
        {"key": "gemma-2-9b", "servingMode": "persistent", "awaitReadiness": True},
        {"key": "llama-3-70b", "servingMode": "job"},
    ]
)


def jobs_of(run: OfflineRun) -> dict[str, dict[str, Any]]:
    """The experiment Jobs; each model's weight download Job has its own lifecycle (see below)."""
    return {
        m["metadata"]["name"]: m
        for m in run.manifests()
        if m["kind"] == "Job" and m["metadata"]["labels"][c.LABEL_COMPONENT] != c.COMPONENT_WEIGHTS_DOWNLOAD
    }


def download_jobs(run: OfflineRun) -> dict[str, dict[str, Any]]:
    return {
        m["metadata"]["name"]: m
        for m in run.manifests()
        if m["kind"] == "Job" and m["metadata"]["labels"][c.LABEL_COMPONENT] == c.COMPONENT_WEIGHTS_DOWNLOAD
    }


def pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def init_containers(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {x["name"]: x for x in pod(job).get("initContainers", [])}


@pytest.fixture(scope="module")
def job_mode_run() -> OfflineRun:
    """gemma-2-2b and llama-3-70b in job mode, gemma-2-9b persistent and awaited on request."""
    return render_stack(JOB_MODE_CONFIG)


# --- replacing a Job waits for the old one's deletion; creating one never waits for it to finish ------


def _provider_file(path: str) -> str:
    if not PROVIDER_REPO.exists():
        pytest.skip("pulumi-kubernetes source mirror not present")
    return subprocess.run(
        ["git", "-C", str(PROVIDER_REPO), "show", f"HEAD:{path}"], check=True, capture_output=True, text=True
    ).stdout


def test_the_provider_source_still_says_what_the_mechanism_relies_on() -> None:
    overrides = _provider_file("provider/pkg/metadata/overrides.go")
    await_go = _provider_file("provider/pkg/await/await.go")
    # skipAwait skips the deletion wait for Jobs and StatefulSets: the AlreadyExists race.
    skip_list = overrides[overrides.index("func allowsSkipAwaitWithDelete") :]
    skip_list = skip_list[: skip_list.index("return true")]
    assert 'batchv1.SchemeGroupVersion.WithKind("Job")' in skip_list
    assert 'appsv1.SchemeGroupVersion.WithKind("StatefulSet")' in skip_list
    assert "IsAnnotationTrue(inputs, AnnotationSkipAwait) && allowsSkipAwaitWithDelete(inputs)" in overrides
    # waitFor with a jsonpath= value is a custom condition that replaces the built-in awaiter.
    assert 'case strings.HasPrefix(expr, "jsonpath="):' in overrides
    assert await_go.count("if spec, ok := a[id]; ok && spec.await != nil && !custom {") == 2  # create+update
    jsonpath = _provider_file("provider/pkg/jsonpath/jsonpath.go")
    assert "return true if the path" in jsonpath  # `{.metadata.uid}` without a value: exists = satisfied


def test_no_object_skips_the_deletion_wait(mixed_run: OfflineRun, job_mode_run: OfflineRun) -> None:
    for run in (mixed_run, job_mode_run):
        for manifest in run.manifests():
            annotations = manifest["metadata"].get("annotations") or {}
            assert "pulumi.com/skipAwait" not in annotations, manifest["metadata"]["name"]


def test_every_job_is_awaited_only_until_the_api_server_has_it(
    mixed_run: OfflineRun, job_mode_run: OfflineRun
) -> None:
    for run in (mixed_run, job_mode_run):
        jobs = jobs_of(run)
        assert jobs
        for name, job in jobs.items():
            annotations = job["metadata"]["annotations"]
            assert {k: annotations.get(k) for k in WAIT_FOR} == WAIT_FOR, name
            assert c.AWAIT_OVERRIDE_ANNOTATION not in (
                job["spec"]["template"]["metadata"].get("annotations") or {}
            )


def test_the_weight_download_is_awaited_and_fails_at_once_without_access(
    mixed_run: OfflineRun, job_mode_run: OfflineRun
) -> None:
    """The servers and job-mode Jobs are created after it, so their weights are complete when they start
    (components/weights_job.py): pulumi-kubernetes waits for its Complete condition, with the download's
    timeout."""
    for run in (mixed_run, job_mode_run):
        downloads = download_jobs(run)
        assert downloads
        for name, job in downloads.items():
            assert c.AWAIT_OVERRIDE_ANNOTATION not in job["metadata"].get("annotations", {}), name
            assert pod(job)["restartPolicy"] == "Never", name
            rules = job["spec"]["podFailurePolicy"]["rules"]
            fail = [r["onExitCodes"] for r in rules if r["action"] == "FailJob"]
            assert fail == [{
                "containerName": c.WEIGHTS_DOWNLOAD_CONTAINER_NAME, "operator": "In",
                "values": [c.WEIGHTS_DOWNLOAD_EXIT_NO_ACCESS],
            }], name  # fmt: skip
            assert {"type": "DisruptionTarget", "status": "True"} in [
                condition for r in rules for condition in r.get("onPodConditions", [])
            ]
        for resource in run.of_type("kubernetes:batch/v1:Job"):
            if resource.inputs["metadata"]["name"].startswith(c.WEIGHTS_DOWNLOAD_JOB_PREFIX):
                assert resource.create_timeout.endswith("m")


def test_statefulsets_are_not_awaited_unless_the_model_asks(
    mixed_run: OfflineRun, job_mode_run: OfflineRun
) -> None:
    for statefulset in mixed_run.of_type("kubernetes:apps/v1:StatefulSet"):
        assert (
            statefulset.inputs["metadata"]["annotations"][c.AWAIT_OVERRIDE_ANNOTATION] == c.AWAIT_CREATED_ONLY
        )
        assert statefulset.create_timeout == ""
    (awaited,) = job_mode_run.of_type("kubernetes:apps/v1:StatefulSet")
    assert c.AWAIT_OVERRIDE_ANNOTATION not in awaited.inputs["metadata"]["annotations"]
    assert awaited.create_timeout.endswith("m")


def test_stack_outputs_say_how_to_watch_readiness() -> None:
    watch = readiness_commands(GraceConfig.parse(base_config()))
    assert watch["gemma-2-2b"].startswith(
        "kubectl -n grace-experiments rollout status statefulset/vllm-gemma-2-2b --timeout="
    )
    assert "llama-3-70b" not in watch  # job mode: no server to watch; its Job is listed under jobs
    assert watch["jobs"] == "kubectl -n grace-experiments get jobs -l project=grace -w"


# --- a failed pod is judged by its exit code; a disruption is not a failure --------------------------


def test_every_job_fails_at_once_on_exit_2_or_3_and_ignores_disruptions(
    mixed_run: OfflineRun, job_mode_run: OfflineRun
) -> None:
    for run in (mixed_run, job_mode_run):
        for name, job in jobs_of(run).items():
            assert pod(job)["restartPolicy"] == "Never", name  # podFailurePolicy requires it
            assert job["spec"]["backoffLimit"] == c.JOB_BACKOFF_LIMIT, name
            rules = job["spec"]["podFailurePolicy"]["rules"]
            fail = [r["onExitCodes"] for r in rules if r["action"] == "FailJob"]
            worker = [x for x in fail if x["containerName"] == c.WORKER_CONTAINER_NAME]
            assert worker == [{"containerName": "worker", "operator": "In", "values": [2, 3, 4, 6]}], name
            ignore = [r for r in rules if r["action"] == "Ignore"]
            assert ignore == [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
            ], name


def test_the_policy_uses_the_workers_documented_exit_codes() -> None:
    worker_rule = job_lifecycle.pod_failure_policy()["rules"][0]["onExitCodes"]
    assert worker_rule["values"] == [
        contract.EXIT_INPUT, contract.EXIT_ROWS_FAILED, contract.EXIT_STORAGE,
        contract.EXIT_SERVER_START_FAILED,
    ]  # fmt: skip
    assert c.WEIGHTS_DOWNLOAD_EXIT_NO_ACCESS == download_weights.EXIT_NO_ACCESS


# --- how long a Job may run; how long Kubernetes keeps it ------------------------------------------


def test_every_job_has_the_plans_deadline(mixed_run: OfflineRun, job_mode_run: OfflineRun) -> None:
    for raw, run in ((base_config(), mixed_run), (JOB_MODE_CONFIG, job_mode_run)):
        config = GraceConfig.parse(raw)
        bundle, planned = plan_experiments(config)
        jobs = jobs_of(run)
        for job in planned:
            # On the pod, counted from the kubelet's acknowledgement: never from the Job's creation, so a
            # Job waiting for a node or for quota spends none of it.
            assert "activeDeadlineSeconds" not in jobs[job.name]["spec"], job.name
            deadline = jobs[job.name]["spec"]["template"]["spec"]["activeDeadlineSeconds"]
            if job.resumes:
                assert deadline == gate_deadline_s(job), job.name
                continue
            assert deadline == pod_deadline_s(job, config, bundle), job.name
            # Never shorter than what the pod must wait for before it does any work.
            floor = server_start_bound_s(job.model) if job.sidecar else job.model.load_budget_s
            assert deadline > floor, job.name


def test_every_weight_download_has_a_deadline_beyond_pulumis_wait(job_mode_run: OfflineRun) -> None:
    config = GraceConfig.parse(JOB_MODE_CONFIG)
    jobs = {m["metadata"]["name"]: m for m in job_mode_run.manifests() if m["kind"] == "Job"}
    for model in config.served_models():
        spec = jobs[download_job.download_job_name(model)]["spec"]
        awaited_s = int(download_job.download_await_timeout(model).removesuffix("m")) * 60
        assert spec["activeDeadlineSeconds"] == download_job.download_deadline_s(model), model.key
        assert spec["activeDeadlineSeconds"] > awaited_s, model.key


def test_deadline_follows_the_plan_with_the_stated_safety_factor() -> None:
    config = GraceConfig.parse(base_config(models=[{"key": "llama-3-70b", "servingMode": "job"}]))
    bundle, (job,) = plan_experiments(config)
    base = c.JOB_DEADLINE_SAFETY_FACTOR * server_start_bound_s(job.model)
    deadline = pod_deadline_s(job, config, bundle)
    assert deadline > base
    busy_part = deadline - base
    assert busy_part < 7 * 24 * 3600  # never days of slack on a 4-GPU pod
    # A measured throughput replaces the estimate: the busy part is then requests / throughput, doubled.
    requests = gpu_hour_plan(config, bundle).models[0].requests
    for rps in (5, 10):
        measured = GraceConfig.parse(
            base_config(models=[{"key": "llama-3-70b", "servingMode": "job", "throughputRps": rps}])
        )
        bundle2, (job2,) = plan_experiments(measured)
        expected = c.JOB_DEADLINE_SAFETY_FACTOR * requests / rps
        assert pod_deadline_s(job2, measured, bundle2) - base == pytest.approx(expected, abs=2)


def test_no_ttl_by_default(mixed_run: OfflineRun) -> None:
    for name, job in jobs_of(mixed_run).items():
        assert "ttlSecondsAfterFinished" not in job["spec"], name


def test_a_ttl_shorter_than_the_campaign_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"jobs\.ttlSecondsAfterFinished=604800 is shorter than the campaign"
    ):
        GraceConfig.parse(base_config(jobs={"ttlSecondsAfterFinished": 7 * 24 * 3600}))
    longer = GraceConfig.parse(base_config(jobs={"ttlSecondsAfterFinished": 30 * 24 * 3600}))
    assert longer.jobs.ttl_seconds_after_finished == 30 * 24 * 3600


# --- a job-mode rerun whose outputs are complete loads nothing ----------------------------------------


def test_job_mode_checks_the_outputs_before_the_sidecar(job_mode_run: OfflineRun) -> None:
    job = jobs_of(job_mode_run)["matrix-llama-3-70b"]
    names = [x["name"] for x in pod(job)["initContainers"]]
    assert names == [c.OUTPUTS_CHECK_CONTAINER_NAME, c.VLLM_CONTAINER_NAME]  # the download is its own Job
    check = init_containers(job)[c.OUTPUTS_CHECK_CONTAINER_NAME]
    (worker,) = pod(job)["containers"]
    assert "restartPolicy" not in check  # a plain init container: runs to completion before the sidecar
    assert check["image"] == worker["image"]
    assert check["args"] == [
        "check-outputs", "--tasks", "/etc/grace/tasks/matrix-llama-3-70b.json", "--marker",
        c.OUTPUTS_COMPLETE_MARKER,
    ]  # fmt: skip
    assert worker["args"] == ["run", "--tasks", "/etc/grace/tasks/matrix-llama-3-70b.json"]  # the same list
    mounts = {m["mountPath"]: m for m in check["volumeMounts"]}
    assert mounts[c.OUTPUT_MOUNT]["readOnly"] is True  # a check, never a writer
    assert mounts[c.RUN_STATE_MOUNT]["readOnly"] is False
    volumes = {v["name"]: v for v in pod(job)["volumes"]}
    assert "emptyDir" in volumes[c.RUN_STATE_VOLUME]


def test_persistent_jobs_need_no_outputs_check(mixed_run: OfflineRun) -> None:
    job = jobs_of(mixed_run)["study1-exp1-gemma-2-2b"]
    assert "initContainers" not in pod(job)  # no weights to skip: the worker alone exits 0 at once


def _script(container: dict[str, Any], marker: Path) -> list[str]:
    """The wrapped command with the marker path moved to `marker` (the pod's path is /run/grace)."""
    return [arg.replace(c.OUTPUTS_COMPLETE_MARKER, str(marker)) for arg in container["command"]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_sidecar_serves_only_health_when_the_marker_exists(job_mode_run: OfflineRun, tmp_path: Path) -> None:
    sidecar = init_containers(jobs_of(job_mode_run)["matrix-gemma-2-2b"])[c.VLLM_CONTAINER_NAME]
    assert sidecar["restartPolicy"] == "Always"  # still a native sidecar
    # Without the marker: vLLM with its own args, through the start-budget wrapper.
    assert sidecar["command"][4:9] == ["python3", "-c", f"$({c.SERVER_START_SOURCE_ENV})", "vllm", "serve"]
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/health"
    command = _script(sidecar, tmp_path / "outputs-complete")
    (tmp_path / "outputs-complete").write_text("complete\n")
    port = _free_port()
    env = {e["name"]: e["value"] for e in sidecar["env"] if "value" in e}
    proc = subprocess.Popen(
        command, env={"PATH": os.environ["PATH"], **env, "GRACE_IDLE_PORT": str(port)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    answers: list[int] = []

    def health_answered() -> bool:
        try:
            answers.append(_get(f"http://127.0.0.1:{port}/health")[0])
        except OSError:
            return False  # not listening yet
        return True

    try:
        wait_until(health_answered, 30, "the idle sidecar to answer /health")  # only a hang trips it
        assert answers == [200]  # the kubelet's startupProbe passes: the worker container starts
        status, body = _get(f"http://127.0.0.1:{port}/v1/models")
        assert status == 404
        assert "model was not loaded" in json.loads(body)["message"]
    finally:
        proc.send_signal(signal.SIGTERM)  # what the kubelet sends when the worker has exited
        printed, _ = proc.communicate(timeout=10)
    assert "not starting vLLM" in printed


# --- extraction waits for the exp1 run planned beside it -------------------------------------------


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_extraction_waits_for_the_digest_its_exp1_records(
    mixed_run: OfflineRun, job_mode_run: OfflineRun
) -> None:
    jobs = jobs_of(mixed_run)
    for study in ("study1", "study2"):
        exp1 = pod(jobs[f"{study}-exp1-gemma-2-9b"])["containers"][0]["args"]
        extract = pod(jobs[f"structured-output-{study}-gemma-2-9b"])["containers"][0]["args"]
        assert "--supersede" in exp1
        assert "--supersede" in extract
        assert _flag(extract, "--wait-for-digest") == _flag(exp1, "--plan-digest")
    # Job mode: llama-3-70b's exp1 runs in its own Job's task list, its extraction in a Job of its own
    # talking to the one coder (gemma-2-9b, the persistent model here); the link is the same.
    tasks = json.loads(
        job_mode_run.manifest("ConfigMap", c.STUDIES_CONFIGMAP)["data"]["tasks.matrix-llama-3-70b.json"]
    )
    by_output = {_flag(t, "--output"): t for t in tasks}
    exp1 = by_output["/output/exp1/llama-3-70b/study1_responses.csv"]
    extract = pod(jobs_of(job_mode_run)["structured-output-study1-llama-3-70b"])["containers"][0]["args"]
    assert _flag(extract, "--wait-for-digest") == _flag(exp1, "--plan-digest")


def test_a_prompt_edit_gives_exp1_and_its_extraction_a_new_digest(tmp_path: Path) -> None:
    jobs_dir = tmp_path / "jobs"
    for sub in ("studies", "schemas"):
        shutil.copytree(PROJECT_ROOT / "jobs" / sub, jobs_dir / sub)
    config = GraceConfig.parse(base_config())

    def args_by_job() -> dict[str, list[str]]:
        _, planned = plan_experiments(config, load_study_bundle(config, jobs_dir=jobs_dir))
        return {job.name: list(job.args) for job in planned if not job.sidecar}

    before = args_by_job()
    study_file = jobs_dir / "studies" / "researchers" / "study1.yaml"
    study_file.write_text(study_file.read_text() + "\n# a reworded prompt\n")
    after = args_by_job()
    changed = {
        name for name in before if _flag(before[name], "--plan-digest") != _flag(after[name], "--plan-digest")
    }
    assert changed == {name for name in before if "study1" in name}
    for model in ("gemma-2-2b", "gpt-oss-120b"):
        name = f"structured-output-study1-{model}"
        assert _flag(after[name], "--wait-for-digest") != _flag(before[name], "--wait-for-digest")
        assert _flag(after[name], "--wait-for-digest") == _flag(
            after[f"study1-exp1-{model}"], "--plan-digest"
        )


# --- first deploy: one pulumi up -----------------------------------------------------------------------


def test_the_nrp_stack_ships_both_study_csvs_so_one_pulumi_up_is_enough(mixed_run: OfflineRun) -> None:
    data = mixed_run.manifest("ConfigMap", c.STUDIES_CONFIGMAP)["data"]
    assert {"inputs.study1.csv", "inputs.study2.csv"} <= set(data)
    for name, job in jobs_of(mixed_run).items():
        for container in [*pod(job).get("initContainers", []), *pod(job)["containers"]]:
            args = container.get("args") or []
            assert not any(arg.startswith(c.INPUT_MOUNT + "/") for arg in args), name
            assert contract.MISSING_INPUT_HELP_ENV not in {e["name"] for e in container.get("env", [])}, name


def test_the_render_says_which_csv_stands_in_for_the_researchers_file(tmp_path: Path) -> None:
    raw = {"experiments": {"inputFiles": {"study1": "data/study1.csv", "study2": "data/study2.csv"}}}
    substituted, notes = offline_input_files(raw, PROJECT_ROOT)
    shared = PROJECT_ROOT.parent / "shared" / "data" / "study1.csv"
    expected = shared if shared.is_file() else PROJECT_ROOT / "tests" / "fixtures" / "study1_small.csv"
    assert substituted["experiments"]["inputFiles"]["study1"] == str(expected)
    assert notes[0].startswith("grace:experiments.inputFiles.study1=data/study1.csv is not in this checkout")
    assert notes[0].endswith("(`pulumi up` reads data/study1.csv)")
    # A file that exists is read as configured; nothing is substituted.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "study1.csv").write_text("a\n1\n")
    kept, notes = offline_input_files(
        {"experiments": {"inputFiles": {"study1": "data/study1.csv"}}}, tmp_path
    )
    assert kept["experiments"]["inputFiles"]["study1"] == "data/study1.csv"
    assert notes == []


def test_under_pulumi_up_a_missing_csv_is_one_sentence_naming_the_key() -> None:
    raw = base_config(experiments={"inputFiles": {"study1": "data/not-there.csv"}})
    with pytest.raises(
        ConfigError, match=r"^grace:experiments\.inputFiles\.study1='data/not-there\.csv' does not"
    ):
        plan_experiments(GraceConfig.parse(raw))


def test_a_job_reading_the_input_claim_says_which_file_and_how_to_upload_it(render_stack: Any) -> None:
    gemma = {"key": "gemma-2-2b", "servingMode": "persistent"}
    run = render_stack(base_config(experiments={}, models=[gemma]))
    job = jobs_of(run)["study1-exp1-gemma-2-2b"]
    env = {e["name"]: e["value"] for e in pod(job)["containers"][0]["env"] if "value" in e}
    help_text = env[contract.MISSING_INPUT_HELP_ENV]
    assert help_text.startswith("/input/study1.csv must be uploaded to the claim grace-input-data")
    assert "docs/lifecycle.md" in help_text


# --- a second pulumi up with no change; a model added ------------------------------------------------


def _objects(run: OfflineRun) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m["kind"], m["metadata"]["name"]): m for m in run.manifests()}


def test_a_second_pulumi_up_with_no_change_sends_the_same_objects(mixed_run: OfflineRun) -> None:
    # The program is deterministic: the same inputs give byte-identical objects, so Pulumi's diff is
    # empty and no Job is replaced (no timestamps, no random names, no unordered sets in a manifest).
    again = render_stack(base_config())
    assert _objects(again) == _objects(mixed_run)


def test_adding_a_model_to_the_committed_stack_changes_only_the_coders_job() -> None:
    """The committed stack serves every model in its Jobs and its one coder (the default extractor) codes
    every model's replies inside its own Job: a new model adds a task to that Job, so the coder's Job
    changes (its pod template, hence a replacement) and no other existing Job does."""
    committed = stack_config()["models"]
    before_models = [m for m in committed if m["key"] != "gemma-2-2b"]  # then add the smallest back
    before_config = GraceConfig.parse(stack_config(models=before_models))
    coder = before_config.extractor_model()
    assert coder is not None
    before = _objects(render_stack(stack_config(models=before_models)))
    after = _objects(render_stack(stack_config(models=committed)))
    assert GraceConfig.parse(stack_config(models=committed)).extractor_model() == coder  # same coder
    assert not set(before) - set(after)
    changed = {key for key, manifest in before.items() if key[0] == "Job" and after[key] != manifest}
    assert changed, "adding a model left the coder's Job unchanged"
    assert {before[key]["metadata"]["labels"]["model"] for key in changed} == {coder.key}
    assert ("Job", "matrix-gemma-2-2b") in set(after) - set(before)


def test_with_a_persistent_coder_adding_a_model_changes_no_existing_job() -> None:
    """Served persistently (or with grace:jobs.deepseekEndpoint), the coder is not inside any model's Job:
    a new model adds its own objects and every existing Job stays identical."""
    models = [
        {"key": "gemma-2-2b", "servingMode": "persistent"},
        {"key": "llama-3-70b", "servingMode": "job"},
    ]
    # The coder named explicitly: left to its default (the largest model that fits), a larger new model
    # would become every model's coder and change every extraction Job.
    jobs = {"extractor": "gemma-2-2b"}
    before = _objects(render_stack(base_config(models=models, jobs=jobs)))
    added_model = {"key": "gemma-2-9b", "servingMode": "persistent"}
    after = _objects(render_stack(base_config(models=[*models, added_model], jobs=jobs)))
    added = set(after) - set(before)
    assert ("StatefulSet", "vllm-gemma-2-9b") in added
    assert ("Job", "study1-exp1-gemma-2-9b") in added
    assert not set(before) - set(after)
    for key, manifest in before.items():
        if key[0] == "Job":
            assert after[key] == manifest, key  # identical: Pulumi neither updates nor replaces it


def test_every_lifecycle_manifest_is_valid_kubernetes(job_mode_run: OfflineRun) -> None:
    checked = [m for m in job_mode_run.manifests() if m["kind"] in {"Job", "StatefulSet", "ConfigMap"}]
    assert {m["kind"] for m in checked} == {"Job", "StatefulSet", "ConfigMap"}
    for manifest in checked:
        assert_valid_k8s(manifest)
