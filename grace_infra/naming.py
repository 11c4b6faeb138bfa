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
    return {**recommended_labels(name="vllm", instance=model_key, component=c.COMPONENT_MODEL_SERVER), "model": model_key}


def selector_labels(labels: dict[str, str]) -> dict[str, str]:
    """The immutable subset used in selectors (a StatefulSet's selector cannot change later)."""
    keep = (c.LABEL_PROJECT, c.LABEL_NAME, c.LABEL_INSTANCE, c.LABEL_COMPONENT)
    return {k: labels[k] for k in keep if k in labels}
