"""The vLLM sidecar's start budget, run for real: the wrapper the nrp render ships (payloads/server_start.py,
taken from the rendered container's environment), a vLLM stand-in that exits at once, and the real worker
with the environment the rendered pod gives it.

What the kubelet does is played by the test: it starts the sidecar again after every exit (a restartable
init container is restarted whatever its exit code), probes /health, and starts the worker once the probe
passes. No clock is involved: the budget counts starts, and the time it takes is bounded by what each
start may cost (gpu_hours.server_start_bound_s), which the README states.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from grace_infra import constants as c
from grace_infra.commands.offline import OfflineRun
from grace_infra.config.stack_config import GraceConfig
from grace_infra.payloads import server_start
from grace_infra.planning.gpu_hours import server_start_bound_s, startup_window_s
from worker import contract

REPO = Path(__file__).resolve().parents[3]
EXITS_AT_ONCE = [sys.executable, "-c", "import sys; sys.exit(1)"]  # vLLM with a bad flag, say
JOB = "matrix-gemma-2-2b"


def _pod(run: OfflineRun) -> dict[str, Any]:
    return run.manifest("Job", JOB)["spec"]["template"]["spec"]


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(ct for ct in [*pod.get("initContainers", []), *pod["containers"]] if ct["name"] == name)


def _env(container: dict[str, Any], run_state: Path) -> dict[str, str]:
    """The container's variables with the pod's run-state emptyDir moved to `run_state`."""
    return {
        e["name"]: e["value"].replace(c.RUN_STATE_MOUNT, str(run_state))
        for e in container["env"]
        if "value" in e
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _health(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def _start_sidecar(source: str, env: dict[str, str], port: int) -> subprocess.Popen[str]:
    """One start of the sidecar as the rendered command runs it: python3 -c <wrapper> <vLLM's command>."""
    return subprocess.Popen(
        [sys.executable, "-c", source, *EXITS_AT_ONCE],
        env={"PATH": os.environ["PATH"], **env, server_start.PORT_ENV: str(port)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_a_server_that_exits_at_once_fails_the_job_through_its_failure_policy(
    nrp_run: OfflineRun, tmp_path: Path
) -> None:
    pod = _pod(nrp_run)
    sidecar = _container(pod, c.VLLM_CONTAINER_NAME)
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: the kubelet restarts it forever
    env = _env(sidecar, tmp_path)
    source = env.pop(c.SERVER_START_SOURCE_ENV)
    assert source == (REPO / "grace_infra" / "payloads" / "server_start.py").read_text()
    budget = int(env[contract.SERVER_START_ATTEMPTS_ENV])
    port = _free_port()

    # The kubelet restarts the sidecar after each exit: every start within the budget runs "vLLM".
    for start in range(1, budget + 1):
        proc = _start_sidecar(source, env, port)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 1, output  # the stand-in's own exit code, passed through
        assert f"start {start} of {budget}" in output
        assert not (tmp_path / Path(c.SERVER_START_FAILED_MARKER).name).exists()

    # The next start gives up: it writes the marker and answers /health, so the startup probe passes.
    proc = _start_sidecar(source, env, port)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once its socket listens
        assert line.startswith("grace: not starting vLLM again: the vLLM sidecar failed to start 3 times")
        assert _health(port) == 200  # the startup probe passes
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    marker = Path(env[contract.SERVER_START_FAILED_ENV])
    reason = marker.read_text().strip()
    assert re.match(
        r"the vLLM sidecar failed to start 3 times over \d+ s \(budget 3 starts; last: exit code 1\)", reason
    )

    # The kubelet starts the worker: the real worker, with the rendered pod's variables and arguments.
    worker = _container(pod, c.WORKER_CONTAINER_NAME)
    worker_env = _env(worker, tmp_path)
    assert worker_env[contract.SERVER_START_FAILED_ENV] == str(marker)
    result = subprocess.run(
        [sys.executable, "-m", "worker", *worker["args"]],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO),
             contract.SERVER_START_FAILED_ENV: str(marker)},
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.stderr.strip().splitlines()[-1] == f"worker run: error: {reason}"
    # ...and its exit code is one the Job's podFailurePolicy turns into FailJob for that container.
    rules = nrp_run.manifest("Job", JOB)["spec"]["podFailurePolicy"]["rules"]
    fail_job = [
        r["onExitCodes"] for r in rules
        if r["action"] == "FailJob" and r["onExitCodes"]["containerName"] == c.WORKER_CONTAINER_NAME
    ]  # fmt: skip
    assert fail_job
    assert result.returncode in fail_job[0]["values"]
    assert result.returncode == contract.EXIT_SERVER_START_FAILED


def test_a_server_that_once_answered_is_started_again_whatever_it_costs(tmp_path: Path) -> None:
    # After a healthy start the worker is running; a later crash is the worker's to wait out
    # (--wait-timeout, exit 5), not a failed start.
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"starts": 3, "healthy": True, "first_start": 1.0, "last_exit": None}))
    env = {
        contract.SERVER_START_ATTEMPTS_ENV: "3",
        contract.SERVER_START_STATE_ENV: str(state),
        contract.SERVER_START_FAILED_ENV: str(tmp_path / "failed"),
    }
    source = (REPO / "grace_infra" / "payloads" / "server_start.py").read_text()
    proc = _start_sidecar(source, env, _free_port())
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, output
    assert "start 4 of 3 allowed" in output
    assert not (tmp_path / "failed").exists()


