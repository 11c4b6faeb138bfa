"""The user's cluster through the official Kubernetes client: one place that reads the kubeconfig.

`grace status` and `grace results pull` talk to the API server with the user's own kubeconfig
(`$KUBECONFIG` or ~/.kube/config) and context, exactly as kubectl would; nothing here stores credentials.
Every way the cluster can be out of reach becomes one ClusterAccessError sentence (exit code 2).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from grace_infra.errors import GraceError

__all__ = ["ClusterAccessError", "api_client", "cluster_errors"]

EXEC_REASON_CHARS = 200  # the client puts a whole HTTP response in the reason of a failed websocket


class ClusterAccessError(GraceError):
    """No usable kubeconfig or context, an unreachable API server, or a refused call."""


def api_client(context: str | None = None) -> client.ApiClient:
    """An API client for `context` (the kubeconfig's current context when None)."""
    try:
        # Read $KUBECONFIG now: the client reads it once, when it is first imported.
        kubeconfig = os.environ.get("KUBECONFIG") or None
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except ConfigException as err:
        where = f"context {context!r}" if context else "the current context"
        raise ClusterAccessError(
            f"cannot use {where} of your kubeconfig ($KUBECONFIG or ~/.kube/config): {err}"
        ) from None
    except FileNotFoundError as err:
        raise ClusterAccessError(
            f"no kubeconfig at {err.filename}; set KUBECONFIG or download NRP's config."
        ) from None


@contextmanager
def cluster_errors() -> Iterator[None]:
    """Turn the client's errors into one ClusterAccessError sentence (no traceback for the user)."""
    try:
        yield
    except ApiException as err:
        if not err.status:  # the websocket of an exec stream failed: no HTTP status, a long reason
            reason = textwrap.shorten(str(err.reason), EXEC_REASON_CHARS)
            raise ClusterAccessError(f"the exec stream to the pod failed: {reason}") from None
        raise ClusterAccessError(
            f"the API server refused a call: {err.status} {err.reason}"
            + (" (is the kubeconfig's token still valid?)" if err.status in {401, 403} else "")
        ) from None
    except HTTPError as err:  # urllib3: connection refused, DNS, TLS, after the client's retries
        raise ClusterAccessError(f"cannot reach the API server of your kubeconfig context: {err}") from None
