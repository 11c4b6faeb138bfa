"""The only place the `grace` commands talk to the cluster: the user's kubeconfig, read-only calls of
the official client, and every way the cluster can be out of reach as one ClusterUnreachable sentence.

`connect` talks to the API server with the user's own kubeconfig (`--kubeconfig`, else `$KUBECONFIG`,
else ~/.kube/config), exactly as kubectl would, on the context it picks (`--context`, else the stack's
`kubernetes:context`, else the current one); nothing here stores credentials. `Cluster` is what
`grace preflight` reads: every read returns the client's own model objects (`V1Node`,
`V1ResourceQuota`, ...) so the checks work on exactly what the API sent; a 404 is `None` (absent is an
answer) and any other API error propagates as `ApiException` and fails only the check that asked.
`cluster_errors` turns the client's errors into one sentence for `grace status` and `grace results
pull` (exit code 2, no traceback).
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, TypeVar

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from grace_infra import constants as c
from grace_infra.config.stack_files import PROJECT_ROOT
from grace_infra.errors import GraceError

__all__ = ["ApiException", "Cluster", "ClusterUnreachable", "Connection", "cluster_errors", "connect"]

# (connect, read) seconds per request: the API server answers in well under a second; a firewall that
# drops packets must not hang the command for urllib3's default of minutes.
REQUEST_TIMEOUT_S = (5.0, 30.0)
HTTP_NOT_FOUND = 404
EXEC_REASON_CHARS = 200  # the client puts a whole HTTP response in the reason of a failed websocket

T = TypeVar("T")


class ClusterUnreachable(GraceError):  # noqa: N818 (reads as the sentence it prints)
    """No usable kubeconfig or context, or the API server did not answer."""


class Connection(NamedTuple):
    """An API client and the context and server it talks to (printed on the commands' summary line)."""

    api: client.ApiClient
    context: str
    host: str


def stack_kubernetes_context(stack: str, project_root: Path) -> str | None:
    """The stack's `kubernetes:context` (the context `pulumi up` deploys to), None when it sets none.

    pulumi-kubernetes passes this setting to client-go as the kubeconfig's current-context override
    (provider/pkg/provider/provider.go, `CurrentContext: vars["kubernetes:config:context"]`), so the
    grace commands read it too and reach the cluster `pulumi up` deploys to. A missing or unreadable
    stack file is left to the stack loader, which names it.
    """
    stack_file = project_root / f"Pulumi.{stack}.yaml"
    try:
        document = yaml.safe_load(stack_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    settings = document.get("config") if isinstance(document, dict) else None
    value = settings.get(c.KUBERNETES_CONTEXT_KEY) if isinstance(settings, dict) else None
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ClusterUnreachable(
            f"{c.KUBERNETES_CONTEXT_KEY} in {stack_file.name} must be a context name from the kubeconfig, "
            f"not {value!r}."
        )
    return value


def connect(context: str | None, kubeconfig: Path | None, stack: str | None = None) -> Connection:
    """An API client for `context`, else the stack's `kubernetes:context`, else the kubeconfig's current.

    The kubeconfig is `kubeconfig`, else $KUBECONFIG, else ~/.kube/config, as kubectl reads it.
    """
    # $KUBECONFIG is read now: the client reads it only once, when it is first imported.
    if kubeconfig is None and os.environ.get("KUBECONFIG"):
        kubeconfig = Path(os.environ["KUBECONFIG"])
    config_file = str(kubeconfig) if kubeconfig else None
    stack_context = stack_kubernetes_context(stack, PROJECT_ROOT) if stack and not context else None
    try:
        contexts, current = config.list_kube_config_contexts(config_file=config_file)
        chosen = context or stack_context or current["name"]
        if chosen not in {entry["name"] for entry in contexts}:
            known = ", ".join(sorted(entry["name"] for entry in contexts))
            source = (
                f"--context {chosen}"
                if context
                else f"{c.KUBERNETES_CONTEXT_KEY} {chosen} set in Pulumi.{stack}.yaml"
            )
            raise ClusterUnreachable(f"{source} is not in the kubeconfig (contexts: {known}).")
        api = config.new_client_from_config(config_file=config_file, context=chosen, persist_config=False)
    except (ConfigException, OSError, TypeError, KeyError) as exc:
        where = kubeconfig or "the kubeconfig ($KUBECONFIG or ~/.kube/config)"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ClusterUnreachable(
            f"cannot read {where}: {detail}; download your NRP kubeconfig from https://nrp.ai/ "
            "(Get Config) into ~/.kube/config."
        ) from None
    api.configuration.retries = 1  # one retry for a dropped connection, not urllib3's default three
    return Connection(api, chosen, api.configuration.host)


class Cluster:
    """Read-only views of the objects the preflight checks look at."""

    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)
        self._storage = client.StorageV1Api(api)
        self._extensions = client.ApiextensionsV1Api(api)
        self._version = client.VersionApi(api)
        self.host = api.configuration.host

    def _call(self, read: Callable[[], T]) -> T:
        try:
            return read()
        except HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ClusterUnreachable(f"the API server at {self.host} did not answer: {reason}.") from None

    def _maybe(self, read: Callable[[], T]) -> T | None:
        try:
            return self._call(read)
        except ApiException as exc:
            if exc.status == HTTP_NOT_FOUND:
                return None
            raise

    def version(self) -> client.VersionInfo:
        return self._call(lambda: self._version.get_code(_request_timeout=REQUEST_TIMEOUT_S))

    def namespace(self, name: str) -> client.V1Namespace | None:
        return self._maybe(lambda: self._core.read_namespace(name, _request_timeout=REQUEST_TIMEOUT_S))

    def resource_quotas(self, namespace: str) -> list[client.V1ResourceQuota]:
        found = self._call(
            lambda: self._core.list_namespaced_resource_quota(namespace, _request_timeout=REQUEST_TIMEOUT_S)
        )
        return list(found.items)

    def storage_classes(self) -> list[client.V1StorageClass]:
        found = self._call(lambda: self._storage.list_storage_class(_request_timeout=REQUEST_TIMEOUT_S))
        return list(found.items)

    def nodes(self) -> list[client.V1Node]:
        return list(self._call(lambda: self._core.list_node(_request_timeout=REQUEST_TIMEOUT_S)).items)

    def custom_resource_definitions(self) -> list[client.V1CustomResourceDefinition]:
        found = self._call(
            lambda: self._extensions.list_custom_resource_definition(_request_timeout=REQUEST_TIMEOUT_S)
        )
        return list(found.items)

    def secret(self, namespace: str, name: str) -> client.V1Secret | None:
        return self._maybe(
            lambda: self._core.read_namespaced_secret(name, namespace, _request_timeout=REQUEST_TIMEOUT_S)
        )


def _status_message(body: str | bytes | None) -> str:
    """The `message` of the API server's Status body (e.g. the quota a pod would exceed), if any."""
    try:
        status = json.loads(body or "")
    except (TypeError, ValueError):
        return ""
    return str(status.get("message", "")) if isinstance(status, dict) else ""


@contextmanager
def cluster_errors(connection: Connection) -> Iterator[None]:
    """Turn the client's errors on `connection` into one ClusterUnreachable sentence naming its context
    and server (no traceback for the user)."""
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
        raise ClusterUnreachable(
            f"cannot reach the API server of kubeconfig context {connection.context} ({connection.host}): "
            f"{cause}"
        ) from None
