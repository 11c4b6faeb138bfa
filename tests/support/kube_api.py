"""A loopback Kubernetes API server that answers from recorded responses, for the REAL kubernetes client.

The client under test is the official one, configured by a kubeconfig written here (like a user's), so
URL building, query parameters, JSON decoding into V1Job/V1Pod and errors all run for real; only the API
server is replaced by recorded bodies.

    with KubeApi(routes) as api:          # routes: {("GET", "/api/v1/namespaces/ns/pods"): (200, body)}
        kubeconfig = api.write_kubeconfig(tmp_path)   # context "recorded"
        ...
        api.requests                      # [(method, path, query dict)] in order

A body that is a dict/list is sent as JSON, a str as text/plain (pod logs). A route missing is a 404
Status object, as the real API server sends.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

__all__ = ["CONTEXT", "KubeApi", "not_found"]

CONTEXT = "recorded"


def not_found(path: str) -> dict[str, Any]:
    return {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"the server could not find the requested resource ({path})", "reason": "NotFound",
        "details": {}, "code": 404,
    }  # fmt: skip


@dataclass
class KubeApi:
    routes: dict[tuple[str, str], tuple[int, Any]]
    requests: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                api.requests.append((self.command, parts.path, parse_qs(parts.query)))
                status, body = api.routes.get((self.command, parts.path), (404, not_found(parts.path)))
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header(
                    "Content-Type", "text/plain" if isinstance(body, str) else "application/json"
                )
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer  # noqa: N815 (http.server's method names)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def write_kubeconfig(self, folder: Path, namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": CONTEXT,
            "clusters": [{"name": CONTEXT, "cluster": {"server": self.url}}],
            "users": [{"name": CONTEXT, "user": {"token": "recorded-test-token"}}],
            "contexts": [
                {"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace}}
            ],
        }  # fmt: skip
        path = folder / "kubeconfig"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    def __enter__(self) -> KubeApi:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
