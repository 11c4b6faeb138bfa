"""Prometheus Operator objects for the vLLM servers (created only with `grace:monitoring.enabled`).

The ServiceMonitor CRD (monitoring.coreos.com/v1) may be absent from a cluster, so nothing here is built
unless the stack asks for it; `kubernetes-validate` knows only built-in kinds and skips these.
"""

from __future__ import annotations

from typing import Any

from grace_infra import constants as c

__all__ = ["service_monitor_manifest"]

SERVICE_MONITOR_API_VERSION = "monitoring.coreos.com/v1"
SERVICE_MONITOR_KIND = "ServiceMonitor"


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
