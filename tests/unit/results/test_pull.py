"""`grace results pull`: the reader pod's spec, its deletion on error and on Ctrl-C, the skip logic and
the tar unpacking.

The pod is created, read and deleted by the REAL kubernetes client against a loopback API server that
answers with recorded Pod objects (tests/support/kube_api.py), and the client's own exec code
(`kubernetes.stream`, binary mode) talks to the loopback server's exec endpoint, which speaks the API
server's channel protocol and runs the pod's `find`/`sha256sum`/`tar` commands on a local folder standing
in for the claim. A fake exec function is used only to inject an error or Ctrl-C in the middle of a pull.
Not verified here: a live API server and kubelet (the protocol endpoint is written from the
v4.channel.k8s.io description, not recorded from a cluster).
"""

from __future__ import annotations

import copy
import hashlib
import io
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import pytest
from kubernetes import client as k8s

from grace_infra import constants as c
from grace_infra.commands.kube_client import ClusterUnreachable, connect
from grace_infra.commands.results import pull, subcommands
from grace_infra.commands.results.campaign import load_campaign
from tests.support.kube_api import CONTEXT, NOWHERE, KubeApi, not_found, pin_stack_context
from tests.unit.infra.support import assert_valid_k8s

NS = "grace-experiments"
PODS = f"/api/v1/namespaces/{NS}/pods"


def _pull_to_results(api: KubeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """`grace results pull --stack nrp --to TMP/results` against the loopback API server."""
    monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path)))
    argv = ["pull", "--stack", "nrp", "--context", CONTEXT, "--to", str(tmp_path / "results")]
    return subcommands.main(argv)


def _config():
    return load_campaign("nrp").config


def test_the_reader_pod_mounts_the_claim_read_only_and_ends_itself() -> None:
    manifest = pull.reader_pod_manifest(_config(), "grace-results-reader-test")
    assert_valid_k8s(manifest)
    spec = manifest["spec"]
    assert spec["volumes"] == [
        {"name": "output", "persistentVolumeClaim": {"claimName": c.OUTPUT_PVC, "readOnly": True}}
    ]
    (container,) = spec["containers"]
    assert container["volumeMounts"] == [{"name": "output", "mountPath": c.OUTPUT_MOUNT, "readOnly": True}]
    assert spec["activeDeadlineSeconds"] == pull.READER_DEADLINE_S
    assert spec["restartPolicy"] == "Never"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["limits"] == container["resources"]["requests"]
    assert manifest["metadata"]["labels"][c.LABEL_PROJECT] == c.PROJECT


def _pod_object(name: str, phase: str) -> dict[str, Any]:
    manifest = copy.deepcopy(pull.reader_pod_manifest(_config(), name))
    manifest["metadata"] |= {
        "uid": "uid-reader",
        "resourceVersion": "1",
        "creationTimestamp": "2026-11-30T03:00:00Z",
    }
    manifest["status"] = {"phase": phase, "qosClass": "Guaranteed", "startTime": "2026-11-30T03:00:01Z"}
    return manifest


class _Routes(dict):
    """Answers POST/GET/DELETE of whatever reader pod name `run_pull` chose."""

    def get(self, key: tuple[str, str], default: Any = None) -> Any:
        method, path = key
        if method == "POST" and path == PODS:
            return 201, _pod_object("created", "Pending")
        if path.endswith("/exec"):
            # What the API server answers a plain (non-websocket) exec request.
            return 400, {
                **not_found(path),
                "reason": "BadRequest",
                "message": "Upgrade request required",
                "code": 400,
            }
        if path.startswith(f"{PODS}/grace-results-reader-"):
            name = path.rsplit("/", 1)[-1]
            return 200, _pod_object(name, "Running")
        return default


def _failing_exec(error: BaseException):
    def factory(api: k8s.CoreV1Api, pod: str, namespace: str):
        def run(command: Sequence[str]) -> IO[bytes]:
            raise error

        return run

    return factory


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> k8s.CoreV1Api:
    with KubeApi(_Routes()) as api:
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path)))
        core = k8s.CoreV1Api(connect(CONTEXT, None).api)
        core.recorded = api  # type: ignore[attr-defined]
        yield core


def _deleted(core: k8s.CoreV1Api) -> list[str]:
    return [path for method, path, _ in core.recorded.requests if method == "DELETE"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("error", [ClusterUnreachable("exec failed"), KeyboardInterrupt()])
def test_the_pod_is_deleted_after_an_error_or_ctrl_c(
    cluster: k8s.CoreV1Api, tmp_path: Path, error: BaseException
) -> None:
    with pytest.raises(type(error)):
        pull.run_pull(
            cluster, _config(), tmp_path / "results", exec_factory=_failing_exec(error), log=lambda _: None
        )
    created = [path for method, path, _ in cluster.recorded.requests if method == "POST"]  # type: ignore[attr-defined]
    assert created == [PODS]
    (deleted,) = _deleted(cluster)
    assert deleted.startswith(f"{PODS}/grace-results-reader-")


def _claim(root: Path) -> Path:
    files = {
        "exp1/gemma-2-2b/study1_responses.csv": "participant_id,model_response\r\n1,three\r\n",
        "exp1/gemma-2-2b/study1_responses.csv.meta.json": '{"exit_code": 0}\n',
        "exp1/gemma-2-2b/study1_responses.csv.partial.jsonl": '{"header": 1}\n{"row": 0}\n',
        "exp2/gemma-2-2b/study1_probabilities.csv.tmp": "half written",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def _run_on(claim: Path):
    """The exec endpoint's command runner: the pod's command on `claim` standing in for /output."""

    def run(argv: list[str]) -> tuple[bytes, bytes, int]:
        local = [part.replace(c.OUTPUT_MOUNT, str(claim)) for part in argv]
        result = subprocess.run(local, capture_output=True, check=False)
        return result.stdout, result.stderr, result.returncode

    return run


def test_pull_copies_everything_then_only_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    claim = _claim(tmp_path / "claim")
    results = tmp_path / "results"
    with KubeApi(_Routes(), exec_command=_run_on(claim)) as api:
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path)))
        core = k8s.CoreV1Api(connect(CONTEXT, None).api)
        first = pull.run_pull(core, _config(), results, log=lambda _: None)
        assert sorted(first.copied) == [
            "exp1/gemma-2-2b/study1_responses.csv",
            "exp1/gemma-2-2b/study1_responses.csv.meta.json",
            "exp1/gemma-2-2b/study1_responses.csv.partial.jsonl",
        ]  # the worker's half-written .tmp file is never copied
        for name in first.copied:
            assert (results / name).read_bytes() == (claim / name).read_bytes()
        checkpoint = claim / "exp1/gemma-2-2b/study1_responses.csv.partial.jsonl"
        checkpoint.write_text('{"header": 1}\n{"row": 0}\n{"row": 1}\n')
        second = pull.run_pull(core, _config(), results, log=lambda _: None)
    assert second.copied == ["exp1/gemma-2-2b/study1_responses.csv.partial.jsonl"]
    assert second.skipped == 2
    assert (results / second.copied[0]).read_bytes() == checkpoint.read_bytes()
    assert len([path for method, path, _ in api.requests if method == "DELETE"]) == 2


def test_files_to_fetch_compares_size_and_sha256(tmp_path: Path) -> None:
    (tmp_path / "same.csv").write_bytes(b"abc")
    (tmp_path / "other.csv").write_bytes(b"abd")  # same size, different content
    remote = [
        pull.RemoteFile("same.csv", 3, hashlib.sha256(b"abc").hexdigest()),
        pull.RemoteFile("other.csv", 3, hashlib.sha256(b"abc").hexdigest()),
        pull.RemoteFile("new.csv", 3, hashlib.sha256(b"abc").hexdigest()),
    ]
    assert [f.path for f in pull.files_to_fetch(remote, tmp_path)] == ["other.csv", "new.csv"]


def test_parse_listing_reads_the_listing_commands_output(tmp_path: Path) -> None:
    claim = _claim(tmp_path / "claim")
    command = [part.replace(c.OUTPUT_MOUNT, str(claim)) for part in pull.listing_command()]
    listed = pull.parse_listing(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    by_path = {f.path: f for f in listed}
    csv = claim / "exp1/gemma-2-2b/study1_responses.csv"
    assert by_path["exp1/gemma-2-2b/study1_responses.csv"] == pull.RemoteFile(
        "exp1/gemma-2-2b/study1_responses.csv",
        csv.stat().st_size,
        hashlib.sha256(csv.read_bytes()).hexdigest(),
    )
    assert not any(path.endswith(".tmp") for path in by_path)


def test_unpack_refuses_a_path_outside_the_destination(tmp_path: Path) -> None:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo("../escape.csv")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    archive.seek(0)
    with pytest.raises(ClusterUnreachable, match="unsafe path"):
        pull.unpack_tar(archive, tmp_path / "results", {"../escape.csv"})
    assert not (tmp_path / "escape.csv").exists()


def test_the_command_deletes_the_pod_when_the_real_exec_stream_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The loopback API server cannot upgrade to a websocket: the client's real exec call fails as it
    # would against an API server that refuses exec.
    with KubeApi(_Routes()) as api:
        code = _pull_to_results(api, tmp_path, monkeypatch)
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the exec stream to the pod failed: Handshake status 400")
    assert len(err.strip().splitlines()) == 1
    deleted = [path for method, path, _ in api.requests if method == "DELETE"]
    assert len(deleted) == 1
    assert not (tmp_path / "results").exists()


def test_a_pod_the_quota_refuses_is_one_line_naming_the_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    exceeded = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Forbidden",
        "message": 'pods "grace-results-reader-1" is forbidden: exceeded quota: grace-quota, requested: '
        "pods=1, used: pods=40, limited: pods=40",
        "details": {"name": "grace-results-reader-1", "kind": "pods"}, "code": 403,
    }  # fmt: skip
    with KubeApi({("POST", PODS): (403, exceeded)}) as api:
        code = _pull_to_results(api, tmp_path, monkeypatch)
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the API server refused a call: 403 Forbidden: pods ")
    assert "exceeded quota: grace-quota" in err
    assert len(err.strip().splitlines()) == 1


