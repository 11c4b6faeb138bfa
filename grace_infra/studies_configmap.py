"""The `grace-studies` ConfigMap: the study definitions, schemas, small input CSVs and job-mode task
lists the Jobs read, mounted read-only at /etc/grace with the same layout as `jobs/`.

Prompts are data: editing `jobs/studies/study1.yaml` changes this ConfigMap's content, and (through
the per-Job hash in `experiment_job.job_manifest`) the pod template of exactly the Jobs that read it,
so `pulumi preview` lists those Jobs as replaced.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from grace_infra import constants as c
from grace_infra import naming
from grace_infra.config import GraceConfig
from grace_infra.studies import StudyBundle

__all__ = ["COMPONENT_STUDIES", "configmap_manifest", "create_studies_configmap"]

COMPONENT_STUDIES = "experiment-definitions"


def configmap_manifest(bundle: StudyBundle, config: GraceConfig) -> dict[str, Any]:
    """The ConfigMap (apiVersion/kind omitted: the resource class sets them)."""
    return {
        "metadata": {
            "name": c.STUDIES_CONFIGMAP,
            "namespace": config.namespace.name,
            "labels": naming.recommended_labels(
                name=c.STUDIES_CONFIGMAP, instance=c.STUDIES_CONFIGMAP, component=COMPONENT_STUDIES
            ),
            "annotations": {c.STUDIES_CONTENT_HASH_ANNOTATION: bundle.digest(bundle.files)},
        },
        "data": bundle.configmap_data(),
    }


def create_studies_configmap(
    bundle: StudyBundle, config: GraceConfig, opts: pulumi.ResourceOptions | None = None
) -> k8s.core.v1.ConfigMap:
    """Register the ConfigMap under its fixed name (the Jobs' volumes name it)."""
    manifest = configmap_manifest(bundle, config)
    return k8s.core.v1.ConfigMap(
        c.STUDIES_CONFIGMAP, metadata=manifest["metadata"], data=manifest["data"], opts=opts
    )
