"""What a Job and a model server do across repeated `pulumi up`s: how Pulumi awaits them, how a failed
pod is judged, how long a Job may run. Pure builders of manifest fragments; docs/lifecycle.md has the
table of what each kind of change does.

Await (pulumi-kubernetes, read at provider/pkg):
    await/await.go, Creation() and Update():
        ready, custom, err := metadata.ReadyCondition(...)
        // Use our built-in await logic only if the user hasn't specified any await overrides.
        if spec, ok := a[id]; ok && spec.await != nil && !custom { ... }
    metadata/overrides.go, ReadyCondition(): a `pulumi.com/waitFor` value "jsonpath=..." returns
        (condition.NewJSONPath(...), custom=true, nil); a path without "=value" matches once it exists.
    metadata/overrides.go, DeletedCondition():
        if IsAnnotationTrue(inputs, AnnotationSkipAwait) && allowsSkipAwaitWithDelete(inputs) {
            return condition.NewImmediate(logger, obj), nil
        }
        and allowsSkipAwaitWithDelete() lists batch/v1 Job and apps/v1 StatefulSet.
So `pulumi.com/waitFor: jsonpath={.metadata.uid}` makes create and update return as soon as the API
server has the object (never waiting for a Job to complete or a server to load), while Deletion() keeps
waiting until the object is gone; a replacement under the same fixed name therefore creates the new
Job only after the old one (and, with Foreground propagation, its pods) has been deleted.
`pulumi.com/skipAwait` is never set: it would make that create race the deletion (AlreadyExists).

Cost of the choice, also from the source: await.go Read() skips the Job and StatefulSet read-awaiters
only for skipAwait, so `pulumi refresh` reports a Job that is still running or has failed (or a server
not yet Ready) as unhealthy; a succeeded Job and a Ready server refresh cleanly.
"""

from __future__ import annotations

from typing import Any

from grace_infra import constants as c
from worker import contract

__all__ = [
    "REPLACE_ON_CHANGES",
    "await_annotations",
    "download_pod_failure_policy",
    "gate_pod_failure_policy",
    "pod_failure_policy",
    "replace_unready_annotations",
]

# Job fields the API server refuses to change but the provider does not list as replacement triggers
# (provider/pkg/provider/diff.go, `var job`: .spec.completions, .spec.parallelism, .spec.selector,
# .spec.template). Kubernetes validates spec.podFailurePolicy as immutable, so without this a changed
# policy would reach the API server as an update and fail `pulumi up`. Given to every Job as the
# `replace_on_changes` resource option (property paths as Pulumi names them), together with
# `delete_before_replace=True`: the engine's applyReplaceOnChanges (pkg/resource/deploy/step_generator.go)
# turns the change into a replacement but keeps the provider's DeleteBeforeReplace, which the provider
# sets only for its own replacement triggers; a create-before-delete under the Job's fixed name would
# fail with AlreadyExists.
REPLACE_ON_CHANGES = ("spec.podFailurePolicy",)


def await_annotations(*, await_readiness: bool = False) -> dict[str, str]:
    """Annotations for an object `pulumi up` must not wait on beyond its creation (see module doc).

    `await_readiness=True` (a StatefulSet whose model sets awaitReadiness) returns none: the
    provider's built-in awaiter then waits for the rollout, within the resource's customTimeouts.
    """
    return {} if await_readiness else {c.AWAIT_OVERRIDE_ANNOTATION: c.AWAIT_CREATED_ONLY}


def replace_unready_annotations() -> dict[str, str]:
    """`pulumi.com/replaceUnready: "true"` for the weight-download Job: a download that Failed (no
    access, a deadline, backoffLimit spent) is terminal, and a plain `pulumi up` would plan no change
    and fail at once on the Failed condition. With the annotation the provider's Diff reads the live Job
    and, when it is not Ready (`checkjob.NewJobChecker().Ready`: not Complete), plans a replacement
    (provider/pkg/provider/provider.go: `if metadata.ReplaceUnready(newInputs) { ... case
    newInputs.GetKind() == "Job": ... if !jobChecker.Ready(job) { ... replaces = append(...)`), deleted
    first under its fixed name. A complete download stays: the next `pulumi up` plans nothing.

    Only the download Jobs carry it: an experiment Job that is still running is not Ready either, and
    would be killed and restarted by every `pulumi up`."""
    return {c.REPLACE_UNREADY_ANNOTATION: "true"}


def pod_failure_policy() -> dict[str, Any]:
    """How the Job controller judges a failed pod (needs `restartPolicy: Never` on the pod).

    - worker exit 2 (bad input, unknown model, output locked by another worker), exit 3 (output
      complete, some rows failed), exit 4 (the output claim is full or read-only) and exit 6 (job mode:
      the vLLM sidecar spent its start budget, payloads/server_start.py): FailJob at once, because
      another pod would meet exactly the same;
    - the pod was disrupted (preemption, eviction, node drain: condition DisruptionTarget): Ignore, so a
      busy cluster taking the GPUs back does not use up backoffLimit;
    - anything else counts toward backoffLimit and the next pod resumes from the checkpoint: exit 5
      (no server within --wait-timeout), 143/130 (stopped by a signal outside a disruption), an OOM
      kill, exit 1 from a bug, a lost node.
    https://kubernetes.io/docs/concepts/workloads/controllers/job/#pod-failure-policy
    """
    # Only the worker's codes mean this: the vLLM sidecar uses its own, and the outputs check never fails
    # (when in doubt, the Job runs). A sidecar's own exit never reaches the Job controller: the kubelet
    # restarts a restartable init container whatever it exits with, so its failure is reported through
    # the worker (exit 6).
    return _fail_at_once_on(
        c.WORKER_CONTAINER_NAME,
        [
            contract.EXIT_INPUT,
            contract.EXIT_ROWS_FAILED,
            contract.EXIT_STORAGE,
            contract.EXIT_SERVER_START_FAILED,
        ],
    )


def gate_pod_failure_policy() -> dict[str, Any]:
    """The extraction gate (extraction_gate.py): its wait exits 2 when the task list is unreadable or the
    whole campaign passed without the inputs; another pod would wait in vain too, so FailJob. A failed
    resume (the API server away for ten minutes) is retried."""
    return _fail_at_once_on(contract.WAIT_FOR_INPUTS_COMMAND, [contract.EXIT_INPUT])


def download_pod_failure_policy() -> dict[str, Any]:
    """The weight download Job (weights_job.py): exit 3 (weights_download.py: the token cannot read the
    gated repository) fails the Job at once, since a retry would meet the same; a disruption does not
    count toward backoffLimit; anything else (a network error) is retried."""
    return _fail_at_once_on(c.WEIGHTS_DOWNLOAD_CONTAINER_NAME, [c.WEIGHTS_DOWNLOAD_EXIT_NO_ACCESS])


def _fail_at_once_on(container: str, exit_codes: list[int]) -> dict[str, Any]:
    """A podFailurePolicy: FailJob when `container` exits with one of `exit_codes`; a disruption
    (DisruptionTarget) is ignored; anything else counts toward backoffLimit.

    The API server refuses an onExitCodes rule naming a container the pod template does not have, so
    each Job's policy names only its own container.
    """
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": container, "operator": "In", "values": exit_codes},
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }
