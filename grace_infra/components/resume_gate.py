"""ExtractionGate: the CPU Job that resumes the suspended extraction Job, with its own identity.

    ServiceAccount grace-extraction-gate   a token in the gate's pod only
    Role / RoleBinding grace-extraction-gate   get and patch on the one Job it resumes
    Job resume-extraction-<coder>          wait-for-inputs (init), then resume (manifests/extraction_gate.py)

Created after the Job it resumes (ordering only; Pulumi waits for neither: `pulumi.com/waitFor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pulumi
import pulumi_kubernetes as k8s

from grace_infra import constants as c
from grace_infra.config.stack_config import GraceConfig
from grace_infra.manifests import job_lifecycle, naming
from grace_infra.manifests.extraction_gate import (
    gate_job_manifest,
    gate_role_binding_manifest,
    gate_role_manifest,
)
from grace_infra.planning.matrix import PlannedJob
from grace_infra.planning.study_bundle import StudyBundle

__all__ = ["TYPE_TOKEN", "ExtractionGate", "ExtractionGateArgs"]

TYPE_TOKEN = "grace:index:ExtractionGate"  # noqa: S105 (a Pulumi type token, not a secret)


@dataclass
class ExtractionGateArgs:
    """Inputs of the extraction gate."""

    job: PlannedJob
    """The gate as planned (`plan_jobs`): its task list, and the suspended Job it resumes."""
    config: GraceConfig
    """The stack config (namespace, images)."""
    bundle: StudyBundle
    """The studies ConfigMap's content: the task list and the study files the wait reads."""
    resumes: pulumi.Resource
    """The suspended Job; the gate is created after it."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """Resources the gate's pod needs first (the ConfigMap, the claims)."""


class ExtractionGate(pulumi.ComponentResource):
    """A CPU Job that resumes one suspended Job once every input it reads is complete."""

    job_name: pulumi.Output[str]
    job: k8s.batch.v1.Job

    def __init__(
        self, name: str, args: ExtractionGateArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        access = self._create_access(name, args)
        self.job = self._create_job(name, args, access)
        self.job_name = pulumi.Output.from_input(args.job.name)
        self.register_outputs({"jobName": self.job_name})

    def _create_access(self, name: str, args: ExtractionGateArgs) -> list[pulumi.Resource]:
        namespace = args.config.namespace.name
        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata={
                "name": c.SA_EXTRACTION_GATE,
                "namespace": namespace,
                "labels": naming.recommended_labels(
                    name=c.SA_EXTRACTION_GATE, instance=args.job.name, component="service-account"
                ),
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )
        role = gate_role_manifest(args.job, args.config)
        created_role = k8s.rbac.v1.Role(
            f"{name}-role",
            metadata=role["metadata"],
            rules=cast(Any, role["rules"]),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )
        binding = gate_role_binding_manifest(args.job, args.config)
        created_binding = k8s.rbac.v1.RoleBinding(
            f"{name}-binding",
            metadata=binding["metadata"],
            role_ref=cast(Any, binding["roleRef"]),
            subjects=cast(Any, binding["subjects"]),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[account, created_role]),
        )
        return [account, created_role, created_binding]

    def _create_job(
        self, name: str, args: ExtractionGateArgs, access: list[pulumi.Resource]
    ) -> k8s.batch.v1.Job:
        manifest = gate_job_manifest(args.job, args.config, args.bundle)
        return k8s.batch.v1.Job(
            f"{name}-job",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*args.depends_on, *access, args.resumes],
                # Like every Job: an immutable podFailurePolicy that changes replaces it, old one first.
                replace_on_changes=list(job_lifecycle.REPLACE_ON_CHANGES),
                delete_before_replace=True,
            ),
        )
