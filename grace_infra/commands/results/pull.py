"""`grace results pull`: copy the output claim to a local folder, the way `kubectl cp` does.

1. Create a short-lived reader pod in the namespace that mounts the output claim READ-ONLY (it can never
   change a result) and only sleeps; `activeDeadlineSeconds` ends it even if this process dies.
2. Exec `find ... sha256sum` in it (the API's exec stream): every file's size and SHA-256.
3. Skip every local file with the same size and SHA-256 (so a second pull copies only what changed and
   an interrupted pull resumes), then exec `tar cf - <the rest>` (in batches of TAR_BATCH_BYTES) and
   unpack each stream locally; each file is written beside its target and renamed into place, so a local
   file is never half written.
4. Delete the pod, always: after success, an error, or Ctrl-C (try/finally).

Files a running Job is still writing (a checkpoint) may change between the listing and the copy; they
are copied as they were and reported, and the next pull fetches them again.
"""

from __future__ import annotations

import hashlib
import io
import shlex
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream
from urllib3.exceptions import HTTPError

from grace_infra import constants as c
from grace_infra.commands.kube_client import ClusterUnreachable, cluster_errors, connect
from grace_infra.commands.results.campaign import load_campaign
from grace_infra.config.stack_config import GraceConfig
from grace_infra.manifests import naming, security

__all__ = [
    "READER_CONTAINER",
    "RemoteFile",
    "batches",
    "files_to_fetch",
    "listing_command",
    "parse_listing",
    "pull",
    "reader_pod_manifest",
    "run_pull",
    "unpack_tar",
]

READER_CONTAINER = "reader"
READER_COMPONENT = "results-reader"
READER_DEADLINE_S = 3600  # the pod ends itself after an hour even if `pull` was killed before cleanup
READER_START_TIMEOUT_S = 300  # image pull and scheduling; the job image is usually cached on the node
READER_CPU = "100m"  # find, sha256sum and tar: one core's tenth is plenty; limit = request (NRP's 1.2x)
READER_MEMORY = "256Mi"
POLL_INTERVAL_S = 2.0
EXIT_INTERRUPTED = 130
HTTP_NOT_FOUND = 404  # deleting a pod that is already gone
IGNORED_SUFFIXES = (".tmp",)
# One `tar` exec per this many listed bytes: the client keeps a second copy of everything an exec stream
# sends until it ends (kubernetes.stream's capture buffer), so a batch bounds the memory a pull needs,
# and an interrupted pull loses at most one batch.
TAR_BATCH_BYTES = 64 * 1024 * 1024  # the worker's half-written files (renamed into place when complete)

# An exec runs one command in the reader pod and returns its stdout; it raises on a non-zero exit.
Exec = Callable[[Sequence[str]], IO[bytes]]


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the claim's root, POSIX, without "./"
    size: int
    sha256: str


def reader_pod_manifest(config: GraceConfig, name: str) -> dict[str, Any]:
    """The reader pod: the job image (it has find, sha256sum and tar), the claim read-only, no network."""
    labels = naming.recommended_labels(name=READER_COMPONENT, instance=name, component=READER_COMPONENT)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": config.namespace.name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": READER_DEADLINE_S,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            **security.job_image_pull_secrets(config),
            "containers": [
                {
                    "name": READER_CONTAINER,
                    "image": config.images.job,
                    "imagePullPolicy": c.IMAGE_PULL_POLICY,
                    # The image's entry point is the worker; this pod only waits for exec calls.
                    "command": ["sleep", str(READER_DEADLINE_S)],
                    "resources": {
                        "requests": {"cpu": READER_CPU, "memory": READER_MEMORY},
                        "limits": {"cpu": READER_CPU, "memory": READER_MEMORY},
                    },
                    "volumeMounts": [{"name": "output", "mountPath": c.OUTPUT_MOUNT, "readOnly": True}],
                    "securityContext": security.job_image_security_context(),
                }
            ],
            "volumes": [
                {"name": "output", "persistentVolumeClaim": {"claimName": c.OUTPUT_PVC, "readOnly": True}}
            ],
        },
    }


