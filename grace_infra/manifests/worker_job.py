"""One planned Job of the experiment matrix as a Kubernetes Job manifest: the worker's container,
volumes, labels and resources, and (job mode) the vLLM sidecar beside it. Pure builders: the
ExperimentJob component (components/experiment_job.py) only registers what `job_manifest` returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grace_infra import constants as c
from grace_infra.config.stack_config import GraceConfig
from grace_infra.manifests import completion_gate, job_lifecycle, naming, security, vllm_server
from grace_infra.planning.gpu_hours import pod_deadline_s
from grace_infra.planning.matrix import JobKind, PlannedJob
from grace_infra.planning.sizing import (
    WORKER_TMP_SIZE_GI,
    worker_resources,
)
from grace_infra.planning.study_bundle import StudyBundle
from worker import contract

__all__ = [
    "ALL",
    "INPUT_VOLUME",
    "LOGS_VOLUME",
    "OUTPUT_VOLUME",
    "STUDIES_VOLUME",
    "TMP_VOLUME",
    "WORKER_NAME_LABEL",
    "job_labels",
    "job_manifest",
    "missing_input_help",
    "pod_labels",
    "pod_spec",
    "worker_container",
    "worker_pod_security_context",
]



INPUT_VOLUME = "input"
OUTPUT_VOLUME = "output"
LOGS_VOLUME = "logs"
STUDIES_VOLUME = "studies"
TMP_VOLUME = "tmp"
WORKER_NAME_LABEL = "grace-worker"
ALL = "all"  # label value of a job-mode Job that runs several studies/experiments

_SERVICE_ACCOUNT = {
    JobKind.QUERY: c.SA_QUERY_JOB,
    JobKind.EXTRACTION: c.SA_EXTRACTION_JOB,
    JobKind.GATE: c.SA_EXTRACTION_GATE,
}
_COMPONENT = {
    JobKind.QUERY: c.COMPONENT_QUERY_JOB,
    JobKind.EXTRACTION: c.COMPONENT_EXTRACTION_JOB,
    JobKind.GATE: c.COMPONENT_GATE_JOB,
}


def job_labels(job: PlannedJob) -> dict[str, str]:
    """`project: grace` and the recommended labels (what `kubectl delete jobs -l project=grace` and the
    NetworkPolicies select) plus the cell: study, experiment, model."""
    studies, experiments = job.studies, job.experiments
    return {
        **naming.recommended_labels(
            name=WORKER_NAME_LABEL, instance=job.name, component=_COMPONENT[job.kind]
        ),
        "study": studies[0].value if len(studies) == 1 else ALL,
        "experiment": experiments[0].value if len(experiments) == 1 else ALL,
        "model": job.model.key,
    }


def pod_labels(job: PlannedJob) -> dict[str, str]:
    # HTTPS egress only where a worker must leave the cluster: the external extraction endpoint. A
    # job-mode pod runs vLLM from weights its download Job put on the claim before: no egress.
    return {**job_labels(job), **naming.https_egress_labels(job.external_endpoint)}


def _worker_env(job: PlannedJob, config: GraceConfig) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": contract.LOG_LEVEL_ENV, "value": config.jobs.log_level},
        {"name": "EXPERIMENT_ID", "value": job.name},
        # Each Job's own log file on the logs PVC (CephFS: one writer per file).
        {"name": contract.LOG_FILE_ENV, "value": f"{c.LOGS_MOUNT}/{job.name}.log"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    on_claim = sorted(str(p) for p in job.reads if p.is_relative_to(c.INPUT_MOUNT))
    if on_claim:
        # What the worker adds when such a file is missing: which claim, and how to fill it.
        env.append({"name": contract.MISSING_INPUT_HELP_ENV, "value": missing_input_help(on_claim)})
    if job.external_endpoint:
        env.append(
            {
                "name": contract.DEEPSEEK_API_KEY_ENV,
                # Secret values reach the pod only by reference; the key never enters the manifest.
                "valueFrom": {"secretKeyRef": {"name": c.DEEPSEEK_SECRET, "key": c.DEEPSEEK_SECRET_KEY}},
            }
        )
    return env


def missing_input_help(paths: Sequence[str]) -> str:
    """The sentence a Job's worker prints when an input it reads from the input claim is missing."""
    return (
        f"{', '.join(paths)} must be uploaded to the claim {c.INPUT_PVC} before this Job runs "
        "(docs/lifecycle.md, 'Large inputs on the input claim'), or ship a CSV under 1 MiB in the "
        "studies ConfigMap with grace:experiments.inputFiles; then delete this Job and run pulumi up."
    )


