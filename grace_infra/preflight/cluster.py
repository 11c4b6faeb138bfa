"""The only place `grace preflight` talks to the cluster: read-only calls of the official client.

Every read returns the client's own model objects (`V1Node`, `V1ResourceQuota`, ...) so the checks work
on exactly what the API sent. A 404 is `None` (absent is an answer); any other API error propagates as
`ApiException` and fails only the check that asked. A cluster that cannot be reached at all, or a
kubeconfig that cannot be read, is `ClusterUnreachable`: one line, exit 2.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, TypeVar

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from grace_infra import constants as c
from grace_infra.errors import GraceError
from grace_infra.offline import PROJECT_ROOT

__all__ = ["ApiException", "Cluster", "ClusterUnreachable", "Connection", "connect"]

# (connect, read) seconds per request: the API server answers in well under a second; a firewall that
# drops packets must not hang the command for urllib3's default of minutes.
REQUEST_TIMEOUT_S = (5.0, 30.0)
HTTP_NOT_FOUND = 404

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
        except urllib3.exceptions.HTTPError as exc:
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
