"""A loopback Kubernetes API server that answers from recorded responses, for the REAL kubernetes client.

The client under test is the official one, configured by a kubeconfig written here (like a user's), so
URL building, authentication, query parameters, JSON decoding into V1Job/V1Pod/V1Node and errors all
run for real; only the API server is replaced by recorded bodies. The server maps a request to a
body and never interprets anything (no filtering, no cluster logic).

    with KubeApi(routes) as api:          # routes: {("GET", "/api/v1/namespaces/ns/pods"): (200, body)}
        kubeconfig = api.write_kubeconfig(tmp_path)   # contexts "nautilus" (current) and "elsewhere"
        ...
        api.requests                      # [(method, path, query dict)] in order
        api.authorizations                # the Authorization header of each request, in order

A body that is a dict/list is sent as JSON, a str as text/plain (pod logs); `recorded(file)` answers
with a body recorded under tests/fixtures/. Paths match without a trailing slash (the client asks
for `/version/`). A route missing is a 404 Status object, as the real API server sends.

Exec: with `exec_command` set, a websocket upgrade of `.../pods/<name>/exec` is answered with the
Kubernetes channel protocol (v4.channel.k8s.io, as the API server speaks it to the client: each binary
frame is a channel byte, 1 stdout, 2 stderr, 3 the final Status, then a close frame).
`exec_command(argv) -> (stdout, stderr, exit code)` runs the command the client asked for, so the
client's own exec code (URL, handshake, framing, return code) runs for real.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from grace_infra.commands import kube_client as kube_cluster
from grace_infra.config.stack_files import PROJECT_ROOT

__all__ = ["CONTEXT", "NOWHERE", "TOKEN", "KubeApi", "Routes", "not_found", "pin_stack_context", "recorded"]

CONTEXT = "nautilus"  # NRP's cluster, as its portal's kubeconfig names it
NOWHERE = "elsewhere"
TOKEN = "recorded-test-token"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
CHANNEL_PROTOCOL = "v4.channel.k8s.io"
STDOUT, STDERR, ERROR = 1, 2, 3
FRAME_BYTES = 32 * 1024  # split stdout like a kubelet does, so the client reassembles frames
Exec = Callable[[list[str]], tuple[bytes, bytes, int]]
Routes = dict[tuple[str, str], tuple[int, Any]]  # (method, path) -> (HTTP status, body)


def _frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One unmasked server-to-client websocket frame (FIN set)."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return header + payload


def exec_status(code: int) -> dict[str, Any]:
    """The Status the API server sends on channel 3 when the command ends."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
        "message": f"command terminated with non-zero exit code: error executing command, exit status {code}",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }  # fmt: skip


def _closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released): connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pin_stack_context(
    monkeypatch: pytest.MonkeyPatch, folder: Path, context: str, stack: str = "nrp"
) -> None:
    """Make the commands read a copy of Pulumi.<stack>.yaml that sets `kubernetes:context: <context>`,
    as `pulumi config set kubernetes:context` writes it."""
    document = yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8"))
    document["config"]["kubernetes:context"] = context
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    monkeypatch.setattr(kube_cluster, "PROJECT_ROOT", folder)


def recorded(fixture: str, status: int = HTTPStatus.OK) -> tuple[int, Any]:
    """A route's answer: the body recorded in tests/fixtures/<fixture> (e.g. "preflight/nodes-a100.json")."""
    return status, json.loads((FIXTURES / fixture).read_text(encoding="utf-8"))


def not_found(path: str) -> dict[str, Any]:
    return {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"the server could not find the requested resource ({path})", "reason": "NotFound",
        "details": {}, "code": 404,
    }  # fmt: skip


@dataclass
class KubeApi:
    routes: Routes
    requests: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    exec_command: Exec | None = None

    def __post_init__(self) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _exec(self, query: dict[str, list[str]]) -> None:
                assert api.exec_command is not None  # checked by the caller; for the type checker
                offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")]
                assert CHANNEL_PROTOCOL in offered, offered
                key = self.headers["Sec-WebSocket-Key"]
                accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()
                self.send_response(101, "Switching Protocols")
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.send_header("Sec-WebSocket-Protocol", CHANNEL_PROTOCOL)
                self.end_headers()
                stdout, stderr, code = api.exec_command(query.get("command", []))
                for start in range(0, len(stdout), FRAME_BYTES):
                    self.wfile.write(_frame(bytes([STDOUT]) + stdout[start : start + FRAME_BYTES]))
                if stderr:
                    self.wfile.write(_frame(bytes([STDERR]) + stderr))
                self.wfile.write(_frame(bytes([ERROR]) + json.dumps(exec_status(code)).encode()))
                self.wfile.write(_frame(struct.pack("!H", 1000), opcode=0x8))  # close: normal
                self.wfile.flush()
                self.close_connection = True

            def _answer(self) -> None:
                parts = urlsplit(self.path)
                api.authorizations.append(self.headers.get("Authorization", ""))
                upgrade = self.headers.get("Upgrade", "").lower() == "websocket"
                if api.exec_command is not None and upgrade and parts.path.endswith("/exec"):
                    query = parse_qs(parts.query)
                    api.requests.append(("EXEC", parts.path, query))
                    self._exec(query)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = parts.path.rstrip("/")
                api.requests.append((self.command, path, parse_qs(parts.query)))
                status, body = api.routes.get((self.command, path), (404, not_found(path)))
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

    def write_kubeconfig(self, folder: Path, namespace: str = "default", current: str = CONTEXT) -> Path:
        """A kubeconfig with two contexts: CONTEXT reaches this server, NOWHERE a port nothing listens on
        (a researcher's other cluster), so a test sees which one a command used."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": current,
            "clusters": [
                {"name": CONTEXT, "cluster": {"server": self.url}},
                {"name": NOWHERE, "cluster": {"server": f"http://127.0.0.1:{_closed_port()}"}},
            ],
            "users": [{"name": CONTEXT, "user": {"token": TOKEN}}],
            "contexts": [
                {"name": name, "context": {"cluster": name, "user": CONTEXT, "namespace": namespace}}
                for name in (CONTEXT, NOWHERE)
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