def worker_container(job: PlannedJob, config: GraceConfig, bundle: StudyBundle) -> dict[str, Any]:
    """The worker container. The image's entry point is `python -m worker`: args start at the subcommand.

    In job mode it also mounts its sidecar's weights read-only and is told where the download's marker
    is, so its meta files record the exact commit the server loaded."""
    studies = (
        [{"name": STUDIES_VOLUME, "mountPath": contract.STUDIES_MOUNT, "readOnly": True}]
        if bundle.configmap_items(job.reads)
        else []
    )
    weights = (
        [{"name": vllm_server.WEIGHTS_VOLUME, "mountPath": c.WEIGHTS_MOUNT, "readOnly": True}]
        if job.sidecar
        else []
    )
    marker = {"name": contract.WEIGHTS_MARKER_ENV, "value": c.WEIGHTS_MARKER_PATH}
    marker_env = [marker] if job.sidecar else []
    return {
        "name": c.WORKER_CONTAINER_NAME,
        "image": config.images.job,
        "imagePullPolicy": c.IMAGE_PULL_POLICY,
        "args": list(job.args),
        "env": [*_worker_env(job, config), *marker_env],
        "ports": [
            {"name": c.WORKER_METRICS_PORT_NAME, "containerPort": contract.METRICS_PORT, "protocol": "TCP"}
        ],
        "resources": worker_resources(config).as_k8s(),
        "volumeMounts": [
            {"name": INPUT_VOLUME, "mountPath": c.INPUT_MOUNT, "readOnly": True},
            {"name": OUTPUT_VOLUME, "mountPath": c.OUTPUT_MOUNT},
            {"name": LOGS_VOLUME, "mountPath": c.LOGS_MOUNT},
            *studies,
            *weights,
            {"name": TMP_VOLUME, "mountPath": "/tmp"},  # noqa: S108 (an emptyDir: the root filesystem is read-only)
        ],
        "securityContext": security.job_image_security_context(),
    }


