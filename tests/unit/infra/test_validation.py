"""The validator the rendered-resource tests rely on really rejects broken objects."""

from __future__ import annotations

import kubernetes_validate
import pytest

from grace_infra.manifests.job_lifecycle import pod_failure_policy

from .support import assert_valid_k8s, is_builtin


def _claim(**spec_overrides: object) -> dict:
    spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}
    spec.update(spec_overrides)
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"}, "spec": spec}


def test_a_valid_object_passes() -> None:
    assert_valid_k8s(_claim(storageClassName="rook-cephfs"))


def test_an_unknown_field_fails_in_strict_mode() -> None:
    with pytest.raises(AssertionError, match=r"PersistentVolumeClaim/c is invalid at spec: .*'storageClass'"):
        assert_valid_k8s(_claim(storageClass="rook-cephfs"))


def test_a_wrong_type_fails() -> None:
    with pytest.raises(AssertionError, match=r"invalid at spec\.accessModes"):
        assert_valid_k8s(_claim(accessModes="ReadWriteOnce"))


def test_a_misspelt_top_level_field_fails() -> None:
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "a"}}
    account["automountToken"] = False
    with pytest.raises(AssertionError, match="automountToken"):
        assert_valid_k8s(account)


def test_custom_resources_are_not_builtin() -> None:
    assert not is_builtin({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor"})
    assert is_builtin({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy"})
    assert is_builtin({"apiVersion": "apps/v1", "kind": "StatefulSet"})
    assert is_builtin({"apiVersion": "v1", "kind": "Secret"})


def test_the_cached_validator_agrees_with_kubernetes_validate() -> None:
    good, bad = _claim(storageClassName="x"), _claim(storageClass="x")
    assert kubernetes_validate.validate(good, "1.30", strict=True) == "1.30"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.30", strict=True)
    assert_valid_k8s(good)
    with pytest.raises(AssertionError):
        assert_valid_k8s(bad)


def _job(**spec: object) -> dict:
    template = {"spec": {"restartPolicy": "Never", "containers": [{"name": "w", "image": "i"}]}}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j"},
        "spec": {"template": template, **spec},
    }


def test_the_jobs_failure_policy_fields_are_checked() -> None:
    assert_valid_k8s(_job(podFailurePolicy=pod_failure_policy(), activeDeadlineSeconds=3600, backoffLimit=3))
    misspelt = {"rules": [{"action": "FailJob", "onExitCode": {"operator": "In", "values": [2]}}]}
    with pytest.raises(AssertionError, match="onExitCode"):
        assert_valid_k8s(_job(podFailurePolicy=misspelt))
    with pytest.raises(AssertionError, match="activeDeadlineSeconds"):
        assert_valid_k8s(_job(activeDeadlineSeconds="a day"))
