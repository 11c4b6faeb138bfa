"""GraceStorage: the study data, results, logs and model weights, which must outlive every deployment.

Claims keep the seed's fixed names (`grace-input-data`, `grace-output-data`, `grace-logs`,
`grace-model-weights-<model>`): pods mount them by name and people copy results out by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_kubernetes as k8s

from grace_infra import constants as c
from grace_infra import naming
from grace_infra.config import AccessMode, GraceConfig, VolumeConfig

__all__ = ["TYPE_TOKEN", "ClaimSpec", "GraceStorage", "GraceStorageArgs", "claim_specs"]

TYPE_TOKEN = "grace:index:GraceStorage"  # noqa: S105 (a Pulumi type token, not a secret)
_COMPONENT = "storage"


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


@dataclass
class GraceStorageArgs:
    """Inputs of GraceStorage."""

    config: GraceConfig
    """The parsed stack config: storage classes, sizes and access modes, and the served models."""

    namespace: pulumi.Input[str]
    """Namespace of the claims; pass `GraceFoundation.namespace` so a created Namespace comes first."""


class GraceStorage(pulumi.ComponentResource):
    """Input, output, logs and per-model weights PVCs, all protected and retained on delete."""

    input_claim: pulumi.Output[str]
    output_claim: pulumi.Output[str]
    logs_claim: pulumi.Output[str]
    weights_claims: dict[str, pulumi.Output[str]]
    """Weights claim name per model key."""
    claims: dict[str, k8s.core.v1.PersistentVolumeClaim]
    """Every claim resource by metadata.name, for `depends_on` of the pods that mount it."""

    def __init__(self, name: str, args: GraceStorageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        self.claims = {}
        self.weights_claims = {}
        for spec in claim_specs(args.config):
            claim = self._create_claim(name, spec, args.namespace)
            self.claims[spec.name] = claim
            if spec.model is not None:
                self.weights_claims[spec.model] = claim.metadata.name
        self.input_claim = self.claims[c.INPUT_PVC].metadata.name
        self.output_claim = self.claims[c.OUTPUT_PVC].metadata.name
        self.logs_claim = self.claims[c.LOGS_PVC].metadata.name
        self.register_outputs({
            "inputClaim": self.input_claim,
            "outputClaim": self.output_claim,
            "logsClaim": self.logs_claim,
            "weightsClaims": self.weights_claims,
        })

    def _create_claim(
        self, name: str, spec: ClaimSpec, namespace: pulumi.Input[str]
    ) -> k8s.core.v1.PersistentVolumeClaim:
        labels = naming.recommended_labels(name=spec.role, instance=spec.name, component=_COMPONENT)
        if spec.model is not None:
            labels["model"] = spec.model
        # The data must survive any deployment change: protect makes a plain `pulumi destroy` fail and
        # `pulumi destroy --exclude-protected` skip the claim; retain_on_delete makes Pulumi forget
        # rather than delete it should it ever be unprotected, removed from config or replaced (a
        # changed size class or access mode forces a replacement of a PVC).
        return k8s.core.v1.PersistentVolumeClaim(
            f"{name}-{spec.suffix}",
            metadata=cast(Any, {"name": spec.name, "namespace": namespace, "labels": labels}),
            spec=cast(Any, {
                "accessModes": [spec.access_mode.value],
                "storageClassName": spec.storage_class,
                "resources": {"requests": {"storage": spec.size}},
            }),
            opts=pulumi.ResourceOptions(parent=self, protect=True, retain_on_delete=True),
        )
