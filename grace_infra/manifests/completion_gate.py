"""A job-mode rerun whose outputs are complete finishes in seconds without loading the model.

    initContainers [check-outputs, vllm (native sidecar)]   containers [worker]

1. `check-outputs` (the worker image) runs `python -m worker check-outputs --tasks <task list>`: the
   same decision the worker's runner makes (worker/run/completeness.py: output and meta file present for
   the same input and parameters), over every task, with the output claim mounted read-only. When every
   task is complete it writes OUTPUTS_COMPLETE_MARKER into an emptyDir; it never fails the pod (when
   in doubt, the Job runs).
2. `vllm` is wrapped in `sh -c`: with the marker present the sidecar runs `idle_server.py` (answers
   /health, so the kubelet starts the worker) instead of `vllm serve`; without it, it execs its own
   command unchanged. (The weights are fetched before, by the model's download Job, which finds its
   own marker on the claim and skips a download already complete: weights_job.py.)
3. The worker finds each output complete and exits 0 before waiting on the server; the kubelet then
   stops the sidecar and the Job succeeds.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grace_infra import constants as c
from grace_infra.planning.matrix import PlannedJob, tasks_pod_path
from worker import contract

__all__ = ["IDLE_SERVER_ENV", "check_container", "run_state_mount", "run_state_volume", "skip_when_complete"]

_IDLE_SERVER_SOURCE = (Path(__file__).parents[1] / "payloads" / "idle_server.py").read_text()
IDLE_SERVER_ENV = "GRACE_IDLE_SERVER_SOURCE"


def run_state_volume() -> dict[str, Any]:
    return {"name": c.RUN_STATE_VOLUME, "emptyDir": {"sizeLimit": "1Mi"}}


def run_state_mount(*, read_only: bool) -> dict[str, Any]:
    return {"name": c.RUN_STATE_VOLUME, "mountPath": c.RUN_STATE_MOUNT, "readOnly": read_only}


def check_container(job: PlannedJob, worker: dict[str, Any]) -> dict[str, Any]:
    """The outputs check: the worker container's image, identity, mounts and limits, the output claim
    read-only, no metrics port, and its own command."""
    mounts = [
        {**mount, "readOnly": True} if mount["mountPath"] == c.OUTPUT_MOUNT else mount
        for mount in worker["volumeMounts"]
    ]
    return {
        "name": c.OUTPUTS_CHECK_CONTAINER_NAME,
        "image": worker["image"],
        "imagePullPolicy": worker["imagePullPolicy"],
        "args": [contract.CHECK_OUTPUTS_COMMAND, "--tasks", str(tasks_pod_path(job.name)), "--marker",
                 c.OUTPUTS_COMPLETE_MARKER],
        "env": worker["env"],
        "resources": worker["resources"],
        "volumeMounts": [*mounts, run_state_mount(read_only=False)],
        "securityContext": worker["securityContext"],
    }  # fmt: skip


def _unless_complete(container: dict[str, Any], when_complete: str) -> dict[str, Any]:
    """`container` run through `sh -c`: `when_complete` if the marker exists, else its own command."""
    marker = shlex.quote(c.OUTPUTS_COMPLETE_MARKER)
    script = f'if [ -e {marker} ]; then {when_complete}; fi; exec "$@"'
    wrapped = {k: v for k, v in container.items() if k != "args"}
    wrapped["command"] = ["/bin/sh", "-c", script, "sh", *container["command"], *container.get("args", [])]
    mounts = container.get("volumeMounts", [])
    has_state = any(mount["name"] == c.RUN_STATE_VOLUME for mount in mounts)
    wrapped["volumeMounts"] = [*mounts, *([] if has_state else [run_state_mount(read_only=True)])]
    return wrapped


def skip_when_complete(init_containers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sidecar parts (`model_server.vllm_sidecar_parts`) made to skip their work after the marker."""
    wrapped = []
    for container in init_containers:
        if container["name"] == c.VLLM_CONTAINER_NAME:
            idle = _unless_complete(container, f'exec python3 -c "${IDLE_SERVER_ENV}"')
            source = {"name": IDLE_SERVER_ENV, "value": _IDLE_SERVER_SOURCE}
            idle["env"] = [*container.get("env", []), source]
            wrapped.append(idle)
        else:
            wrapped.append(container)
    return wrapped
