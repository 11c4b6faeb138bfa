"""Prometheus Operator objects for the vLLM servers and the Jobs' pods (created only with
`grace:monitoring.enabled`).

The ServiceMonitor CRD (monitoring.coreos.com/v1) may be absent from a cluster, so nothing here is built
unless the stack asks for it; `kubernetes-validate` knows only built-in kinds and skips these.
"""

from __future__ import annotations

from typing import Any

from grace_infra import constants as c
from grace_infra.config.stack_config import GraceConfig
from grace_infra.manifests import naming
from grace_infra.manifests.worker_job import WORKER_NAME_LABEL

__all__ = ["POD_MONITOR_NAME", "pod_monitor_manifest", "service_monitor_manifest"]

SERVICE_MONITOR_API_VERSION = "monitoring.coreos.com/v1"
SERVICE_MONITOR_KIND = "ServiceMonitor"
POD_MONITOR_NAME = "grace-jobs"
POD_MONITOR_API_VERSION = SERVICE_MONITOR_API_VERSION
POD_MONITOR_KIND = "PodMonitor"


def service_monitor_manifest(
    *, name: str, namespace: str, labels: dict[str, str], selector: dict[str, str]
) -> dict[str, Any]:
    """A ServiceMonitor scraping vLLM's `/metrics` on the Service port named `http`.

    `targetLabels: [model]` copies the Service's `model` label onto every series, so dashboards can
    split vLLM's metrics (which carry only `model_name`) by the Grace model key even across restarts.
    """
    return {
        "apiVersion": SERVICE_MONITOR_API_VERSION,
        "kind": SERVICE_MONITOR_KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": selector},
            "namespaceSelector": {"matchNames": [namespace]},
            "targetLabels": ["model"],
            "endpoints": [
                {
                    "port": c.VLLM_PORT_NAME,
                    "path": c.VLLM_METRICS_PATH,
                    "interval": c.MONITORING_SCRAPE_INTERVAL,
                    "scheme": "http",
                }
            ],
        },
    }


def pod_monitor_manifest(config: GraceConfig) -> dict[str, Any]:
    """A PodMonitor for every worker pod's `metrics` port, and for the vLLM sidecar's `/metrics` on
    `http` in job mode (a job-mode server has no Service, so the servers' ServiceMonitor misses it)."""
    interval = c.MONITORING_SCRAPE_INTERVAL
    return {
        "apiVersion": POD_MONITOR_API_VERSION,
        "kind": POD_MONITOR_KIND,
        "metadata": {
            "name": POD_MONITOR_NAME,
            "namespace": config.namespace.name,
            "labels": naming.recommended_labels(
                name=WORKER_NAME_LABEL, instance=POD_MONITOR_NAME, component="monitoring"
            ),
        },
        "spec": {
            "selector": {"matchLabels": {c.LABEL_PROJECT: c.PROJECT, c.LABEL_NAME: WORKER_NAME_LABEL}},
            "namespaceSelector": {"matchNames": [config.namespace.name]},
            "podTargetLabels": ["study", "experiment", "model"],
            "podMetricsEndpoints": [
                {"port": c.WORKER_METRICS_PORT_NAME, "interval": interval},
                {"port": c.VLLM_PORT_NAME, "path": c.VLLM_METRICS_PATH, "interval": interval},
            ],
        },
    }
