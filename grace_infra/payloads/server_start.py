"""The vLLM sidecar's start wrapper: a start-attempt budget (runs INSIDE the pinned vLLM image, shipped as
`python3 -c <source>` like idle_server.py: standard library only).

A job-mode Job runs vLLM as a native sidecar (an init container with `restartPolicy: Always`). The kubelet
restarts such a container after every exit and after every failed startup probe, whatever the pod's
restartPolicy, and starts the pod's main container only once the sidecar has started; a pod whose
sidecar never starts therefore never fails, and the Job's podFailurePolicy and backoffLimit never see it
(docs/lifecycle.md, "A server that cannot start"). This wrapper turns that loop into a failure the Job
controller acts on:

    start k <= budget    record the start in the state file (an emptyDir: it outlives container
                         restarts, not the pod), run `argv` (vllm serve ...) as a child, forward SIGTERM
                         and SIGINT to it, poll /health; the first healthy answer marks the server as
                         started (later restarts, after it once served, are not failed starts); exit with
                         the child's code
    start budget + 1     (no start so far was healthy) write the failure marker, one line of why, and
                         answer /health with 200, so the kubelet starts the worker container; the worker
                         finds the marker and exits EXIT_SERVER_START_FAILED, which the Job's
                         podFailurePolicy maps to FailJob. Every other path answers 503 with the reason.

Input (environment): GRACE_SERVER_START_ATTEMPTS (failed starts allowed), GRACE_SERVER_START_STATE (the
state file), GRACE_SERVER_START_FAILED (the marker the worker reads), GRACE_SERVER_PORT (default 8000).
The names are worker/contract.py's; this file imports nothing of ours, so it keeps its own copies and a
test compares them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ATTEMPTS_ENV = "GRACE_SERVER_START_ATTEMPTS"
STATE_ENV = "GRACE_SERVER_START_STATE"
FAILED_MARKER_ENV = "GRACE_SERVER_START_FAILED"
PORT_ENV = "GRACE_SERVER_PORT"
DEFAULT_PORT = 8000
HEALTH_PATH = "/health"
HEALTH_POLL_S = 5.0
HEALTH_TIMEOUT_S = 2.0
SIGNAL_EXIT_BASE = 128


def read_state(path: Path) -> dict[str, Any]:
    """Starts so far, whether one was healthy, and how the last one ended; a fresh state if unreadable."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"starts": 0, "healthy": False, "first_start": None, "last_exit": None}
    return state if isinstance(state, dict) else {"starts": 0, "healthy": False}


def write_state(path: Path, state: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(state))
    temporary.replace(path)  # atomic: a kill between the two lines leaves the previous state


def failure_reason(state: dict[str, Any], budget: int) -> str:
    elapsed = ""
    if state.get("first_start"):
        elapsed = f" over {time.time() - float(state['first_start']):.0f} s"
    last = state.get("last_exit") or "unknown"
    return (
        f"the vLLM sidecar failed to start {state.get('starts', 0)} times{elapsed} (budget {budget} starts; "
        f"last: {last}); see kubectl logs <pod> -c vllm --previous"
    )


def describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by signal {-code}"  # the kubelet's SIGTERM after a failed startup probe, or OOM
    return f"exit code {code}"


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}{HEALTH_PATH}", timeout=HEALTH_TIMEOUT_S
        ) as reply:
            return bool(reply.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def run_server(argv: list[str], state_path: Path, state: dict[str, Any], port: int) -> int:
    """Run `argv` to its end, marking the state healthy at its first good /health; its exit code."""
    child = subprocess.Popen(argv)

    def forward(signum: int, frame: object) -> None:
        del frame
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        try:
            code = child.wait(timeout=HEALTH_POLL_S)
            break
        except subprocess.TimeoutExpired:
            if not state["healthy"] and healthy(port):
                state["healthy"] = True
                write_state(state_path, state)
    state["last_exit"] = describe_exit(code)
    write_state(state_path, state)
    return code if code >= 0 else SIGNAL_EXIT_BASE - code


class FailedStartHandler(BaseHTTPRequestHandler):
    reason = ""

    def do_GET(self) -> None:
        if self.path == HEALTH_PATH:
            self._reply(200, b"")  # the startup probe passes, so the kubelet starts the worker
        else:
            self._reply(503, json.dumps({"object": "error", "message": self.reason, "code": 503}).encode())

    def do_POST(self) -> None:
        self.do_GET()

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        del format, args  # probe lines would bury the reason


def give_up(marker: Path, reason: str, port: int) -> None:
    """Write the marker the worker reads, then answer /health until the kubelet stops the sidecar."""
    if not marker.exists():
        temporary = marker.with_name(marker.name + ".tmp")
        temporary.write_text(reason + "\n")
        temporary.replace(marker)
    FailedStartHandler.reason = reason
    server = ThreadingHTTPServer(("", port), FailedStartHandler)  # listening from here on
    print(f"grace: not starting vLLM again: {reason}", flush=True)
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(SIGNAL_EXIT_BASE + signum))
    server.serve_forever()


def main(argv: list[str]) -> int:
    budget = int(os.environ[ATTEMPTS_ENV])
    state_path = Path(os.environ[STATE_ENV])
    marker = Path(os.environ[FAILED_MARKER_ENV])
    port = int(os.environ.get(PORT_ENV, DEFAULT_PORT))
    state = read_state(state_path)
    if marker.exists() or (not state.get("healthy") and int(state.get("starts", 0)) >= budget):
        give_up(marker, failure_reason(state, budget), port)
        return 0
    state["starts"] = int(state.get("starts", 0)) + 1
    state["healthy"] = bool(state.get("healthy"))
    state["first_start"] = state.get("first_start") or time.time()
    write_state(state_path, state)
    print(f"grace: starting vLLM, start {state['starts']} of {budget} allowed", flush=True)
    return run_server(argv, state_path, state, port)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
