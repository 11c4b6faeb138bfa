"""VllmModelServer: one vLLM OpenAI-compatible server per model, and the pure builders of its pod.

The builders return plain camelCase Kubernetes dicts (the manifest shape; pulumi_kubernetes passes them
through unchanged) and create no resources, so tests and the ExperimentJob (`job` serving mode) call
them directly. The same `vllm_container` output runs in both modes:

    persistent:  StatefulSet vllm-<key>  containers [vllm]
                 Service vllm-<key> (ClusterIP, 8000/http)  [+ ServiceMonitor vllm-<key>]
    job:         the model's Job pod     initContainers [vllm (restartPolicy: Always)]
                                          containers [worker]  -> talks to http://localhost:8000/v1

The weights arrive before either starts, from the model's own download Job (`weights_job.py`): the only
grace pod running vLLM's image that may reach the internet, so no pod with a vLLM server carries the
HTTPS-egress label.

Pod anatomy, flags and the reasons for each are in docs/model-servers.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from grace_infra.config.stack_config import GraceConfig, ServedModel
from grace_infra.manifests import monitoring, naming
from grace_infra.manifests.vllm_server import (
    await_timeout,
    service_manifest,
    statefulset_manifest,
)
from grace_infra.planning.matrix import server_url

__all__ = ["TYPE_TOKEN", "VllmModelServer", "VllmModelServerArgs"]

TYPE_TOKEN = "grace:index:VllmModelServer"  # noqa: S105  (a Pulumi type token, not a secret)


@dataclass
class VllmModelServerArgs:
    """Inputs of one model's persistent vLLM server."""

    model: ServedModel
    """The catalog entry with the stack's overrides; must be in `persistent` serving mode."""
    config: GraceConfig
    """The stack config (namespace, images, GPU resource name, monitoring switch)."""
    weights_ready: pulumi.Resource | None = None
    """What makes the weights available: the model's download Job (`weights_job.WeightsDownload.job`),
    which follows its PVC; the StatefulSet is created after it."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """Other resources the server needs first (Namespace, ServiceAccount, token Secret)."""


class VllmModelServer(pulumi.ComponentResource):
    """StatefulSet + ClusterIP Service (+ optional ServiceMonitor) serving one model with vLLM."""

    service_name: pulumi.Output[str]
    """`vllm-<key>`: the Service (and StatefulSet) name."""
    url: pulumi.Output[str]
    """`http://vllm-<key>:8000/v1`, the OpenAI base URL the Jobs use."""
    statefulset: k8s.apps.v1.StatefulSet
    service: k8s.core.v1.Service

    def __init__(
        self, name: str, args: VllmModelServerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        if args.model.serving_mode.value != "persistent":
            raise ValueError(
                f"model {args.model.key!r} is in {args.model.serving_mode.value!r} serving mode; "
                "only persistent models get a VllmModelServer (job mode runs inside its ExperimentJob)"
            )
        self._args = args
        statefulset = self._create_statefulset(name)
        service = self._create_service(name)
        if args.config.monitoring.enabled:
            self._create_service_monitor(name, service)
        self.statefulset = statefulset
        self.service = service
        self.service_name = pulumi.Output.from_input(args.model.server_name)
        self.url = pulumi.Output.from_input(server_url(args.model))
        self.register_outputs({"serviceName": self.service_name, "url": self.url})

    def _create_statefulset(self, name: str) -> k8s.apps.v1.StatefulSet:
        model, config = self._args.model, self._args.config
        manifest = statefulset_manifest(model, config)
        needs = [*self._args.depends_on, *([self._args.weights_ready] if self._args.weights_ready else [])]
        timeout = await_timeout(model)
        # Only an awaited rollout needs a timeout beyond Pulumi's default ten minutes.
        timeouts = pulumi.CustomTimeouts(create=timeout, update=timeout) if model.await_readiness else None
        return k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=needs, custom_timeouts=timeouts),
        )

    def _create_service(self, name: str) -> k8s.core.v1.Service:
        manifest = service_manifest(self._args.model, self._args.config)
        return k8s.core.v1.Service(
            f"{name}-service",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(self._args.depends_on)),
        )

    def _create_service_monitor(self, name: str, service: k8s.core.v1.Service) -> None:
        model, config = self._args.model, self._args.config
        manifest = monitoring.service_monitor_manifest(
            name=model.server_name,
            namespace=config.namespace.name,
            labels=naming.model_server_labels(model.key),
            selector=naming.selector_labels(naming.model_server_labels(model.key)),
        )
        k8s.apiextensions.CustomResource(
            f"{name}-servicemonitor",
            api_version=manifest["apiVersion"],
            kind=manifest["kind"],
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[service]),
        )