def _volumes(job: PlannedJob, bundle: StudyBundle) -> list[dict[str, Any]]:
    # Only the files this Job reads (whose hash its template carries); none yet: no studies volume,
    # because an empty `items` would project every key of the ConfigMap.
    items = [{"key": key, "path": path} for key, path in bundle.configmap_items(job.reads)]
    studies = [{"name": STUDIES_VOLUME, "configMap": {"name": c.STUDIES_CONFIGMAP, "items": items}}]
    return [
        {"name": INPUT_VOLUME, "persistentVolumeClaim": {"claimName": c.INPUT_PVC, "readOnly": True}},
        {"name": OUTPUT_VOLUME, "persistentVolumeClaim": {"claimName": c.OUTPUT_PVC}},
        {"name": LOGS_VOLUME, "persistentVolumeClaim": {"claimName": c.LOGS_PVC}},
        *(studies if items else []),
        {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": f"{WORKER_TMP_SIZE_GI}Gi"}},
    ]


def worker_pod_security_context() -> dict[str, Any]:
    """The worker (uid 10001) writes /output and /logs on CephFS claims. ceph-csi creates each CephFS
    subvolume owned by root with mode 0755 (ceph/ceph-csi#2847 dropped the former 0777; see
    rook/rook#12242), so a non-root writer needs the volume's group: with fsGroup the kubelet makes the
    volume's root group-owned by it and group-writable (Rook deploys its cephfs CSIDriver with
    fsGroupPolicy: File; rook/rook#17763 is the regression where it did not). OnRootMismatch skips the
    recursive walk once the root already matches, so a claim holding thousands of result files is not
    re-chowned at every start."""
    return {
        "seccompProfile": {"type": "RuntimeDefault"},
        "fsGroup": c.WORKER_UID,
        "fsGroupChangePolicy": "OnRootMismatch",
    }


def pod_spec(job: PlannedJob, config: GraceConfig, bundle: StudyBundle) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": _SERVICE_ACCOUNT[job.kind],
        "automountServiceAccountToken": False,  # the worker never calls the Kubernetes API
        "enableServiceLinks": False,
        # Never: the Job controller, not the kubelet, retries a failed pod, so podFailurePolicy can judge
        # each exit; the next pod resumes from the checkpoint on the same PVC.
        "restartPolicy": "Never",
        # On the pod, not the Job: it counts from the kubelet's acknowledgement of the pod on a node
        # (PodStatus.startTime), so a pod waiting for a node or for quota spends none of it; the Job's own
        # activeDeadlineSeconds would count from the Job's first sync (docs/lifecycle.md, "Deadlines").
        "activeDeadlineSeconds": pod_deadline_s(job, config, bundle),
        "securityContext": worker_pod_security_context(),
        **security.job_image_pull_secrets(config),
        "containers": [worker_container(job, config, bundle)],
        "volumes": _volumes(job, bundle),
    }
    if job.sidecar:
        init_containers, server_volumes = vllm_server.vllm_sidecar_parts(job.model, config)
        # Outputs check (job mode): a rerun whose outputs are complete never loads the weights.
        check = completion_gate.check_container(job, worker_container(job, config, bundle))
        spec["initContainers"] = [check, *completion_gate.skip_when_complete(init_containers)]
        # The worker reads the sidecar's start-failure marker (payloads/server_start.py) first thing.
        worker = spec["containers"][0]
        worker["env"] = [
            *worker["env"],
            {"name": contract.SERVER_START_FAILED_ENV, "value": c.SERVER_START_FAILED_MARKER},
        ]
        worker["volumeMounts"] = [*worker["volumeMounts"], completion_gate.run_state_mount(read_only=True)]
        spec["volumes"] = [*server_volumes, *spec["volumes"], completion_gate.run_state_volume()]
        vllm_server.apply_gpu_placement(spec, job.model)
    return spec


def job_manifest(job: PlannedJob, config: GraceConfig, bundle: StudyBundle) -> dict[str, Any]:
    """The Job object (apiVersion/kind omitted: the resource class sets them)."""
    annotations = {
        # The hash of the files this Job reads sits in its pod template: changing a prompt, schema,
        # inline CSV or task list changes the template, and Pulumi's diff shows exactly these Jobs replaced.
        c.STUDIES_CONTENT_HASH_ANNOTATION: bundle.digest(job.reads),
    }
    labels = job_labels(job)
    pod = pod_spec(job, config, bundle)
    spec: dict[str, Any] = {
        "backoffLimit": c.JOB_BACKOFF_LIMIT,
        "podFailurePolicy": job_lifecycle.pod_failure_policy(),
        "template": {
            "metadata": {"labels": pod_labels(job), "annotations": annotations},
            "spec": pod,
        },
    }
    if job.suspended:
        # No pod, so no GPU, until the extraction gate (a CPU pod) has found every input complete and
        # patched this to false; the Job's startTime is set only then (manifests/extraction_gate.py).
        spec["suspend"] = True
    if config.jobs.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = config.jobs.ttl_seconds_after_finished
    return {
        "metadata": {
            "name": job.name,
            "namespace": config.namespace.name,
            "labels": labels,
            "annotations": {**job_lifecycle.await_annotations(), **security.checkov_skip_annotations(pod)},
        },
        "spec": spec,
    }