def listing_command() -> list[str]:
    """`<size> <sha256>  ./<path>` for every file under the claim, half-written ones left out."""
    skip = " ".join(f"! -name '*{suffix}'" for suffix in IGNORED_SUFFIXES)
    script = (
        f"cd {shlex.quote(c.OUTPUT_MOUNT)} && find . -type f {skip} -exec sh -c "
        '\'for f; do printf "%s " "$(stat -c %s "$f")"; sha256sum "$f"; done\' sh {} +'
    )
    return ["sh", "-c", script]


def parse_listing(text: str) -> list[RemoteFile]:
    files = []
    for line in text.splitlines():
        if not line.strip():
            continue
        size, digest, path = line.split(maxsplit=2)
        files.append(RemoteFile(path=path.strip().removeprefix("./"), size=int(size), sha256=digest))
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_to_fetch(remote: Sequence[RemoteFile], destination: Path) -> list[RemoteFile]:
    """The remote files whose local copy is missing or differs (size first: it costs no hashing)."""
    wanted = []
    for item in remote:
        local = destination / item.path
        if local.is_file() and local.stat().st_size == item.size and _sha256(local) == item.sha256:
            continue
        wanted.append(item)
    return wanted


def batches(files: Sequence[RemoteFile], max_bytes: int) -> list[list[RemoteFile]]:
    """The files in listing order, cut into groups of at most `max_bytes` (a bigger file goes alone)."""
    groups: list[list[RemoteFile]] = []
    size = 0
    for item in files:
        if not groups or (groups[-1] and size + item.size > max_bytes):
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += item.size
    return groups


def _safe_target(destination: Path, name: str) -> Path:
    relative = PurePosixPath(name.removeprefix("./"))
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ClusterUnreachable(f"the tar stream holds an unsafe path {name!r}; nothing more is written.")
    return destination.joinpath(*relative.parts)


