"""ExperimentJob: one planned Job of the experiment matrix (see `matrix.py`) as a Kubernetes Job.

    persistent model   Job study1-exp1-<model>   containers [worker: query ... http://vllm-<model>:8000/v1]
    job-mode model     Job matrix-<model>        initContainers [vllm (native sidecar)], after weights-<model>
                                                 containers [worker: run --tasks <task list>]
    extraction         Job structured-output-study1-<model>: created after the Job that writes its exp1
                       file, and waits in the cluster for that file (--wait-for-input)

Ordering never blocks `pulumi up`: every Job carries `pulumi.com/waitFor: jsonpath={.metadata.uid}`, so
Pulumi creates it and moves on while a replacement still waits for the old Job's deletion
(`job_lifecycle`); the worker itself waits for its server's /health and for its input file. The pure
`job_manifest` builds the object; the component only registers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from grace_infra import constants as c
from grace_infra import job_lifecycle, model_server, naming, nrp_cluster, outputs_check, security
from grace_infra.config import GraceConfig
from grace_infra.gpu_hours import job_deadline_s
from grace_infra.matrix import JobKind, PlannedJob
from grace_infra.sizing import ContainerResources, cpu_limit_within
from grace_infra.studies import StudyBundle

__all__ = [
    "TYPE_TOKEN",
    "ExperimentJob",
    "ExperimentJobArgs",
    "job_labels",
    "job_manifest",
    "worker_container",
    "worker_resources",
]

TYPE_TOKEN = "grace:index:ExperimentJob"  # noqa: S105 (a Pulumi type token, not a secret)

INPUT_VOLUME = "input"
OUTPUT_VOLUME = "output"
LOGS_VOLUME = "logs"
STUDIES_VOLUME = "studies"
TMP_VOLUME = "tmp"
TMP_SIZE_GI = 1  # pandas/openai scratch only; every result goes to /output
WORKER_NAME_LABEL = "grace-worker"
ALL = "all"  # label value of a job-mode Job that runs several studies/experiments

_SERVICE_ACCOUNT = {JobKind.QUERY: c.SA_QUERY_JOB, JobKind.EXTRACTION: c.SA_EXTRACTION_JOB}
_COMPONENT = {JobKind.QUERY: c.COMPONENT_QUERY_JOB, JobKind.EXTRACTION: c.COMPONENT_EXTRACTION_JOB}


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


def worker_resources(config: GraceConfig) -> ContainerResources:
    """The worker is an I/O-bound asyncio client: one core, a little memory, no GPU.

    CPU may burst to NRP's 1.2x (rounded down); memory limit = request, so an out-of-memory kill is
    predictable instead of depending on what else runs on the node.
    """
    jobs = config.jobs
    return ContainerResources(
        cpu_request=jobs.cpu_request,
        cpu_limit=cpu_limit_within(jobs.cpu_request, c.WORKER_CPU_LIMIT_RATIO),
        memory_request_gi=jobs.memory_request_gi,
        memory_limit_gi=jobs.memory_request_gi,
        gpus=0,
        gpu_resource_name=nrp_cluster.GENERIC_GPU_RESOURCE,  # no GPU: the name is never rendered
        # Node-local disk: /tmp (an emptyDir, the root filesystem is read-only), the job-mode run-state
        # emptyDir and the container's log; a whole GiB above /tmp's size limit covers the rest.
        ephemeral_request_gi=TMP_SIZE_GI + 1,
        ephemeral_limit_gi=TMP_SIZE_GI + 1,
    )


def _worker_env(job: PlannedJob, config: GraceConfig) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "LOG_LEVEL", "value": config.jobs.log_level},
        {"name": "EXPERIMENT_ID", "value": job.name},
        # Each Job's own log file on the logs PVC (CephFS: one writer per file).
        {"name": c.WORKER_LOG_FILE_ENV, "value": f"{c.LOGS_MOUNT}/{job.name}.log"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    on_claim = sorted(str(p) for p in job.reads if p.is_relative_to(c.INPUT_MOUNT))
    if on_claim:
        # What the worker adds when such a file is missing: which claim, and how to fill it.
        env.append({"name": c.MISSING_INPUT_HELP_ENV, "value": missing_input_help(on_claim)})
    if job.external_endpoint:
        env.append(
            {
                "name": c.DEEPSEEK_API_KEY_ENV,
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
        [{"name": STUDIES_VOLUME, "mountPath": c.STUDIES_MOUNT, "readOnly": True}]
        if bundle.configmap_items(job.reads)
        else []
    )
    weights = (
        [{"name": model_server.WEIGHTS_VOLUME, "mountPath": c.WEIGHTS_MOUNT, "readOnly": True}]
        if job.sidecar
        else []
    )
    marker_env = [{"name": c.WEIGHTS_MARKER_ENV, "value": c.WEIGHTS_MARKER_PATH}] if job.sidecar else []
    return {
        "name": c.WORKER_CONTAINER_NAME,
        "image": config.images.job,
        "imagePullPolicy": c.IMAGE_PULL_POLICY,
        "args": list(job.args),
        "env": [*_worker_env(job, config), *marker_env],
        "ports": [
            {"name": c.WORKER_METRICS_PORT_NAME, "containerPort": c.WORKER_METRICS_PORT, "protocol": "TCP"}
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
        {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": f"{TMP_SIZE_GI}Gi"}},
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
        "securityContext": worker_pod_security_context(),
        "containers": [worker_container(job, config, bundle)],
        "volumes": _volumes(job, bundle),
    }
    if job.sidecar:
        init_containers, server_volumes = model_server.vllm_sidecar_parts(job.model, config)
        # Outputs check (job mode): a rerun whose outputs are complete never loads the weights.
        check = outputs_check.check_container(job, worker_container(job, config, bundle))
        spec["initContainers"] = [check, *outputs_check.skip_when_complete(init_containers)]
        spec["volumes"] = [*server_volumes, *spec["volumes"], outputs_check.run_state_volume()]
        model_server.apply_gpu_placement(spec, job.model)
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
        "activeDeadlineSeconds": job_deadline_s(job, config, bundle),
        "template": {
            "metadata": {"labels": pod_labels(job), "annotations": annotations},
            "spec": pod,
        },
    }
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
            ),
        )
