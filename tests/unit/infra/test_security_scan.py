"""The security scan: checkov over the nrp render finds nothing that is not waived with a reason.

The scan itself (marker `checkov`) runs the pinned checkov from .venv-checkov (scripts/setup-checkov.sh)
over the manifests `grace render --stack nrp` writes. Locally it is skipped when that environment is
missing; under CI it fails instead. The waiver logic is also tested without checkov.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from grace_infra.commands.render import Rendered, render, write_render
from grace_infra.manifests import security
from tests.support.ci import unavailable

REPO_ROOT = Path(__file__).resolve().parents[3]
CHECKOV_VENV = Path(os.environ.get("GRACE_CHECKOV_VENV") or REPO_ROOT / ".venv-checkov")
CHECKOV_READY = CHECKOV_VENV / ".grace-checkov-ready"  # written by setup-checkov.sh after a good install
# Offline: no policy download from the vendor's platform, no PyPI update check (nothing leaves 127.0.0.1).
CHECKOV_ENV = {"BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"}
NO_REASON = "No comment provided"  # what checkov records for a skip annotation without `=reason`


def checkov_scan(manifests: Path) -> dict[str, Any]:
    """checkov's JSON report for a directory of manifests (kubernetes framework only)."""
    proc = subprocess.run(
        [
            str(CHECKOV_VENV / "bin" / "checkov"), "-d", str(manifests), "--framework", "kubernetes",
            "--skip-download", "--output", "json",
        ],
        env={**os.environ, **CHECKOV_ENV}, capture_output=True, text=True, timeout=300, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    # checkov exits 1 when a check fails; the report says which, so the exit code is not asserted here.
    assert proc.stdout.strip(), f"checkov printed no report (exit {proc.returncode}): {proc.stderr[-2000:]}"
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


@pytest.fixture(scope="module")
def nrp_scan(nrp_rendered: Rendered, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not CHECKOV_READY.exists():
        unavailable(f"{CHECKOV_VENV} is missing or incomplete: run `bash scripts/setup-checkov.sh`")
    out = tmp_path_factory.mktemp("render") / "nrp"
    write_render(nrp_rendered, out)
    report = checkov_scan(out / "manifests")
    report["manifests"] = sorted(path.name for path in (out / "manifests").glob("*.yaml"))
    return report


@pytest.fixture(scope="module")
def other_scan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One scan over the generic-pool stack and the nrp stack with a persistent model server (the
    StatefulSet form the nrp stack does not use by default)."""
    if not CHECKOV_READY.exists():
        unavailable(f"{CHECKOV_VENV} is missing or incomplete: run `bash scripts/setup-checkov.sh`")
    root = tmp_path_factory.mktemp("renders")
    persistent = root / "persistent.yaml"
    persistent.write_text(yaml.safe_dump({"models": [{"key": "gemma-2-2b", "servingMode": "persistent"}]}))
    write_render(render("nrp-generic"), root / "nrp-generic")
    write_render(render("nrp", [persistent]), root / "nrp-persistent")
    report = checkov_scan(root)
    report["manifests"] = sorted(p.name for p in root.glob("*/manifests/*.yaml"))
    return report


def _unexplained(report: dict[str, Any]) -> list[str]:
    declared = {waiver.check_id: waiver.reason for waiver in security.WAIVERS}
    results = report["results"]
    failed = [f"{f['check_id']} {f['resource']}: {f['check_name']}" for f in results["failed_checks"]]
    undeclared = [
        f"{s['check_id']} {s['resource']}: skipped without its declared reason"
        for s in results["skipped_checks"]
        if declared.get(s["check_id"]) != s["check_result"].get("suppress_comment")
    ]
    return failed + undeclared


@pytest.mark.checkov
def test_generic_pool_and_persistent_renders_have_no_unexplained_failure(other_scan: dict[str, Any]) -> None:
    assert _unexplained(other_scan) == []
    assert other_scan["summary"]["parsing_errors"] == 0
    assert "StatefulSet_vllm-gemma-2-2b.yaml" in other_scan["manifests"]
    scanned = {s["resource"] for s in other_scan["results"]["passed_checks"]}
    assert any(resource.startswith("StatefulSet.") for resource in scanned)


@pytest.mark.checkov
def test_nrp_render_has_no_unexplained_failure(nrp_scan: dict[str, Any]) -> None:
    summary = nrp_scan["summary"]
    failed = [
        f"{f['check_id']} {f['resource']}: {f['check_name']}" for f in nrp_scan["results"]["failed_checks"]
    ]
    assert failed == [], "\n".join(failed)
    assert summary["parsing_errors"] == 0
    results = nrp_scan["results"]
    checked = {Path(r["file_path"]).name for r in [*results["passed_checks"], *results["skipped_checks"]]}
    # Every pod-running object was scanned (checkov has no checks for e.g. NetworkPolicy or PVC kinds).
    workloads = {name for name in nrp_scan["manifests"] if name.startswith(("Job_", "StatefulSet_"))}
    assert len(workloads) >= 12  # nrp: per model its weight download Job and its matrix Job
    assert workloads <= checked <= set(nrp_scan["manifests"])
    assert summary["passed"] > 0


@pytest.mark.checkov
def test_every_skip_is_a_declared_waiver_with_its_reason(nrp_scan: dict[str, Any]) -> None:
    declared = {waiver.check_id: waiver.reason for waiver in security.WAIVERS}
    skipped = nrp_scan["results"]["skipped_checks"]
    assert skipped, "the nrp render pins images by tag, so the digest waiver must appear"
    for check in skipped:
        reason = check["check_result"].get("suppress_comment", "")
        assert reason.strip(), check["resource"]
        assert reason != NO_REASON, check["resource"]
        assert declared.get(check["check_id"]) == reason, (check["check_id"], check["resource"])


def _pod(image: str, run_as_user: int | None = None, secret_env: bool = False) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "x", "image": image, "securityContext": {}}
    if run_as_user is not None:
        container["securityContext"]["runAsUser"] = run_as_user
    if secret_env:
        container["env"] = [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
    return {"containers": [container]}


def test_waivers_apply_only_where_their_condition_holds() -> None:
    digest = "vllm/vllm-openai@sha256:" + "0" * 64
    assert security.checkov_skip_annotations(_pod(digest, 10001)) == {}
    tagged = security.checkov_skip_annotations(_pod("vllm/vllm-openai:v0.32.0", 2000, secret_env=True))
    assert [value.split("=", 1)[0] for value in tagged.values()] == ["CKV_K8S_43", "CKV_K8S_40", "CKV_K8S_35"]
    assert list(tagged) == ["checkov.io/skip1", "checkov.io/skip2", "checkov.io/skip3"]


def test_a_reason_with_an_equals_sign_is_refused() -> None:
    # checkov splits the annotation value at every "=" and would crash on a second one.
    with pytest.raises(ValueError, match="free of '='"):
        security.Waiver("CKV_K8S_1", "a=b", lambda containers: True)
