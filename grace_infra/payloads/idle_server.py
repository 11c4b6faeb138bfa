"""The vLLM sidecar's stand-in when a job-mode Job's outputs are already complete (runs INSIDE the pinned
vLLM image, shipped as `python3 -c <source>` like weights_download.py: standard library only).

The kubelet starts a pod's main containers only after a native sidecar's startupProbe succeeds, so a
sidecar that skips loading must still answer /health. Every other path answers 404 naming the reason:
a worker that (against the outputs check) did send a request then stops with one clear sentence
(the worker treats a 404 about the model as fatal, exit 2) instead of waiting on a server that never
loads. SIGTERM (the kubelet stopping the sidecar when the worker exits) ends it at once.

Input (environment): GRACE_IDLE_PORT (default 8000).
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEALTH_PATH = "/health"
DEFAULT_PORT = 8000
NOT_LOADED = (
    "the model was not loaded: every output of this Job was complete when the pod started "
    "(delete the outputs, or change the experiment, to run it again)"
)


class IdleHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == HEALTH_PATH:
            self._reply(200, b"")
        else:
            self._reply(404, json.dumps({"object": "error", "message": NOT_LOADED, "code": 404}).encode())

    def do_POST(self) -> None:
        self.do_GET()

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        del format, args  # the startup probe polls every 10 s; its lines would only bury the reason


def serve(port: int) -> ThreadingHTTPServer:
    return ThreadingHTTPServer(("", port), IdleHandler)


def main() -> None:
    port = int(os.environ.get("GRACE_IDLE_PORT", DEFAULT_PORT))
    print(f"grace: not starting vLLM: {NOT_LOADED}; answering {HEALTH_PATH} on port {port}", flush=True)
    serve(port).serve_forever()


if __name__ == "__main__":
    main()