def test_the_wrapper_keeps_the_contracts_names() -> None:
    assert server_start.ATTEMPTS_ENV == contract.SERVER_START_ATTEMPTS_ENV
    assert server_start.STATE_ENV == contract.SERVER_START_STATE_ENV
    assert server_start.FAILED_MARKER_ENV == contract.SERVER_START_FAILED_ENV
    assert server_start.DEFAULT_PORT == c.VLLM_PORT


def test_the_bound_covers_every_start_the_budget_allows(nrp_rendered: Any) -> None:
    config: GraceConfig = nrp_rendered.config
    for model in config.served_models():
        probe = nrp_rendered.run.manifest("Job", f"{c.JOB_MODE_JOB_PREFIX}{model.key}")["spec"]["template"][
            "spec"
        ]
        startup = _container(probe, c.VLLM_CONTAINER_NAME)["startupProbe"]
        # The kubelet kills a start that never answers after failureThreshold x periodSeconds.
        window = startup["failureThreshold"] * startup["periodSeconds"]
        assert window == startup_window_s(model) >= model.load_budget_s
        per_failed_start = window + c.POD_TERMINATION_GRACE_S + c.KUBELET_MAX_RESTART_BACKOFF_S
        assert (
            server_start_bound_s(model)
            >= c.SERVER_START_ATTEMPTS * per_failed_start + startup["periodSeconds"]
        )
        # A pod's deadline never ends a start the budget still allows.
        assert probe["activeDeadlineSeconds"] > server_start_bound_s(model)


def test_the_readme_states_the_bound(nrp_rendered: Any) -> None:
    readme = (REPO / "README.md").read_text()
    models = {m["model"]: m for m in nrp_rendered.plan["gpuHours"]["models"]}
    bounds = [round(m["serverStartBoundS"] / 60) for m in models.values()]
    line = next(line for line in readme.splitlines() if "cannot start" in line)
    assert f"{min(bounds)}" in line, line
    assert f"{max(bounds)} min" in line, line


def test_no_payload_is_changed_by_the_kubelets_variable_expansion() -> None:
    # The payloads travel as command elements or env values, where the kubelet expands `$(NAME)` and
    # reduces `$$` to `$` (Container.command and EnvVar.value in the Kubernetes API): neither may occur.
    for path in sorted((REPO / "grace_infra" / "payloads").glob("*.py")):
        source = path.read_text()
        assert "$(" not in source, path.name
        assert "$$" not in source, path.name
