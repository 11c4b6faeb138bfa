"""`grace status` against recorded API responses served to the REAL kubernetes client.

The Job, Pod and StatefulSet lists in tests/fixtures/k8s/status.json have the shape the API server
returns (checked here against the Kubernetes schema, strictly); the pod logs are written at test time by
the real worker (a run against the fake OpenAI server, and a run with a missing input file). Not verified
here: a live NRP cluster's exact scheduler messages (the fixture's message follows the scheduler's format).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes.client as k8s
import pytest

from grace_infra.commands import status
from grace_infra.commands.kube_client import connect
from grace_infra.commands.results.campaign import Campaign
from grace_infra.config.stack_config import GraceConfig
from grace_infra.planning.matrix import plan_experiments
from tests.support.fake_openai import FakeOpenAI
from tests.support.kube_api import CONTEXT, NOWHERE, KubeApi, Routes, pin_stack_context
from tests.unit.infra.support import MIXED_MODELS, assert_valid_k8s, base_config

REPO = Path(__file__).resolve().parents[3]
FIXTURE = REPO / "tests" / "fixtures" / "k8s" / "status.json"
NS = "grace-experiments"
RUNNING_POD = "study1-exp1-gemma-2-2b-x7k2p"
FAILED_POD = "study2-exp1-gemma-2-2b-m2v8s"
RESTARTING_POD = "study1-exp1-gemma-2-9b-r5t6y"
MISSING_INPUT = "/input/missing-study1.csv"


def mixed_campaign() -> Campaign:
    """The campaign the recorded cluster runs: the nrp stack with persistent gemma and gpt-oss servers
    beside a job-mode Llama-3-70B (the committed stack serves every model in its Jobs)."""
    config = GraceConfig.parse(base_config(models=MIXED_MODELS))
    _, planned = plan_experiments(config)
    return Campaign(config=config, jobs=tuple(planned))


@pytest.fixture(autouse=True)
def _recorded_campaign(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status, "load_campaign", lambda stack: mixed_campaign())


def _worker(args: list[str], cwd: Path) -> str:
    """The real worker's stderr: what `kubectl logs` shows for its container (non-tty: log lines)."""
    result = subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return result.stderr


@pytest.fixture(scope="module")
def worker_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("logs")
    with FakeOpenAI() as server:
        progress = _worker(
            [
                "query", "--study", "chat/study1", "--input", "tests/fixtures/study1_small.csv",
                "--output", str(folder / "out.csv"), "--model-endpoint", server.base_url,
                "--model-name", "tiny", "--limit", "3", "--metrics-port", "0", "--samples", "1",
            ],
            folder,
        )  # fmt: skip
    fatal = _worker(
        [
            "query", "--study", "chat/study1", "--input", MISSING_INPUT, "--output", str(folder / "x.csv"),
            "--model-endpoint", "http://127.0.0.1:9/v1", "--model-name", "tiny", "--metrics-port", "0",
        ],
        folder,
    )  # fmt: skip
    assert "progress pipeline=query done=3 total=3" in progress, progress
    assert "error" in fatal, fatal
    # A running pod's log ends before the run's last line ("wrote ..."): cut it there.
    running = progress.split("wrote")[0].rsplit("\n", 1)[0]
    return {"running": running, "fatal": fatal}


def _recorded() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def _routes(recorded: dict[str, Any], logs: dict[str, str]) -> Routes:
    log_path = f"/api/v1/namespaces/{NS}/pods/{{}}/log"
    return {
        ("GET", f"/apis/batch/v1/namespaces/{NS}/jobs"): (200, recorded["jobs"]),
        ("GET", f"/api/v1/namespaces/{NS}/pods"): (200, recorded["pods"]),
        ("GET", f"/apis/apps/v1/namespaces/{NS}/statefulsets"): (200, recorded["statefulsets"]),
        ("GET", log_path.format(RUNNING_POD)): (200, logs["running"]),
        ("GET", log_path.format(FAILED_POD)): (200, logs["fatal"]),
        ("GET", log_path.format(RESTARTING_POD)): (200, logs["fatal"]),
    }


@pytest.fixture
def cluster(worker_logs: dict[str, str], tmp_path: Path) -> Iterator[tuple[KubeApi, Path]]:
    with KubeApi(_routes(_recorded(), worker_logs)) as api:
        yield api, api.write_kubeconfig(tmp_path)


