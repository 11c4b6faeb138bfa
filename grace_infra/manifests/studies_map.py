"""The `grace-studies` ConfigMap's manifest: study definitions, schemas, small input CSVs and job-mode
task lists, mounted read-only at /etc/grace with the same layout as `jobs/`.
"""

from __future__ import annotations

from typing import Any

from grace_infra import constants as c
from grace_infra.config.stack_config import GraceConfig
from grace_infra.manifests import naming
from grace_infra.planning.study_bundle import StudyBundle

__all__ = ["COMPONENT_STUDIES", "configmap_manifest"]


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
