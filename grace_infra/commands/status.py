"""`grace status --stack nrp [--context CTX]`: one line per planned Job, and the model servers' readiness.

The Jobs listed are the ones the stack PLANS (the render's planning code), so a Job that was never
created shows up too. Each line is read from the API server with the user's kubeconfig:

    not found          no Job of that name: not created yet, or deleted after it finished (by hand, or
                       by the stack's jobs.ttlSecondsAfterFinished when set); `grace results check` tells
                       which outputs are complete
    pending: <why>     the scheduler's PodScheduled message (e.g. "0/40 nodes are available: ...
                       Insufficient nvidia.com/a100"), or a container's waiting reason (image pull)
    downloading the weights
                       the model's `weights-<model>` Job is still running (`pulumi up` creates the
                       model's server or matrix Job once it has completed)
    suspended: ...     created suspended (the job-mode coder's extraction Job): its CPU gate resumes it
                       once every input is complete; no pod, no GPU until then
    waiting for its inputs, resuming ...
                       the gate itself (resume-extraction-<coder>): its wait, then its resume step
    loading the model  job serving mode: the vLLM sidecar is not ready yet; after a failed start, how
                       many starts failed, how the last ended, and the start budget that fails the Job
    running: ...       rows done/total and rows/s from the worker's last progress log line
                       (worker/run/progress.py: `progress pipeline=... done=... total=... rate=...`), with
                       the task number in a job-mode Job (`task i/n:` lines of `worker run --tasks`)
    restarting: ...    the worker container exited and waits to be restarted; its last error line
    succeeded          the Job's Complete condition
    failed: <line>     the Job's Failed condition and the worker's last error line from the pod's log

Exit codes: 0 printed (whatever the states), 2 bad input or no cluster access.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from grace_infra import constants as c
from grace_infra.commands.arguments import HelpFormatter, add_cluster_arguments, add_stack_argument
from grace_infra.commands.kube_client import cluster_errors, connect
from grace_infra.commands.plan_report import format_table
from grace_infra.commands.results.campaign import Campaign, load_campaign
from grace_infra.config.catalog import ServingMode
from grace_infra.errors import GraceError
from worker import contract

__all__ = ["JobStatus", "ServerStatus", "collect_status", "format_status", "job_state", "main"]

EXIT_OK = 0
EXIT_USAGE = 2
HTTP_BAD_REQUEST = 400
NOT_FOUND = "not found"
# The summary line's order: a campaign's Jobs move from right to left.
SUMMARY_ORDER = (
    "succeeded", "running", "loading the model", "downloading the weights", "suspended", "pending",
    "restarting", "failed", "not found",
)  # fmt: skip
SECONDS_PER_DAY = 86400
LOG_TAIL_LINES = 200  # progress is logged every 5 s: 200 lines reach back past any retry chatter
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set by the Job controller (Kubernetes >= 1.27)
LEGACY_JOB_NAME_LABEL = "job-name"
PROGRESS = re.compile(
    r"progress pipeline=(?P<pipeline>\S+) done=(?P<done>\d+) total=(?P<total>\d+) "
    r"ok=\d+ failed=(?P<failed>\d+) rate=(?P<rate>[\d.]+)"
)
TASK = re.compile(r"task (?P<number>\d+)/(?P<count>\d+): ")
# The worker's fatal line (`worker query: error: ...`, runner.report_fatal) or a log record at ERROR.
ERROR_LINE = re.compile(r": error: | ERROR |Traceback|Error: ")


@dataclass(frozen=True)
class JobStatus:
    job: str
    model: str
    state: str


@dataclass(frozen=True)
class ServerStatus:
    server: str
    model: str
    state: str


def _meta(obj: Any) -> k8s.V1ObjectMeta:
    # The API server sets metadata (name, creationTimestamp) on every object it returns; the generated
    # client models mark every field Optional only because the OpenAPI schema does.
    return cast(k8s.V1ObjectMeta, obj.metadata)


def _name(obj: Any) -> str:
    return cast(str, _meta(obj).name)


def _pod_status(pod: k8s.V1Pod) -> k8s.V1PodStatus:
    """The pod's status; a pod the API server returns before any status is written reads as Pending
    (the phase the API server gives every new pod), with no conditions or container statuses yet."""
    return pod.status or k8s.V1PodStatus(phase="Pending")


def _labels(obj: Any) -> dict[str, str]:
    return dict(obj.metadata.labels or {})


def _job_of(pod: k8s.V1Pod) -> str | None:
    labels = _labels(pod)
    return labels.get(JOB_NAME_LABEL) or labels.get(LEGACY_JOB_NAME_LABEL)


def _condition(conditions: Sequence[Any] | None, kind: str) -> Any | None:
    return next((cond for cond in conditions or [] if cond.type == kind and cond.status == "True"), None)


def last_error_line(log: str) -> str:
    """The worker's last error line; the last line of the log when none looks like one."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if ERROR_LINE.search(line)]
    return (errors or lines or ["(no log)"])[-1]


