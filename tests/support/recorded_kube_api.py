"""A loopback HTTP server that answers Kubernetes API paths with recorded JSON bodies.

The real `kubernetes` client talks to it through a generated kubeconfig, so its own request building,
authentication header and pydantic deserialization all run; the server only maps a path to a file and
never interprets anything (no filtering, no cluster logic). Unrouted paths answer the API's own
404 `Status`. Every request is recorded (method, path, Authorization header) for assertions.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import yaml

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "preflight"
TOKEN = "recorded-api-token"
CONTEXT = "nautilus"


@dataclass(frozen=True)
class Route:
    """A recorded response: the fixture file under tests/fixtures/preflight and its HTTP status."""

    fixture: str
    status: int = HTTPStatus.OK


@dataclass
class RecordedApi:
    routes: dict[str, Route]
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, Authorization)
    url: str = ""

    def kubeconfig(self, directory: Path) -> Path:
        """A kubeconfig whose current context `nautilus` points at this server with a bearer token."""
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "recorded", "cluster": {"server": self.url}}],
            "users": [{"name": "researcher", "user": {"token": TOKEN}}],
            "contexts": [
                {"name": CONTEXT, "context": {"cluster": "recorded", "user": "researcher"}},
                {"name": "elsewhere", "context": {"cluster": "recorded", "user": "researcher"}},
            ],
            "current-context": CONTEXT,
        }
        path = directory / "kubeconfig"
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        return path


def _not_found(path: str) -> bytes:
    # The API server's body for a path it does not serve.
    return json.dumps({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "the server could not find the requested resource", "reason": "NotFound",
        "details": {}, "code": 404,
    }).encode()  # fmt: skip


@contextmanager
def serve(routes: Mapping[str, Route]) -> Iterator[RecordedApi]:
    """Serve `routes` (API path without query -> Route) on 127.0.0.1 for the duration of the block."""
    api = RecordedApi(routes={path.rstrip("/"): route for path, route in routes.items()})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path.rstrip("/")
            api.requests.append(("GET", path, self.headers.get("Authorization", "")))
            route = api.routes.get(path)
            if route is None:
                status, body = HTTPStatus.NOT_FOUND, _not_found(path)
            else:
                status, body = route.status, (FIXTURES / route.fixture).read_bytes()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
