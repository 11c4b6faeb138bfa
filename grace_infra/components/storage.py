"""GraceStorage: the study data, results, logs and model weights, which must outlive every deployment.

Claims keep the researchers' original fixed names (`grace-input-data`, `grace-output-data`, `grace-logs`,
`grace-model-weights-<model>`): pods mount them by name and people copy results out by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_kubernetes as k8s

from grace_infra import constants as c
from grace_infra.config.stack_config import GraceConfig
from grace_infra.manifests import naming
from grace_infra.manifests.claims import COMPONENT_STORAGE, ClaimSpec, claim_specs

__all__ = ["TYPE_TOKEN", "GraceStorage", "GraceStorageArgs"]

TYPE_TOKEN = "grace:index:GraceStorage"  # noqa: S105 (a Pulumi type token, not a secret)


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
        labels = naming.recommended_labels(name=spec.role, instance=spec.name, component=COMPONENT_STORAGE)
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
