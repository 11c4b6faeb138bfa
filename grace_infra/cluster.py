"""The user's cluster through the official Kubernetes client: one place that reads the kubeconfig.

`grace status` and `grace results pull` talk to the API server with the user's own kubeconfig
(`$KUBECONFIG` or ~/.kube/config) and context, exactly as kubectl would; nothing here stores credentials.
"""

from __future__ import annotations

import os

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from grace_infra.errors import GraceError

__all__ = ["ClusterAccessError", "api_client"]


class ClusterAccessError(GraceError):
    """No usable kubeconfig or context, or the API server refused a call."""


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
