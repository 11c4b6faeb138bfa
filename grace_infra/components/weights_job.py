"""WeightsDownload: one Job per model that fills its weights claim, awaited by `pulumi up`.

    Job weights-<key>   containers [download-weights]   label grace.nrp.io/egress-https=true
        hf_repo@revision -> resolved commit SHA -> /model-weights (+ .tiktoken/ vocabularies, + marker)

Why a Job of its own rather than an init container beside vLLM: NetworkPolicies select PODS, not
containers, so a pod whose init container downloads from huggingface.co keeps HTTPS egress for the
vLLM server (and, in job mode, the worker) running in it afterwards. Here only the download pod may
leave the cluster; the servers and the Jobs that embed them are created after this Job completes
(pulumi-kubernetes awaits a Job until its Complete condition and fails `pulumi up` on Failed), so
their weights are in place when they start and they run without egress.

The RBD weights claim is ReadWriteOnce: once this pod has Succeeded its volume is detached, and the
server pod may attach it on any node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from grace_infra.config.stack_config import GraceConfig, ServedModel
from grace_infra.manifests import job_lifecycle
from grace_infra.manifests.download_job import (
    download_await_timeout,
    download_job_manifest,
)

__all__ = ["TYPE_TOKEN", "WeightsDownload", "WeightsDownloadArgs"]

TYPE_TOKEN = "grace:index:WeightsDownload"  # noqa: S105 (a Pulumi type token, not a secret)


@dataclass
class WeightsDownloadArgs:
    """Inputs of one model's weight download."""

    model: ServedModel
    """The catalog entry with the stack's overrides: repository, revision, vocabularies, claim name."""
    config: GraceConfig
    """The stack config (namespace, the vLLM image the download runs in)."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """What the download needs first: the weights claim, the token Secret, the service account."""


class WeightsDownload(pulumi.ComponentResource):
    """The Job `weights-<key>`, awaited until complete: servers and job-mode Jobs depend on it."""

    job_name: pulumi.Output[str]
    job: k8s.batch.v1.Job

    def __init__(
        self, name: str, args: WeightsDownloadArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        self.job = self._create_job(name, args)
        self.job_name = self.job.metadata.name
        self.register_outputs({"jobName": self.job_name})

    def _create_job(self, name: str, args: WeightsDownloadArgs) -> k8s.batch.v1.Job:
        manifest = download_job_manifest(args.model, args.config)
        timeout = download_await_timeout(args.model)
        return k8s.batch.v1.Job(
            f"{name}-job",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.depends_on),
                custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout),
                replace_on_changes=list(job_lifecycle.REPLACE_ON_CHANGES),
                delete_before_replace=True,
            ),
        )