def test_ctrl_c_in_the_command_is_exit_130_and_the_pod_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_run_pull = pull.run_pull

    def interrupted(*args: Any, **kwargs: Any) -> pull.PullResult:
        return real_run_pull(*args, **kwargs, exec_factory=_failing_exec(KeyboardInterrupt()))

    monkeypatch.setattr(pull, "run_pull", interrupted)
    with KubeApi(_Routes()) as api:
        code = _pull_to_results(api, tmp_path, monkeypatch)
    assert code == pull.EXIT_INTERRUPTED
    assert "the same command resumes" in capsys.readouterr().err
    assert len([path for method, path, _ in api.requests if method == "DELETE"]) == 1


def test_batches_bound_the_bytes_of_one_tar_stream() -> None:
    files = [pull.RemoteFile(name, size, "") for name, size in (("a", 40), ("b", 40), ("c", 150), ("d", 10))]
    assert [[f.path for f in group] for group in pull.batches(files, 100)] == [["a", "b"], ["c"], ["d"]]
    assert pull.batches([], 100) == []


def test_the_real_client_exec_stream_copies_the_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole command through the client's own exec code (websocket, channels, return code)."""
    claim = _claim(tmp_path / "claim")
    big = claim / "exp2/gemma-2-2b/study1_probabilities.csv.partial.jsonl"
    big.write_bytes(bytes(range(256)) * 1024)  # binary, 256 KiB: several websocket frames
    results = tmp_path / "results"
    with KubeApi(_Routes(), exec_command=_run_on(claim)) as api:
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path)))
        argv = ["pull", "--stack", "nrp", "--context", CONTEXT, "--to", str(results)]
        assert subcommands.main(argv) == 0
        assert f"copied 4 files to {results} (0 already identical) from context {CONTEXT} ({api.url})\n" in (
            capsys.readouterr().out
        )
        assert subcommands.main(argv) == 0
        assert "copied 0 files to" in capsys.readouterr().out
    for name in (
        "exp1/gemma-2-2b/study1_responses.csv",
        "exp2/gemma-2-2b/study1_probabilities.csv.partial.jsonl",
    ):
        assert (results / name).read_bytes() == (claim / name).read_bytes()
    execs = [query["command"] for method, _, query in api.requests if method == "EXEC"]
    assert execs[0][:2] == ["sh", "-c"]  # the listing
    assert execs[1][:5] == ["tar", "cf", "-", "-C", c.OUTPUT_MOUNT]
    assert len(execs) == 3  # the second pull lists and finds nothing to copy
    assert len([path for method, path, _ in api.requests if method == "DELETE"]) == 2


def test_the_stacks_context_wins_over_the_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The current context is another cluster (nothing answers there); the stack pins the recorded one."""
    pin_stack_context(monkeypatch, tmp_path / "project", CONTEXT)
    results = tmp_path / "results"
    with KubeApi(_Routes(), exec_command=_run_on(_claim(tmp_path / "claim"))) as api:
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path, current=NOWHERE)))
        assert subcommands.main(["pull", "--stack", "nrp", "--to", str(results)]) == 0
    assert f"from context {CONTEXT} ({api.url})\n" in capsys.readouterr().out


def test_a_failing_command_in_the_pod_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_tar(argv: list[str]) -> tuple[bytes, bytes, int]:
        return b"", b"sh: 1: cd: can't cd to /output\n", 2

    with KubeApi(_Routes(), exec_command=no_tar) as api:
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path)))
        argv = ["pull", "--stack", "nrp", "--context", CONTEXT, "--to", str(tmp_path / "r")]
        assert subcommands.main(argv) == 2
    err = capsys.readouterr().err
    assert err == "error: `sh` in the reader pod exited 2: sh: 1: cd: can't cd to /output\n"
    assert len([path for method, path, _ in api.requests if method == "DELETE"]) == 1
