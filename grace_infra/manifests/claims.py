"""The persistent volume claims a config asks for, as pure data: the GraceStorage component creates
them and the plan lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

from grace_infra import constants as c
from grace_infra.config.stack_config import AccessMode, GraceConfig, VolumeConfig

__all__ = ["COMPONENT_STORAGE", "ClaimSpec", "claim_specs"]


COMPONENT_STORAGE = "storage"  # app.kubernetes.io/component of every claim


@dataclass(frozen=True)
class ClaimSpec:
    """One PersistentVolumeClaim as the config asks for it (pure data: tests and the plan read it)."""

    suffix: str  # Pulumi logical-name suffix
    name: str  # metadata.name, fixed
    role: str  # app.kubernetes.io/name: what the volume holds
    size: str
    access_mode: AccessMode
    storage_class: str
    model: str | None = None  # the model whose weights it holds


def claim_specs(config: GraceConfig) -> list[ClaimSpec]:
    """The stack's claims, shared volumes first, then one weights claim per configured model."""
    storage = config.storage

    def shared(suffix: str, name: str, volume: VolumeConfig) -> ClaimSpec:
        storage_class = volume.storage_class or storage.shared_class
        return ClaimSpec(suffix, name, suffix, volume.size, volume.access_mode, storage_class)

    claims = [
        shared("input-data", c.INPUT_PVC, storage.input),
        shared("output-data", c.OUTPUT_PVC, storage.output),
        shared("logs", c.LOGS_PVC, storage.logs),
    ]
    # RBD gives the fastest single-node reads for 10-160 GB of safetensors; one server pod (or one
    # job-mode Job) mounts it, so ReadWriteOnce is enough (policy.py refuses RWX on block classes).
    claims.extend(
        ClaimSpec(
            f"weights-{model.key}", model.weights_pvc_name, "model-weights", f"{model.weights_pvc_gi}Gi",
            AccessMode.READ_WRITE_ONCE, storage.weights_class, model.key,
        )
        for model in config.served_models()
    )
    return claims