def progress_text(log: str) -> str:
    """`probs 120/300 rows, 1.52 rows/s (task 2/6)` from the log's last progress and task lines."""
    progress = [m for m in map(PROGRESS.search, log.splitlines()) if m]
    tasks = [m for m in map(TASK.search, log.splitlines()) if m]
    task = f" (task {tasks[-1]['number']}/{tasks[-1]['count']})" if tasks else ""
    if not progress:
        lines = [line.strip() for line in log.splitlines() if line.strip()]
        return f"started, no rows yet{task}" + (f"; last log line: {lines[-1]}" if lines else "")
    last = progress[-1]
    failed = int(last["failed"])
    failures = f", {failed} failed" if failed else ""
    return (
        f"{last['pipeline']} {last['done']}/{last['total']} rows, {float(last['rate']):.2f} rows/s"
        f"{failures}{task}"
    )


def _waiting(statuses: Sequence[Any] | None) -> str | None:
    for status in statuses or []:
        waiting = status.state.waiting if status.state else None
        if waiting and waiting.reason not in {None, "PodInitializing"}:
            return f"{waiting.reason}: {waiting.message}" if waiting.message else waiting.reason
    return None


def _pending_reason(pod: k8s.V1Pod) -> str:
    status = _pod_status(pod)
    scheduled = next((cond for cond in status.conditions or [] if cond.type == "PodScheduled"), None)
    if scheduled is not None and scheduled.status != "True":
        return scheduled.message or scheduled.reason or "not scheduled yet"
    return _waiting(status.init_container_statuses) or _waiting(status.container_statuses) or "starting"


def _sidecar_state(pod: k8s.V1Pod) -> str | None:
    """Job serving mode: `checking the outputs`, then `loading the model` until the vLLM sidecar is ready;
    a sidecar the kubelet has restarted says how many starts failed and how the last one ended."""
    for status in _pod_status(pod).init_container_statuses or []:
        running = status.state.running if status.state else None
        if status.name == c.OUTPUTS_CHECK_CONTAINER_NAME and running:
            return "checking the outputs"  # manifests/completion_gate.py: a complete rerun loads nothing
        if status.name == contract.WAIT_FOR_INPUTS_COMMAND and running:  # the extraction gate, a CPU pod
            return f"waiting for its inputs (no GPU): kubectl logs {_name(pod)} -c {status.name}"
        if status.name == c.VLLM_CONTAINER_NAME and not status.ready:
            restarts = status.restart_count or 0
            if restarts:
                return (
                    f"loading the model: start {restarts + 1}, {restarts} failed ({_last_end(status)}); "
                    f"the Job fails after {c.SERVER_START_ATTEMPTS} failed starts: "
                    f"kubectl logs {_name(pod)} -c vllm --previous"
                )
            return "loading the model" if running else None
    return None


