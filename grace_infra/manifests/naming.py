"""Pure name and label helpers: tests call them without building any resource."""

from __future__ import annotations

from grace_infra import constants as c


def recommended_labels(*, name: str, instance: str, component: str) -> dict[str, str]:
    """`project: grace` (what the NetworkPolicy and `kubectl delete -l project=grace` select) plus
    the Kubernetes recommended labels."""
    return {
        c.LABEL_PROJECT: c.PROJECT,
        c.LABEL_NAME: name,
        c.LABEL_INSTANCE: instance,
        c.LABEL_COMPONENT: component,
        c.LABEL_PART_OF: c.PROJECT,
        c.LABEL_MANAGED_BY: "pulumi",
    }


def model_server_labels(model_key: str) -> dict[str, str]:
    """Labels of a model's vLLM pods; the Service selects on `selector_labels` of the same."""
    labels = recommended_labels(name="vllm", instance=model_key, component=c.COMPONENT_MODEL_SERVER)
    return {**labels, "model": model_key}


def selector_labels(labels: dict[str, str]) -> dict[str, str]:
    """The immutable subset used in selectors (a StatefulSet's selector cannot change later)."""
    keep = (c.LABEL_PROJECT, c.LABEL_NAME, c.LABEL_INSTANCE, c.LABEL_COMPONENT)
    return {k: labels[k] for k in keep if k in labels}


def grace_pod_selector() -> dict[str, str]:
    """Selects every pod this program creates (the NetworkPolicies' default-deny scope)."""
    return {c.LABEL_PROJECT: c.PROJECT}


def https_egress_labels(needed: bool = True) -> dict[str, str]:
    """Labels that let a pod open HTTPS connections outside the cluster (NetworkPolicy grace-https-egress).

    Every other grace pod may only talk DNS and to the model servers. Merge these into the POD
    TEMPLATE labels (not the selector: the label may change when config changes) of exactly:
    - model-server pods: their init container downloads weights from Hugging Face;
    - job-mode Job pods that embed a vLLM sidecar and its download init container;
    - extraction Job pods when `config.jobs.deepseek_endpoint` is set (external DeepSeek API).
    Pass `needed=False` to get no labels, so callers can write `{**labels, **https_egress_labels(cond)}`.
    """
    return {c.LABEL_EGRESS_HTTPS: "true"} if needed else {}

