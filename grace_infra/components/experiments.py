"""Build the experiment matrix: the studies ConfigMap, one ExperimentJob per planned Job, and (with
`grace:monitoring.enabled`) a PodMonitor scraping the workers. `stack.build_stack` calls
`build_experiments` once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from grace_infra.components.experiment_job import ExperimentJob, ExperimentJobArgs
from grace_infra.components.resume_gate import ExtractionGate, ExtractionGateArgs
from grace_infra.components.studies_configmap import create_studies_configmap
from grace_infra.config.stack_config import GraceConfig
from grace_infra.manifests.monitoring import POD_MONITOR_NAME, pod_monitor_manifest
from grace_infra.planning.matrix import PlannedJob, plan_experiments
from grace_infra.planning.study_bundle import StudyBundle

__all__ = ["Experiments", "build_experiments"]



@dataclass(frozen=True)
class Experiments:
    """What `build_experiments` registered."""

    bundle: StudyBundle
    planned: list[PlannedJob]
    jobs: dict[str, ExperimentJob]  # by Job name


def build_experiments(
    config: GraceConfig,
    *,
    depends_on: Sequence[pulumi.Resource] = (),
    weights_claims: Mapping[str, pulumi.Resource] | None = None,
    opts: pulumi.ResourceOptions | None = None,
) -> Experiments:
    """Register the ConfigMap, every Job of the matrix (extraction Jobs after their exp1 writers), and
    the PodMonitor. `depends_on`: what every Job needs first (shared PVCs, service accounts, secrets);
    `weights_claims`: model key -> what a job-mode model's Job needs before its sidecar can start (the
    model's weight download Job, which itself follows the weights PVC).

    No Job depends on a model server: Pulumi would then wait for the StatefulSet to become ready (up
    to its load budget) before creating the Job. The worker waits for /health in the cluster instead."""
    bundle, planned = plan_experiments(config)
    base = opts or pulumi.ResourceOptions()
    after_foundation = pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(depends_on=list(depends_on)))
    configmap = create_studies_configmap(bundle, config, after_foundation)
    claims = weights_claims or {}
    jobs: dict[str, ExperimentJob] = {}
    for job in planned:  # plan_jobs lists every writer before the Jobs that run after it
        if job.resumes is not None:
            ExtractionGate(
                job.name,
                ExtractionGateArgs(
                    job=job,
                    config=config,
                    bundle=bundle,
                    resumes=jobs[job.resumes].job,
                    depends_on=[configmap, *depends_on],
                ),
                opts=base,
            )
            continue
        jobs[job.name] = ExperimentJob(
            job.name,
            ExperimentJobArgs(
                job=job,
                config=config,
                bundle=bundle,
                runs_after=[jobs[name] for name in job.runs_after],
                depends_on=[
                    configmap,
                    *depends_on,
                    *([claims[job.model.key]] if job.sidecar and job.model.key in claims else []),
                ],
            ),
            opts=base,
        )
    if config.monitoring.enabled and planned:
        manifest = pod_monitor_manifest(config)
        k8s.apiextensions.CustomResource(
            POD_MONITOR_NAME,
            api_version=manifest["apiVersion"],
            kind=manifest["kind"],
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=base,
        )
    return Experiments(bundle=bundle, planned=planned, jobs=jobs)
