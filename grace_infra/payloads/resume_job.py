"""The extraction gate's last step: resume one suspended Job (runs INSIDE the job image, shipped as
`python -c <source>`: standard library only, no Kubernetes client).

It runs after the gate's init container (`worker wait-for-inputs`) has found every input complete.
First it waits until every Job named in GRACE_AFTER_JOBS (comma-separated: the coder's own matrix Job)
has finished (a Complete or Failed condition) or is gone: that Job's pod mounts the same weights claim,
a ReadWriteOnce volume that a pod on another node could not attach meanwhile, with its GPUs held. Then it
sends one merge patch `{"spec": {"suspend": false}}` to the Job named in GRACE_RESUME_JOB, in the pod's
own namespace, with the pod's service-account token. The gate's Role allows `get` on those Jobs and
`patch` on the resumed one, nothing else (grace_infra/manifests/extraction_gate.py). The Job controller
then creates the GPU pod and sets the Job's startTime.

Transient failures (the API server unreachable, the Job not created yet: 404, a conflict) are retried
every RETRY_S for up to RETRY_FOR_S; then it exits 1 and the Job's backoffLimit runs it again.
Exit codes: 0 resumed (or already running), 1 gave up.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

RESUME_JOB_ENV = "GRACE_RESUME_JOB"
AFTER_JOBS_ENV = "GRACE_AFTER_JOBS"
FINISHED = ("Complete", "Failed")
POLL_S = 30.0
HTTP_NOT_FOUND = 404
ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
RETRY_S = 10.0
RETRY_FOR_S = 600.0


def api_base() -> str:
    host = os.environ["KUBERNETES_SERVICE_HOST"]  # set by the kubelet in every pod
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def resume_request(base: str, namespace: str, job: str, token: str) -> urllib.request.Request:
    """The merge patch that sets spec.suspend to false on one Job."""
    return urllib.request.Request(  # noqa: S310 (https to the API server only)
        f"{base}/apis/batch/v1/namespaces/{namespace}/jobs/{job}",
        data=json.dumps({"spec": {"suspend": False}}).encode(),
        method="PATCH",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/merge-patch+json",
            "Accept": "application/json",
        },
    )


def job_request(base: str, namespace: str, job: str, token: str) -> urllib.request.Request:
    return urllib.request.Request(  # noqa: S310 (https to the API server only)
        f"{base}/apis/batch/v1/namespaces/{namespace}/jobs/{job}",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )


def call(request: urllib.request.Request, context: ssl.SSLContext) -> dict:
    """The API server's JSON reply to `request`."""
    with urllib.request.urlopen(request, context=context) as reply:  # noqa: S310 (https to the API server)
        return dict(json.loads(reply.read()))


def finished(job: dict) -> bool:
    """A Job with a true Complete or Failed condition: its pods are gone or going."""
    conditions = job.get("status", {}).get("conditions") or []
    return any(c.get("type") in FINISHED and c.get("status") == "True" for c in conditions)


def wait_until_finished(namespace: str, jobs: list[str], context: ssl.SSLContext) -> None:
    """Return once every Job in `jobs` has finished or does not exist; API errors are waited out."""
    pending = list(jobs)
    while pending:
        token = (ACCOUNT_DIR / "token").read_text().strip()
        still = []
        for name in pending:
            try:
                if not finished(call(job_request(api_base(), namespace, name, token), context)):
                    still.append(name)
            except urllib.error.HTTPError as err:
                if err.code != HTTP_NOT_FOUND:
                    still.append(name)
            except (urllib.error.URLError, OSError):
                still.append(name)
        pending = still
        if pending:
            print(
                f"grace: waiting for Job {', '.join(pending)} to finish (it mounts the same weights)",
                flush=True,
            )
            time.sleep(POLL_S)


def main() -> int:
    job = os.environ[RESUME_JOB_ENV]
    namespace = (ACCOUNT_DIR / "namespace").read_text().strip()
    context = ssl.create_default_context(cafile=str(ACCOUNT_DIR / "ca.crt"))
    wait_until_finished(namespace, [j for j in os.environ.get(AFTER_JOBS_ENV, "").split(",") if j], context)
    deadline = time.monotonic() + RETRY_FOR_S
    while True:
        token = (ACCOUNT_DIR / "token").read_text().strip()  # projected tokens rotate: read each time
        try:
            suspended = call(resume_request(api_base(), namespace, job, token), context)["spec"].get(
                "suspend"
            )
        except (urllib.error.URLError, OSError, KeyError) as err:
            problem = f"HTTP {err.code} {err.reason}" if isinstance(err, urllib.error.HTTPError) else str(err)
        else:
            print(f"grace: resumed Job {namespace}/{job} (spec.suspend is now {suspended})", flush=True)
            return 0
        if time.monotonic() >= deadline:
            print(f"grace: could not resume Job {namespace}/{job}: {problem}", file=sys.stderr, flush=True)
            return 1
        print(
            f"grace: resuming Job {namespace}/{job} failed ({problem}); retrying in {RETRY_S:g} s", flush=True
        )
        time.sleep(RETRY_S)


if __name__ == "__main__":
    sys.exit(main())
