"""The only place `grace preflight` talks to the cluster: read-only calls of the official client.

Every read returns the client's own model objects (`V1Node`, `V1ResourceQuota`, ...) so the checks work
on exactly what the API sent. A 404 is `None` (absent is an answer); any other API error propagates as
`ApiException` and fails only the check that asked. A cluster that cannot be reached at all, or a
kubeconfig that cannot be read, is `ClusterUnreachable`: one line, exit 2.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from grace_infra.errors import GraceError

__all__ = ["ApiException", "Cluster", "ClusterUnreachable", "connect"]

# (connect, read) seconds per request: the API server answers in well under a second; a firewall that
# drops packets must not hang the command for urllib3's default of minutes.
REQUEST_TIMEOUT_S = (5.0, 30.0)
HTTP_NOT_FOUND = 404

T = TypeVar("T")


class ClusterUnreachable(GraceError):  # noqa: N818 (reads as the sentence it prints)
    """No usable kubeconfig or context, or the API server did not answer."""


def connect(context: str | None, kubeconfig: Path | None) -> tuple[client.ApiClient, str, str]:
    """An API client for `context` (default: the kubeconfig's current one); also its name and server."""
    config_file = str(kubeconfig) if kubeconfig else None
    try:
        contexts, current = config.list_kube_config_contexts(config_file=config_file)
        chosen = context or current["name"]
        if chosen not in {c["name"] for c in contexts}:
            known = ", ".join(sorted(c["name"] for c in contexts))
            raise ClusterUnreachable(f"--context {chosen} is not in the kubeconfig (contexts: {known}).")
        api = config.new_client_from_config(config_file=config_file, context=chosen, persist_config=False)
    except (ConfigException, OSError, TypeError, KeyError) as exc:
        where = kubeconfig or "the kubeconfig ($KUBECONFIG or ~/.kube/config)"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ClusterUnreachable(
            f"cannot read {where}: {detail}; download your NRP kubeconfig from https://nrp.ai/ "
            "(Get Config) into ~/.kube/config."
        ) from None
    api.configuration.retries = 1  # one retry for a dropped connection, not urllib3's default three
    return api, chosen, api.configuration.host


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
