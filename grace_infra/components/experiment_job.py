"""ExperimentJob: one planned Job of the experiment matrix (see `matrix.py`) as a Kubernetes Job.

    persistent model   Job study1-exp1-<model>   containers [worker: query ... http://vllm-<model>:8000/v1]
    job-mode model     Job matrix-<model>        initContainers [vllm (native sidecar)], after weights-<model>
                                                 containers [worker: run --tasks <task list>]
    extraction         persistent or external coder: Job structured-output-study1-<model> (a CPU pod),
                       created after the Job that writes its exp1 file, waits for that file itself
                       (--wait-for-input); job-mode coder: Job extraction-<coder>, a job-mode Job created
                       suspended and resumed by its gate (components/resume_gate.py)

Ordering never blocks `pulumi up`: every Job carries `pulumi.com/waitFor: jsonpath={.metadata.uid}`, so
Pulumi creates it and moves on while a replacement still waits for the old Job's deletion
(`job_lifecycle`); the worker itself waits for its server's /health and for its input file. The pure
`job_manifest` builds the object; the component only registers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from grace_infra.config.stack_config import GraceConfig
from grace_infra.manifests import job_lifecycle
from grace_infra.manifests.worker_job import (
    job_manifest,
)
from grace_infra.planning.matrix import PlannedJob
from grace_infra.planning.study_bundle import StudyBundle

__all__ = ["TYPE_TOKEN", "ExperimentJob", "ExperimentJobArgs"]

TYPE_TOKEN = "grace:index:ExperimentJob"  # noqa: S105 (a Pulumi type token, not a secret)


@dataclass
class ExperimentJobArgs:
    """Inputs of one experiment Job."""

    job: PlannedJob
    """What the Job runs: name, worker command line, model, and whether the model runs as a sidecar."""
    config: GraceConfig
    """The stack config (namespace, images, Job settings)."""
    bundle: StudyBundle
    """The studies ConfigMap's content; the Job's pod template carries the hash of the files it reads."""
    runs_after: Sequence[ExperimentJob] = field(default_factory=tuple)
    """Jobs created first (an extraction Job after the Job writing its exp1 file). Ordering only:
    Pulumi never waits for them to finish; the worker waits for the file itself."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """Resources the Job needs to exist first (the studies ConfigMap, PVCs, service accounts)."""


class ExperimentJob(pulumi.ComponentResource):
    """One Kubernetes Job of the experiment matrix, never awaited by `pulumi up`."""

    job_name: pulumi.Output[str]
    job: k8s.batch.v1.Job

    def __init__(
        self, name: str, args: ExperimentJobArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        self.job = self._create_job(name, args)
        self.job_name = pulumi.Output.from_input(args.job.name)
        self.register_outputs({"jobName": self.job_name})

    def _create_job(self, name: str, args: ExperimentJobArgs) -> k8s.batch.v1.Job:
        manifest = job_manifest(args.job, args.config, args.bundle)
        return k8s.batch.v1.Job(
            f"{name}-job",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*args.depends_on, *(earlier.job for earlier in args.runs_after)],
                # A suspended Job is resumed by its gate (manifests/extraction_gate.py); after a `pulumi
                # refresh` reads that back, the next `up` must not suspend the running Job again.
                ignore_changes=["spec.suspend"] if args.job.suspended else None,
                replace_on_changes=list(job_lifecycle.REPLACE_ON_CHANGES),
                delete_before_replace=True,
            ),
        )
