"""The extraction gate's last step: resume one suspended Job (runs INSIDE the job image, shipped as
`python -c <source>`: standard library only, no Kubernetes client).

It runs after the gate's init container (`worker wait-for-inputs`) has found every input complete, and
sends one merge patch `{"spec": {"suspend": false}}` to the Job named in GRACE_RESUME_JOB, in the pod's
own namespace, with the pod's service-account token. The gate's Role allows `get` and `patch` on that
one Job and nothing else (grace_infra/manifests/extraction_gate.py). The Job controller then creates the
GPU pod and sets the Job's startTime (so its deadline counts from here).

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


def main() -> int:
    job = os.environ[RESUME_JOB_ENV]
    namespace = (ACCOUNT_DIR / "namespace").read_text().strip()
    context = ssl.create_default_context(cafile=str(ACCOUNT_DIR / "ca.crt"))
    deadline = time.monotonic() + RETRY_FOR_S
    while True:
        token = (ACCOUNT_DIR / "token").read_text().strip()  # projected tokens rotate: read each time
        try:
            with urllib.request.urlopen(resume_request(api_base(), namespace, job, token), context=context) as r:
                suspended = json.loads(r.read()).get("spec", {}).get("suspend")
            print(f"grace: resumed Job {namespace}/{job} (spec.suspend is now {suspended})", flush=True)
            return 0
        except (urllib.error.URLError, OSError) as err:
            problem = f"HTTP {err.code} {err.reason}" if isinstance(err, urllib.error.HTTPError) else str(err)
        if time.monotonic() >= deadline:
            print(f"grace: could not resume Job {namespace}/{job}: {problem}", file=sys.stderr, flush=True)
            return 1
        print(f"grace: resuming Job {namespace}/{job} failed ({problem}); retrying in {RETRY_S:g} s", flush=True)
        time.sleep(RETRY_S)


if __name__ == "__main__":
    sys.exit(main())