def unpack_tar(archive: IO[bytes], destination: Path, wanted: set[str]) -> list[str]:
    """Write every regular file of the tar stream that is in `wanted`; their paths, in stream order.

    Each file goes to a temporary name beside its target and is renamed into place: an interrupted pull
    leaves only whole files (and a temporary one the next pull overwrites).
    """
    written = []
    with tarfile.open(fileobj=archive, mode="r|") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if not member.isfile() or name not in wanted:
                continue
            target = _safe_target(destination, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            temporary = target.with_name(f".{target.name}.pull")
            with temporary.open("wb") as handle:
                while block := source.read(1 << 20):
                    handle.write(block)
            temporary.replace(target)
            written.append(name)
    return written


def _exec_in(api: k8s.CoreV1Api, pod: str, namespace: str) -> Exec:
    """Run a command in the reader pod through the API's exec stream; stdout spooled to a temp file."""

    def run(command: Sequence[str]) -> IO[bytes]:
        session = stream(
            api.connect_get_namespaced_pod_exec, pod, namespace, container=READER_CONTAINER,
            command=list(command), stdin=False, stdout=True, stderr=True, tty=False,
            binary=True, _preload_content=False,
        )  # fmt: skip
        out = tempfile.TemporaryFile()  # noqa: SIM115 (returned open: the caller reads and closes it)
        errors = io.BytesIO()
        try:
            while session.is_open():
                session.update(timeout=1)
                if session.peek_stdout():
                    out.write(session.read_stdout())
                if session.peek_stderr():
                    errors.write(session.read_stderr())
            code = session.returncode
        finally:
            session.close()
            # After the server's close frame, close() returns without closing the socket: release it.
            if session.sock is not None:
                session.sock.shutdown()
        if code:
            out.close()
            message = errors.getvalue().decode("utf-8", "replace").strip().splitlines()
            raise ClusterUnreachable(
                f"`{command[0]}` in the reader pod exited {code}: {message[-1] if message else 'no message'}"
            )
        out.seek(0)
        return out

    return run


def _wait_running(api: k8s.CoreV1Api, name: str, namespace: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        pod = api.read_namespaced_pod(name, namespace)
        phase = pod.status.phase if pod.status else None
        if phase == "Running":
            return
        if phase in {"Failed", "Succeeded"}:
            raise ClusterUnreachable(f"the reader pod {name} ended ({phase}) before it could be used.")
        if time.monotonic() > deadline:
            conditions = (pod.status.conditions if pod.status else None) or []
            why = next(
                (f"{cond.reason}: {cond.message}" for cond in conditions if cond.message),
                phase or "no status",
            )
            raise ClusterUnreachable(f"the reader pod {name} did not start within {timeout_s:.0f} s ({why}).")
        time.sleep(POLL_INTERVAL_S)


@dataclass(frozen=True)
class PullResult:
    listed: int
    skipped: int
    copied: list[str]
    changed: list[str]  # copied, but different from the listing: still being written by a running Job


def run_pull(
    api: k8s.CoreV1Api,
    config: GraceConfig,
    destination: Path,
    *,
    exec_factory: Callable[[k8s.CoreV1Api, str, str], Exec] = _exec_in,
    start_timeout_s: float = READER_START_TIMEOUT_S,
    log: Callable[[str], None] = print,
) -> PullResult:
    """Create the reader pod, copy what differs, delete the pod whatever happens."""
    namespace = config.namespace.name
    name = f"grace-results-reader-{uuid.uuid4().hex[:8]}"
    # The client serialises a plain dict body as-is (ApiClient.sanitize_for_serialization); its stubs
    # accept only the V1Pod model.
    api.create_namespaced_pod(namespace, reader_pod_manifest(config, name))  # type: ignore[arg-type]
    log(f"reader pod {namespace}/{name} created; waiting for it to run")
    try:
        _wait_running(api, name, namespace, start_timeout_s)
        run = exec_factory(api, name, namespace)
        with run(listing_command()) as listing:
            remote = parse_listing(listing.read().decode("utf-8"))
        fetch = files_to_fetch(remote, destination)
        log(f"{len(remote)} files on the claim, {len(remote) - len(fetch)} already identical here")
        copied: list[str] = []
        for batch in batches(fetch, TAR_BATCH_BYTES):
            destination.mkdir(parents=True, exist_ok=True)
            tar = ["tar", "cf", "-", "-C", c.OUTPUT_MOUNT, "--", *(f"./{f.path}" for f in batch)]
            with run(tar) as archive:
                copied += unpack_tar(archive, destination, {f.path for f in batch})
        expected = {f.path: f for f in fetch}
        changed = [p for p in copied if _sha256(destination / p) != expected[p].sha256]
        skipped = len(remote) - len(fetch)
        return PullResult(listed=len(remote), skipped=skipped, copied=copied, changed=changed)
    finally:
        _delete_reader(api, name, namespace, log)


def _delete_reader(api: k8s.CoreV1Api, name: str, namespace: str, log: Callable[[str], None]) -> None:
    """Delete the reader pod; if that fails too, say how it ends anyway (never mask the first error)."""
    try:
        api.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        log(f"reader pod {name} deleted")
    except (ApiException, HTTPError) as err:
        if isinstance(err, ApiException) and err.status == HTTP_NOT_FOUND:
            return
        print(
            f"warning: could not delete the reader pod {namespace}/{name} ({err}); it ends itself after "
            f"{READER_DEADLINE_S} s, or run: kubectl delete pod -n {namespace} {name}",
            file=sys.stderr,
        )


def pull(*, stack: str, context: str | None, kubeconfig: Path | None, destination: Path) -> int:
    """The `grace results pull` command; its exit code."""
    campaign = load_campaign(stack)
    cluster = connect(context, kubeconfig, stack=stack)
    api = k8s.CoreV1Api(cluster.api)
    try:
        with cluster_errors():
            result = run_pull(api, campaign.config, destination)
    except KeyboardInterrupt:
        print("interrupted; every file copied so far is whole; the same command resumes.", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(
        f"copied {len(result.copied)} files to {destination} ({result.skipped} already identical) from "
        f"context {cluster.context} ({cluster.host})"
    )
    for path in result.changed:
        print(f"note: {path} changed while it was copied (a Job is still writing it); pull again later")
    return 0