def _last_end(status: Any) -> str:
    """How a restarted container's previous run ended: `exit code 1 (Error)`, `OOMKilled`, ..."""
    terminated = status.last_state.terminated if status.last_state else None
    if terminated is None:
        return "no record"
    return (
        f"exit code {terminated.exit_code} ({terminated.reason})"
        if terminated.reason
        else f"exit code {terminated.exit_code}"
    )


def download_state(download: k8s.V1Job | None) -> str | None:
    """The model's weight download Job, while the workload that needs it cannot exist yet."""
    if download is None:
        return None
    conditions = download.status.conditions if download.status else None
    if _condition(conditions, "Complete"):
        return None
    failed = _condition(conditions, "Failed")
    if failed:
        return f"weight download failed ({failed.reason}): kubectl logs job/{_name(download)}"
    return "downloading the weights"


def job_state(  # noqa: PLR0911 (one return per state)
    job: k8s.V1Job | None, pods: Sequence[k8s.V1Pod], read_log: Any
) -> str:
    """One Job's state line; `read_log(pod_name)` returns the worker container's log tail."""
    if job is None:
        return NOT_FOUND
    latest = max(pods, key=lambda p: cast(datetime, _meta(p).creation_timestamp), default=None)
    conditions = job.status.conditions if job.status else None
    if _condition(conditions, "Complete"):
        return "succeeded"
    failed = _condition(conditions, "Failed")
    if failed:
        detail = last_error_line(read_log(_name(latest))) if latest else failed.message
        return f"failed ({failed.reason}): {detail}"
    if latest is None:
        if job.spec is not None and job.spec.suspend:
            # manifests/extraction_gate.py: the gate resumes it once every input is complete.
            gate = f"{c.GATE_JOB_PREFIX}{_name(job)}"
            return f"suspended: no pod and no GPU until {gate} finds every input complete"
        return "pending: no pod yet"
    sidecar = _sidecar_state(latest)
    if sidecar:
        return sidecar
    status = _pod_status(latest)
    if status.phase == "Pending":
        return f"pending: {_pending_reason(latest)}"
    containers = status.container_statuses or []
    resuming = next((s for s in containers if s.name == c.GATE_RESUME_CONTAINER_NAME), None)
    if resuming is not None and resuming.state and resuming.state.running:
        return f"resuming its Job once the coder's matrix Job has finished: kubectl logs {_name(latest)}"
    worker = next((s for s in status.container_statuses or [] if s.name == c.WORKER_CONTAINER_NAME), None)
    if worker is not None and worker.state and worker.state.waiting:
        return (
            f"restarting ({worker.restart_count} restarts, {worker.state.waiting.reason}): "
            f"{last_error_line(read_log(_name(latest)))}"
        )
    if status.phase == "Running":
        return f"running: {progress_text(read_log(_name(latest)))}"
    return status.phase or "unknown"


def server_state(statefulset: k8s.V1StatefulSet | None, pod: k8s.V1Pod | None) -> str:
    if statefulset is None:
        return "not created"
    ready = (statefulset.status.ready_replicas or 0) if statefulset.status else 0
    wanted = statefulset.spec.replicas if statefulset.spec.replicas is not None else 1
    if ready >= wanted:
        return f"ready {ready}/{wanted}"
    if pod is None:
        return f"not ready {ready}/{wanted}: no pod yet"
    status = _pod_status(pod)
    if status.phase == "Pending":
        return f"pending: {_pending_reason(pod)}"
    waiting = _waiting(status.container_statuses)
    return f"not ready: {waiting}" if waiting else "loading the model"


