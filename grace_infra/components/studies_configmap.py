"""The `grace-studies` ConfigMap: the study definitions, schemas, small input CSVs and job-mode task
lists the Jobs read, mounted read-only at /etc/grace with the same layout as `jobs/`.

Prompts are data: editing `jobs/studies/researchers/study1.yaml` changes this ConfigMap's content, and
(through the per-Job hash in `experiment_job.job_manifest`) the pod template of exactly the Jobs that read
it, so `pulumi preview` lists those Jobs as replaced.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from grace_infra import constants as c
from grace_infra.config.stack_config import GraceConfig
from grace_infra.manifests.studies_map import configmap_manifest
from grace_infra.planning.study_bundle import StudyBundle

__all__ = ["create_studies_configmap"]



def create_studies_configmap(
    bundle: StudyBundle, config: GraceConfig, opts: pulumi.ResourceOptions | None = None
) -> k8s.core.v1.ConfigMap:
    """Register the ConfigMap under its fixed name (the Jobs' volumes name it)."""
    manifest = configmap_manifest(bundle, config)
    return k8s.core.v1.ConfigMap(
        c.STUDIES_CONFIGMAP, metadata=manifest["metadata"], data=manifest["data"], opts=opts
    )
