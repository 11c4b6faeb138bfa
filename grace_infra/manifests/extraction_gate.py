"""The extraction gate: a CPU Job that resumes the suspended extraction Job once its inputs are complete.

    Job extraction-<coder>          spec.suspend: true   no pod, no GPU (vLLM sidecar + worker run --tasks)
    Job resume-extraction-<coder>   a CPU pod:
        initContainers [wait-for-inputs]  the job image: `worker wait-for-inputs --tasks <the same task
                                          list>`, the check extract itself makes (each exp1 file present
                                          and its meta recording the planned digest), output claim read-only
        containers     [resume]           the job image: payloads/resume_job.py, one merge patch
                                          {"spec": {"suspend": false}} with the pod's token
        (first it waits until matrix-<coder> has finished: both pods mount the coder's weights claim, a
        ReadWriteOnce volume that cannot attach to two nodes at once)
    ServiceAccount grace-extraction-gate, Role and RoleBinding: get and patch on that one Job, get on
    matrix-<coder>, nothing else

Kubernetes: a Job created with suspend: true gets no pods and no startTime; resuming it sets startTime,
so a Job-level activeDeadlineSeconds would count from the resume (the batch/v1 JobSpec API reference,
fields `suspend` and `activeDeadlineSeconds`; JobStatus.startTime). pulumi-kubernetes creates it without
waiting for it to run: the Job carries `pulumi.com/waitFor: jsonpath={.metadata.uid}`, which makes
`metadata.ReadyCondition` return custom=true (provider/pkg/metadata/overrides.go:100-156), so
`await.go` skips the built-in Job awaiter (provider/pkg/await/await.go:330-332), whose checker would wait
for a startTime and a Complete condition that a suspended Job never gets
(provider/pkg/await/checker/job/check.go:28-30, jobStarted and jobComplete). `pulumi.com/skipAwait` is not
needed, and not used (it would skip the deletion wait: job_lifecycle.py).

The gate patches a field Pulumi set, so the extraction Job is registered with `ignoreChanges:
["spec.suspend"]` (components/experiment_job.py): a `pulumi refresh` reads `suspend: false` back, and
without it the next `pulumi up` would suspend the running Job again (docs/lifecycle.md says the one case
it does not cover).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grace_infra import constants as c
from grace_infra.config.stack_config import GraceConfig
from grace_infra.manifests import job_lifecycle, naming, security
from grace_infra.manifests.worker_job import (
    OUTPUT_VOLUME,
    _volumes,
    job_labels,
    pod_labels,
    worker_container,
    worker_pod_security_context,
)
from grace_infra.nrp import cluster_facts
from grace_infra.planning.matrix import PlannedJob
from grace_infra.planning.sizing import ContainerResources
from grace_infra.planning.study_bundle import StudyBundle
from worker import contract

__all__ = [
    "GATE_RESOURCES",
    "RESUME_SOURCE",
    "gate_deadline_s",
    "gate_job_manifest",
    "gate_role_binding_manifest",
    "gate_role_manifest",
]

RESUME_SOURCE = (Path(__file__).parents[1] / "payloads" / "resume_job.py").read_text()
RESUME_RETRY_FOR_S = 600  # payloads/resume_job.py RETRY_FOR_S
# The gate sleeps between checks of a few files: a tenth of a core and the smallest whole GiB.
GATE_RESOURCES = ContainerResources(
    cpu_request=0.1,
    cpu_limit=0.12,
    memory_request_gi=1,
    memory_limit_gi=1,
    gpus=0,
    gpu_resource_name=cluster_facts.GENERIC_GPU_RESOURCE,  # no GPU: the name is never rendered
    ephemeral_request_gi=1,
    ephemeral_limit_gi=1,
)


def gate_deadline_s(job: PlannedJob) -> int:
    """The gate pod's deadline: its wait (`--timeout`, the whole campaign) plus the resume's retries."""
    timeout = float(job.args[job.args.index("--timeout") + 1])
    return round(timeout) + RESUME_RETRY_FOR_S


def _wait_container(job: PlannedJob, config: GraceConfig, bundle: StudyBundle) -> dict[str, Any]:
    worker = worker_container(job, config, bundle)
    mounts = [
        {**mount, "readOnly": True} if mount["name"] == OUTPUT_VOLUME else mount
        for mount in worker["volumeMounts"]
    ]
    return {
        **{k: v for k, v in worker.items() if k not in {"ports", "name"}},
        "name": contract.WAIT_FOR_INPUTS_COMMAND,
        "resources": GATE_RESOURCES.as_k8s(),
        "volumeMounts": mounts,
    }


def _resume_container(job: PlannedJob, config: GraceConfig) -> dict[str, Any]:
    return {
        "name": c.GATE_RESUME_CONTAINER_NAME,
        "image": config.images.job,
        "imagePullPolicy": c.IMAGE_PULL_POLICY,
        "command": ["python", "-c", RESUME_SOURCE],
        "env": [
            {"name": contract.RESUME_JOB_ENV, "value": job.resumes},
            {"name": contract.AFTER_JOBS_ENV, "value": ",".join(job.resumes_after)},
        ],
        "resources": GATE_RESOURCES.as_k8s(),
        "securityContext": security.job_image_security_context(),
    }


def gate_job_manifest(job: PlannedJob, config: GraceConfig, bundle: StudyBundle) -> dict[str, Any]:
    """The gate Job (apiVersion/kind omitted: the resource class sets them)."""
    if job.resumes is None:
        raise AssertionError(f"{job.name} resumes no Job; it is not a gate")
    pod: dict[str, Any] = {
        "serviceAccountName": c.SA_EXTRACTION_GATE,
        # The one pod with a token: its Role may get and patch exactly the Job it resumes.
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "activeDeadlineSeconds": gate_deadline_s(job),
        "securityContext": worker_pod_security_context(),
        "initContainers": [_wait_container(job, config, bundle)],
        "containers": [_resume_container(job, config)],
        "volumes": _volumes(job, bundle),
        # It runs the job image, like every worker pod: the same pull secret.
        **security.job_image_pull_secrets(config),
    }
    return {
        "metadata": {
            "name": job.name,
            "namespace": config.namespace.name,
            "labels": job_labels(job),
            "annotations": {**job_lifecycle.await_annotations(), **security.checkov_skip_annotations(pod)},
        },
        "spec": {
            "backoffLimit": c.JOB_BACKOFF_LIMIT,
            "podFailurePolicy": job_lifecycle.gate_pod_failure_policy(),
            "template": {
                "metadata": {
                    "labels": pod_labels(job),
                    "annotations": {c.STUDIES_CONTENT_HASH_ANNOTATION: bundle.digest(job.reads)},
                },
                "spec": pod,
            },
        },
    }


def gate_role_manifest(job: PlannedJob, config: GraceConfig) -> dict[str, Any]:
    """The Role: get and patch on the one Job the gate resumes; get on the Jobs it waits to finish."""
    return {
        "metadata": {
            "name": c.SA_EXTRACTION_GATE,
            "namespace": config.namespace.name,
            "labels": naming.recommended_labels(
                name=c.SA_EXTRACTION_GATE, instance=job.name, component="rbac"
            ),
        },
        "rules": [
            {
                "apiGroups": ["batch"],
                "resources": ["jobs"],
                "resourceNames": [job.resumes],
                "verbs": ["get", "patch"],
            },
            *(
                [
                    {
                        "apiGroups": ["batch"],
                        "resources": ["jobs"],
                        "resourceNames": list(job.resumes_after),
                        "verbs": ["get"],
                    }
                ]
                if job.resumes_after
                else []
            ),
        ],
    }


def gate_role_binding_manifest(job: PlannedJob, config: GraceConfig) -> dict[str, Any]:
    return {
        "metadata": {
            "name": c.SA_EXTRACTION_GATE,
            "namespace": config.namespace.name,
            "labels": naming.recommended_labels(
                name=c.SA_EXTRACTION_GATE, instance=job.name, component="rbac"
            ),
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": c.SA_EXTRACTION_GATE},
        "subjects": [
            {"kind": "ServiceAccount", "name": c.SA_EXTRACTION_GATE, "namespace": config.namespace.name}
        ],
    }
