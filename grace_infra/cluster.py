"""The user's cluster for `grace status` and `grace results pull`: the client `grace preflight` builds.

They talk to the API server with the user's own kubeconfig (`--kubeconfig`, else `$KUBECONFIG`, else
~/.kube/config), exactly as kubectl would, on the context `connect` picks (`--context`, else the stack's
`kubernetes:context`, else the current one); nothing here stores credentials. Every way the cluster can
be out of reach becomes one ClusterUnreachable sentence (exit code 2).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager

from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from grace_infra.preflight.cluster import ClusterUnreachable, Connection, connect

__all__ = ["ClusterUnreachable", "Connection", "cluster_errors", "connect"]

EXEC_REASON_CHARS = 200  # the client puts a whole HTTP response in the reason of a failed websocket


def _status_message(body: str | bytes | None) -> str:
    """The `message` of the API server's Status body (e.g. the quota a pod would exceed), if any."""
    try:
        status = json.loads(body or "")
    except (TypeError, ValueError):
        return ""
    return str(status.get("message", "")) if isinstance(status, dict) else ""


@contextmanager
def cluster_errors() -> Iterator[None]:
    """Turn the client's errors into one ClusterUnreachable sentence (no traceback for the user)."""
    try:
        yield
    except ApiException as err:
        if not err.status:  # the websocket of an exec stream failed: no HTTP status, a long reason
            reason = textwrap.shorten(str(err.reason), EXEC_REASON_CHARS)
            raise ClusterUnreachable(f"the exec stream to the pod failed: {reason}") from None
        message = _status_message(err.body)
        raise ClusterUnreachable(
            f"the API server refused a call: {err.status} {err.reason}" + (f": {message}" if message else "")
        ) from None
    except HTTPError as err:  # urllib3: connection refused, DNS, TLS, after the client's retries
        cause = getattr(err, "reason", None) or err
        raise ClusterUnreachable(f"cannot reach the API server of the kubeconfig context: {cause}") from None