def _states(api: KubeApi, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, dict]:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    jobs, servers = status.collect_status(mixed_campaign(), connect(CONTEXT, None).api)
    return {j.job: j.state for j in jobs}, {s.server: s.state for s in servers}


def test_the_recorded_objects_are_valid_kubernetes_objects() -> None:
    recorded = _recorded()
    for key, (api_version, kind) in {
        "jobs": ("batch/v1", "Job"), "pods": ("v1", "Pod"), "statefulsets": ("apps/v1", "StatefulSet")
    }.items():  # fmt: skip
        assert recorded[key]["kind"] == f"{kind}List"
        for item in recorded[key]["items"]:
            assert_valid_k8s({"apiVersion": api_version, "kind": kind, **item})


def test_one_line_per_planned_job_with_its_state(
    cluster: tuple[KubeApi, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, kubeconfig = cluster
    jobs, _ = _states(api, kubeconfig, monkeypatch)
    assert list(jobs) == [job.name for job in mixed_campaign().jobs]
    assert jobs["study1-exp2-gemma-2-2b"] == "succeeded"
    assert jobs["study1-exp1-gemma-2-2b"].startswith("running: query 3/3 rows, ")
    assert jobs["study1-exp1-gemma-2-2b"].endswith(" rows/s")
    assert jobs["study2-exp1-gemma-2-2b"].startswith(
        "failed (BackoffLimitExceeded): worker query: error: --input "
    )
    assert MISSING_INPUT in jobs["study2-exp1-gemma-2-2b"]
    assert jobs["study1-exp1-gemma-2-9b"].startswith(
        "restarting (2 restarts, CrashLoopBackOff): worker query: error"
    )
    assert jobs["matrix-llama-3-70b"].startswith("pending: 0/40 nodes are available: ")
    assert "37 Insufficient nvidia.com/a100" in jobs["matrix-llama-3-70b"]
    assert jobs["study1-exp1-gpt-oss-20b"] == "not found"


def test_logs_are_read_through_the_api_server_with_a_tail(
    cluster: tuple[KubeApi, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, kubeconfig = cluster
    _states(api, kubeconfig, monkeypatch)
    log_reads = [(path, query) for method, path, query in api.requests if path.endswith("/log")]
    assert {path.split("/")[-2] for path, _ in log_reads} == {RUNNING_POD, FAILED_POD, RESTARTING_POD}
    for _, query in log_reads:
        assert query["container"] == ["worker"]
        assert query["tailLines"] == [str(status.LOG_TAIL_LINES)]
    lists = [query for method, path, query in api.requests if path.endswith(("/jobs", "/pods"))]
    assert all(query["labelSelector"] == ["project=grace"] for query in lists)


def test_model_servers_readiness(cluster: tuple[KubeApi, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    api, kubeconfig = cluster
    _, servers = _states(api, kubeconfig, monkeypatch)
    assert servers["vllm-gemma-2-2b"] == "ready 1/1"
    assert servers["vllm-gemma-2-9b"].startswith("pending: 0/40 nodes are available")
    assert "Insufficient nvidia.com/a10." in servers["vllm-gemma-2-9b"]
    assert servers["vllm-gemma-2-27b"] == "loading the model"
    assert servers["vllm-gpt-oss-20b"] == "not created"
    assert "vllm-llama-3-70b" not in servers  # job serving mode: its server is the Job's sidecar


def _sidecar_pod(recorded: dict[str, Any], vllm: dict[str, Any]) -> None:
    """The matrix Job's pod, scheduled, with its vLLM sidecar in the given state."""
    pod = next(p for p in recorded["pods"]["items"] if p["metadata"]["name"].startswith("matrix-"))
    pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                    "lastTransitionTime": "2026-11-30T01:05:12Z"}]  # fmt: skip
    image = "ghcr.io/example/grace-job:1"
    base = {"lastState": {}, "restartCount": 0, "image": image, "imageID": image}
    pod["status"]["initContainerStatuses"] = [
        {"name": "vllm", "state": vllm, "ready": False, "started": False, **base}
    ]
    assert_valid_k8s({"apiVersion": "v1", "kind": "Pod", **pod})


def test_a_job_mode_sidecar_still_loading(
    worker_logs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = copy.deepcopy(_recorded())
    _sidecar_pod(recorded, {"running": {"startedAt": "2026-11-30T01:15:14Z"}})
    with KubeApi(_routes(recorded, worker_logs)) as api:
        jobs, _ = _states(api, api.write_kubeconfig(tmp_path), monkeypatch)
    assert jobs["matrix-llama-3-70b"] == "loading the model"


def _download_job(status_block: dict[str, Any]) -> dict[str, Any]:
    """Job weights-llama-3-70b as the API returns it (the shape of the fixture's Jobs)."""
    labels = {"project": "grace", "app.kubernetes.io/component": "weights-download", "model": "llama-3-70b"}
    job = {
        "metadata": {
            "name": "weights-llama-3-70b", "namespace": NS, "uid": "u-w", "resourceVersion": "787400",
            "creationTimestamp": "2026-11-30T01:00:00Z", "labels": labels,
        },
        "spec": {
            "backoffLimit": 3, "completions": 1, "parallelism": 1,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u-w"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"restartPolicy": "Never", "containers": [
                    {"name": "download-weights", "image": "vllm/vllm-openai:v0.32.0"},
                ]},
            },
        },
        "status": status_block,
    }  # fmt: skip
    assert_valid_k8s({"apiVersion": "batch/v1", "kind": "Job", **job})
    return job


@pytest.mark.parametrize(
    ("download_status", "expected"),
    [
        ({"active": 1, "startTime": "2026-11-30T01:00:05Z"}, "downloading the weights"),
        (
            {"failed": 4, "startTime": "2026-11-30T01:00:05Z", "conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "lastProbeTime": "2026-11-30T01:20:00Z", "lastTransitionTime": "2026-11-30T01:20:00Z"},
            ]},
            "weight download failed (BackoffLimitExceeded): kubectl logs job/weights-llama-3-70b",
        ),
    ],
)  # fmt: skip
def test_a_job_mode_job_waits_for_its_weight_download(
    worker_logs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    download_status: dict[str, Any], expected: str,
) -> None:  # fmt: skip
    """`pulumi up` creates matrix-<model> only after weights-<model> completed: until then the line
    shows the download."""
    recorded = copy.deepcopy(_recorded())
    items = recorded["jobs"]["items"]
    items[:] = [j for j in items if j["metadata"]["name"] != "matrix-llama-3-70b"]
    items.append(_download_job(download_status))
    with KubeApi(_routes(recorded, worker_logs)) as api:
        jobs, _ = _states(api, api.write_kubeconfig(tmp_path), monkeypatch)
    assert jobs["matrix-llama-3-70b"] == expected


def test_the_command_prints_a_table_and_exits_0(
    cluster: tuple[KubeApi, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    api, kubeconfig = cluster
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert status.main(["--stack", "nrp", "--context", CONTEXT]) == 0
    out = capsys.readouterr().out
    assert "model server" in out
    planned = len(mixed_campaign().jobs)
    summary = "1 succeeded, 1 running, 1 pending, 1 restarting, 1 failed"
    where = f"on context {CONTEXT} ({api.url})"
    assert f"{planned} planned Jobs {where}: {summary}, {planned - 5} not found\n" in out
    # The nrp stack sets no TTL: a finished Job is kept, so a missing one was deleted by someone.
    assert "not found: not created yet, or deleted outside Pulumi (finished Jobs are kept" in out
    assert "matrix-llama-3-70b" in out


def test_an_unknown_context_is_one_line_and_exit_2(
    cluster: tuple[KubeApi, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, kubeconfig = cluster
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert status.main(["--context", "no-such-context", "--kubeconfig", str(kubeconfig)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "error: --context no-such-context is not in the kubeconfig (contexts: elsewhere, nautilus)"
    )
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("current", "stack_context", "argv", "used"),
    [
        (NOWHERE, CONTEXT, [], CONTEXT),  # the stack's kubernetes:context wins over the current one
        (NOWHERE, NOWHERE, ["--context", CONTEXT], CONTEXT),  # --context wins over both
        (CONTEXT, None, [], CONTEXT),  # a stack without the setting: the current context
    ],
)
def test_the_context_is_the_flag_then_the_stacks_then_the_current_one(
    current: str, stack_context: str | None, argv: list[str], used: str, tmp_path: Path,
    worker_logs: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    if stack_context:
        pin_stack_context(monkeypatch, tmp_path / "project", stack_context)
    with KubeApi(_routes(_recorded(), worker_logs)) as api:
        kubeconfig = api.write_kubeconfig(tmp_path, current=current)
        assert status.main(["--stack", "nrp", "--kubeconfig", str(kubeconfig), *argv]) == 0
    assert f" planned Jobs on context {used} ({api.url}): " in capsys.readouterr().out
    assert api.requests


def test_an_unknown_stack_context_is_one_line_and_exit_2(
    cluster: tuple[KubeApi, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    api, kubeconfig = cluster
    pin_stack_context(monkeypatch, tmp_path / "project", "nrp-gone")
    assert status.main(["--kubeconfig", str(kubeconfig)]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: kubernetes:context nrp-gone set in Pulumi.nrp.yaml is not in the kubeconfig "
        "(contexts: elsewhere, nautilus).\n"
    )
    assert api.requests == []


def test_an_unreachable_api_server_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with KubeApi({}) as api:
        kubeconfig = api.write_kubeconfig(tmp_path)  # the server stops here: its port is closed
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert status.main(["--context", CONTEXT]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the API server of the kubeconfig context:")
    assert len(err.strip().splitlines()) == 1


def test_a_refused_call_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    forbidden = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Forbidden",
        "message": 'jobs.batch is forbidden: User "someone" cannot list resource "jobs" in API group "batch" '
        'in the namespace "grace-experiments"', "details": {"group": "batch", "kind": "jobs"}, "code": 403,
    }  # fmt: skip
    with KubeApi({("GET", f"/apis/batch/v1/namespaces/{NS}/jobs"): (403, forbidden)}) as api:
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path)))
        assert status.main(["--context", CONTEXT]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "error: the API server refused a call: 403 Forbidden: jobs.batch is forbidden: User"
    )
    assert len(err.strip().splitlines()) == 1


def test_a_container_waiting_to_restart_has_its_previous_runs_log(
    worker_logs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API server answers 400 for the log of a container that is not running; `previous` has it."""
    routes = _routes(_recorded(), worker_logs)
    log_path = f"/api/v1/namespaces/{NS}/pods/{RESTARTING_POD}/log"
    waiting = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "BadRequest",
        "message": f'container "worker" in pod "{RESTARTING_POD}" is waiting to start: CrashLoopBackOff',
        "code": 400,
    }  # fmt: skip
    answers = iter([(400, waiting), (200, worker_logs["fatal"])])

    class Sequenced(dict):
        def get(self, key: tuple[str, str], default: Any = None) -> Any:
            return next(answers) if key == ("GET", log_path) else super().get(key, default)

    with KubeApi(Sequenced(routes)) as api:
        jobs, _ = _states(api, api.write_kubeconfig(tmp_path), monkeypatch)
        reads = [query for method, path, query in api.requests if path == log_path]
    assert [query.get("previous") for query in reads] == [["false"], ["true"]]
    assert jobs["study1-exp1-gemma-2-9b"].startswith(
        "restarting (2 restarts, CrashLoopBackOff): worker query: error"
    )


def test_a_job_mode_log_shows_the_task_number(tmp_path: Path) -> None:
    """`worker run --tasks` (job serving mode) logs `task i/n:` before each task; the line says which."""
    with FakeOpenAI() as server:
        task = [
            "query", "--study", "chat/study1", "--input", "tests/fixtures/study1_small.csv",
            "--model-endpoint", server.base_url, "--model-name", "tiny",
            "--limit", "2", "--metrics-port", "0", "--samples", "1",
        ]  # fmt: skip
        tasks = tmp_path / "tasks.json"
        tasks.write_text(
            json.dumps([[*task, "--output", str(tmp_path / f"out{n}.csv")] for n in (1, 2)]), encoding="utf-8"
        )
        log = _worker(["run", "--tasks", str(tasks)], tmp_path)
    second_task = log[log.index("task 2/2: ") :]
    assert "progress pipeline=query" in second_task, log
    assert status.progress_text(log).startswith("query 2/2 rows, ")
    assert status.progress_text(log).endswith(" rows/s (task 2/2)")


def test_a_job_mode_pod_checking_its_outputs_says_so() -> None:
    # The outputs check runs before the download and the sidecar (grace_infra/manifests/completion_gate.py).
    running = k8s.V1ContainerState(running=k8s.V1ContainerStateRunning())
    waiting = k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason="PodInitializing"))
    pod = k8s.V1Pod(
        status=k8s.V1PodStatus(
            init_container_statuses=[
                k8s.V1ContainerStatus(
                    name=name, state=state, ready=False, restart_count=0, image="i", image_id=""
                )
                for name, state in (
                    ("check-outputs", running),
                    ("download-weights", waiting),
                    ("vllm", waiting),
                )
            ]
        )
    )
    assert status._sidecar_state(pod) == "checking the outputs"


def test_a_pod_the_api_server_returns_without_a_status_reads_as_pending() -> None:
    job = k8s.V1Job(metadata=k8s.V1ObjectMeta(name="exp1-g2b"), status=None)
    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="exp1-g2b-abcde", creation_timestamp=None), status=None)
    assert status.job_state(job, [pod], read_log=lambda name: "") == "pending: starting"
    server = k8s.V1StatefulSet(metadata=k8s.V1ObjectMeta(name="vllm-g2b"), spec=k8s.V1StatefulSetSpec(
        replicas=1, selector=k8s.V1LabelSelector(), service_name="vllm-g2b", template=k8s.V1PodTemplateSpec()
    ))  # fmt: skip
    assert status.server_state(server, pod) == "pending: starting"


def test_a_sidecar_that_failed_to_start_says_why_in_one_line() -> None:
    terminated = k8s.V1ContainerStateTerminated(exit_code=1, reason="Error")
    waiting = k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason="CrashLoopBackOff"))
    pod = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="matrix-g2b-abcde"),
        status=k8s.V1PodStatus(
            init_container_statuses=[
                k8s.V1ContainerStatus(
                    name="vllm", state=waiting, ready=False, restart_count=2, image="i", image_id="",
                    last_state=k8s.V1ContainerState(terminated=terminated),
                )
            ]
        ),
    )  # fmt: skip
    assert status._sidecar_state(pod) == (
        "loading the model: start 3, 2 failed (exit code 1 (Error)); the Job fails after 3 failed starts: "
        "kubectl logs matrix-g2b-abcde -c vllm --previous"
    )


def test_a_suspended_job_says_what_resumes_it() -> None:
    job = k8s.V1Job(
        metadata=k8s.V1ObjectMeta(name="extraction-gemma-2-27b"),
        spec=k8s.V1JobSpec(suspend=True, template=k8s.V1PodTemplateSpec()),
        status=k8s.V1JobStatus(),
    )
    assert status.job_state(job, [], read_log=lambda name: "") == (
        "suspended: no pod and no GPU until resume-extraction-gemma-2-27b finds every input complete"
    )


def test_a_job_failed_by_the_start_budget_shows_the_workers_line() -> None:
    # What the worker prints (worker/cli.py) when the sidecar's wrapper gave up: the one line status shows.
    line = (
        "worker run: error: the vLLM sidecar failed to start 3 times over 412 s (budget 3 starts; last: exit "
        "code 1); see kubectl logs <pod> -c vllm --previous"
    )
    job = k8s.V1Job(
        metadata=k8s.V1ObjectMeta(name="matrix-g2b"),
        status=k8s.V1JobStatus(conditions=[k8s.V1JobCondition(
            type="Failed", status="True", reason="PodFailurePolicy",
            message="Container worker for pod grace/matrix-g2b-abcde failed with exit code 6 matching "
            "FailJob rule at index 0",
        )]),
    )  # fmt: skip
    pod = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="matrix-g2b-abcde", creation_timestamp=datetime(2026, 1, 1))
    )
    state = status.job_state(job, [pod], read_log=lambda name: f"2026 INFO start\n{line}\n")
    assert state == f"failed (PodFailurePolicy): {line}"


def test_the_extraction_gate_says_what_it_waits_for() -> None:
    running = k8s.V1ContainerState(running=k8s.V1ContainerStateRunning())
    pod = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="resume-extraction-x-abcde"),
        status=k8s.V1PodStatus(
            phase="Pending",
            init_container_statuses=[
                k8s.V1ContainerStatus(
                    name="wait-for-inputs", state=running, ready=False, restart_count=0, image="i",
                    image_id="",
                )
            ],
        ),
    )
    assert status._sidecar_state(pod) == (
        "waiting for its inputs (no GPU): kubectl logs resume-extraction-x-abcde -c wait-for-inputs"
    )