def collect_status(campaign: Campaign, api: k8s.ApiClient) -> tuple[list[JobStatus], list[ServerStatus]]:
    namespace = campaign.namespace
    core, batch, apps = k8s.CoreV1Api(api), k8s.BatchV1Api(api), k8s.AppsV1Api(api)
    selector = f"{c.LABEL_PROJECT}={c.PROJECT}"
    jobs = {_name(job): job for job in batch.list_namespaced_job(namespace, label_selector=selector).items}
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    sets = {_name(s): s for s in apps.list_namespaced_stateful_set(namespace, label_selector=selector).items}

    def read_log(pod_name: str) -> str:
        for previous in (False, True):
            try:
                return core.read_namespaced_pod_log(
                    pod_name, namespace, container=c.WORKER_CONTAINER_NAME, tail_lines=LOG_TAIL_LINES,
                    previous=previous,
                )  # fmt: skip
            except ApiException as err:
                if err.status != HTTP_BAD_REQUEST or previous:
                    return f"(log not available: {err.status} {err.reason})"
                # 400: the container is not running (waiting to restart); its previous run has the log.
        raise AssertionError("unreachable")

    def download(model_key: str) -> str | None:
        return download_state(jobs.get(f"{c.WEIGHTS_DOWNLOAD_JOB_PREFIX}{model_key}"))

    def planned_state(name: str, model_key: str, sidecar: bool) -> str:
        job = jobs.get(name)
        if job is None and sidecar:  # created only after the model's weight download has completed
            return download(model_key) or NOT_FOUND
        return job_state(job, [p for p in pods if _job_of(p) == name], read_log)

    job_lines = [
        JobStatus(
            planned.name, planned.model.key, planned_state(planned.name, planned.model.key, planned.sidecar)
        )
        for planned in campaign.jobs
    ]
    by_name = {_name(pod): pod for pod in pods}
    server_lines = [
        ServerStatus(
            model.server_name,
            model.key,
            (sets.get(model.server_name) is None and download(model.key))
            or server_state(sets.get(model.server_name), by_name.get(f"{model.server_name}-0")),
        )
        for model in campaign.config.served_models()
        if model.serving_mode is ServingMode.PERSISTENT
    ]
    return job_lines, server_lines


def format_status(
    jobs: list[JobStatus], servers: list[ServerStatus], ttl_s: int | None, where: str = ""
) -> str:
    """The two tables and a summary; `ttl_s` is the Jobs' ttlSecondsAfterFinished (why one may be gone;
    None: finished Jobs are kept until `pulumi destroy`); `where` names the context read, e.g.
    ` on context nautilus (https://...)`."""
    server_table = format_table(
        ["model server", "model", "state"], [[s.server, s.model, s.state] for s in servers]
    )
    job_table = format_table(["job", "model", "state"], [[j.job, j.model, j.state] for j in jobs])
    # A state's kind is its text before the detail: `running: ...`, `failed (...): ...`, `not found (...)`.
    kinds = Counter(re.split(r":| \(", j.state, maxsplit=1)[0] for j in jobs)
    ordered = sorted(kinds, key=lambda kind: SUMMARY_ORDER.index(kind) if kind in SUMMARY_ORDER else 99)
    counts = ", ".join(f"{kinds[kind]} {kind}" for kind in ordered)
    summary = f"{len(jobs)} planned Jobs{where}: {counts}"
    if kinds[NOT_FOUND]:
        deleted = (
            "deleted outside Pulumi (finished Jobs are kept until `pulumi destroy`)"
            if ttl_s is None
            else f"deleted {ttl_s / SECONDS_PER_DAY:g} days after it finished (ttlSecondsAfterFinished)"
        )
        summary += (
            f"\n{NOT_FOUND}: not created yet, or {deleted}; `grace results check` shows which outputs are "
            "complete."
        )
    return f"{server_table}\n\n{job_table}\n\n{summary}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grace status",
        description="One line per planned Job and model server, read from the live cluster.",
        epilog="exit codes: 0 status printed, 2 bad input or no cluster access",
        formatter_class=HelpFormatter,
    )
    add_stack_argument(parser)
    add_cluster_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        campaign = load_campaign(args.stack)
        cluster = connect(args.context, args.kubeconfig, stack=args.stack)
        with cluster_errors():
            jobs, servers = collect_status(campaign, cluster.api)
    except GraceError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    where = f" on context {cluster.context} ({cluster.host})"
    print(format_status(jobs, servers, campaign.config.jobs.ttl_seconds_after_finished, where))
    return EXIT_OK
