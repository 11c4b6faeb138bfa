"""GraceFoundation as rendered under mocks: namespace, quota, accounts, Secrets, NetworkPolicies."""

from __future__ import annotations

import json

import pytest

from grace_infra import constants as c
from grace_infra.commands.offline import REDACTED, OfflineRun, run_offline
from grace_infra.components.foundation import TYPE_TOKEN
from grace_infra.errors import PolicyViolation
from grace_infra.manifests import naming

from .support import (
    PLACEHOLDER_SECRETS,
    assert_valid_k8s,
    base_config,
    pod_templates,
    render_stack,
    selects,
)


def kinds(run: OfflineRun, kind: str) -> list[dict]:
    return [m for m in run.manifests() if m["kind"] == kind]


# --- namespace -----------------------------------------------------------------------------------


def test_adopted_namespace_is_not_created_but_used_everywhere(nrp_run: OfflineRun) -> None:
    assert kinds(nrp_run, "Namespace") == []
    assert kinds(nrp_run, "ResourceQuota") == []
    for manifest in nrp_run.manifests():
        assert manifest["metadata"]["namespace"] == "grace-experiments", manifest["metadata"]["name"]


def test_created_namespace_is_labelled_protected_and_retained(created_namespace_run: OfflineRun) -> None:
    namespace = created_namespace_run.manifest("Namespace", "grace-experiments")
    assert namespace["metadata"]["labels"]["project"] == "grace"
    assert namespace["metadata"]["labels"]["environment"] == "research"
    [resource] = created_namespace_run.of_type("kubernetes:core/v1:Namespace")
    assert resource.protect
    assert resource.retain_on_delete


def test_created_namespace_comes_before_everything_in_it(created_namespace_run: OfflineRun) -> None:
    [namespace] = created_namespace_run.of_type("kubernetes:core/v1:Namespace")
    for resource in created_namespace_run.resources:
        if resource.custom and resource.inputs.get("metadata", {}).get("namespace"):
            assert namespace.urn in resource.depends_on, resource.name


def test_quota_is_the_configured_one(created_namespace_run: OfflineRun) -> None:
    quota = created_namespace_run.manifest("ResourceQuota", c.QUOTA_NAME)
    assert quota["spec"]["hard"] == {
        "requests.cpu": "200",
        "requests.memory": "800Gi",
        "requests.nvidia.com/a100": "15",  # A100 nodes offer only nvidia.com/a100
        "persistentvolumeclaims": "20",
        "pods": "50",
    }


def test_quota_caps_every_gpu_resource_the_models_request() -> None:
    raw = base_config(
        gpu={"nodeProduct": "NVIDIA-A100-SXM4-80GB"},
        models=[{"key": "gemma-2-2b"}, {"key": "gemma-2-9b", "gpuProduct": "NVIDIA-L40"}],
    )
    raw["namespace"] = {**raw["namespace"], "create": True}
    hard = render_stack(raw).manifest("ResourceQuota", c.QUOTA_NAME)["spec"]["hard"]
    assert hard["requests.nvidia.com/a100"] == "15"
    assert hard["requests.nvidia.com/gpu"] == "15"


# --- identities ----------------------------------------------------------------------------------


def test_only_the_extraction_gate_has_api_access(nrp_run: OfflineRun, mixed_run: OfflineRun) -> None:
    accounts = {m["metadata"]["name"]: m for m in kinds(nrp_run, "ServiceAccount")}
    assert set(accounts) == {c.SA_MODEL_SERVER, c.SA_QUERY_JOB, c.SA_EXTRACTION_JOB, c.SA_EXTRACTION_GATE}
    # Only the gate calls the Kubernetes API, and only on the Jobs it names.
    for name in (c.SA_MODEL_SERVER, c.SA_QUERY_JOB, c.SA_EXTRACTION_JOB):
        assert accounts[name]["automountServiceAccountToken"] is False
    (role,) = kinds(nrp_run, "Role")
    assert role["rules"] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "resourceNames": ["extraction-gemma-2-27b"],
         "verbs": ["get", "patch"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "resourceNames": ["matrix-gemma-2-27b"],
         "verbs": ["get"]},
    ]  # fmt: skip
    (binding,) = kinds(nrp_run, "RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": c.SA_EXTRACTION_GATE, "namespace": "grace-experiments"}
    ]
    for where, template in pod_templates(nrp_run.manifests()).items():
        with_token = template["spec"]["serviceAccountName"] == c.SA_EXTRACTION_GATE
        assert template["spec"]["automountServiceAccountToken"] is with_token, where
    # A persistent coder needs no gate: no Role, no token anywhere.
    assert not kinds(mixed_run, "Role")
    assert not kinds(mixed_run, "RoleBinding")
    for where, template in pod_templates(mixed_run.manifests()).items():
        assert template["spec"]["automountServiceAccountToken"] is False, where


def test_pods_use_the_foundation_accounts(nrp_run: OfflineRun) -> None:
    accounts = {m["metadata"]["name"] for m in kinds(nrp_run, "ServiceAccount")}
    templates = pod_templates(nrp_run.manifests())
    assert templates
    for where, template in templates.items():
        assert template["spec"].get("serviceAccountName") in accounts, where


# --- Secrets -------------------------------------------------------------------------------------


def test_secrets_exist_only_when_set(nrp_run: OfflineRun, created_namespace_run: OfflineRun) -> None:
    assert {m["metadata"]["name"] for m in kinds(nrp_run, "Secret")} == {c.HF_TOKEN_SECRET}
    assert {m["metadata"]["name"] for m in kinds(created_namespace_run, "Secret")} == {
        c.HF_TOKEN_SECRET,
        c.DEEPSEEK_SECRET,
    }
    ungated = render_stack(base_config(models=[{"key": "gpt-oss-20b"}]), secrets={})
    assert kinds(ungated, "Secret") == []


def test_secret_values_are_redacted_and_marked_secret(created_namespace_run: OfflineRun) -> None:
    token = created_namespace_run.manifest("Secret", c.HF_TOKEN_SECRET)
    assert token["stringData"] == {c.HF_TOKEN_SECRET_KEY: REDACTED}
    key = created_namespace_run.manifest("Secret", c.DEEPSEEK_SECRET)
    assert key["stringData"] == {c.DEEPSEEK_SECRET_KEY: REDACTED}
    secrets = created_namespace_run.of_type("kubernetes:core/v1:Secret")
    assert secrets
    assert all(resource.secret_inputs for resource in secrets)


def test_no_secret_plaintext_in_any_recorded_input(created_namespace_run: OfflineRun) -> None:
    recorded = json.dumps([r.inputs for r in created_namespace_run.resources])
    for value in PLACEHOLDER_SECRETS.values():
        assert value not in recorded


def test_a_gated_model_without_token_is_refused_before_any_resource() -> None:
    with pytest.raises(PolicyViolation, match=r"^\[secret-hf-token-missing\] model gemma-2-2b .* is gated"):
        render_stack(base_config(), secrets={})


def test_a_secret_set_in_plaintext_is_refused() -> None:
    raw = {**base_config(), "hfToken": PLACEHOLDER_SECRETS["hfToken"]}
    message = r"^\[secret-in-plaintext\] grace:hfToken is stored in plaintext"
    with pytest.raises(PolicyViolation, match=message):
        run_offline(raw, secret_keys=[])


# --- NetworkPolicies -----------------------------------------------------------------------------


def _policies(run: OfflineRun) -> dict[str, dict]:
    return {m["metadata"]["name"]: m["spec"] for m in kinds(run, "NetworkPolicy")}


def _component(template: dict) -> str:
    return template["metadata"]["labels"].get(c.LABEL_COMPONENT, "")


def test_default_deny_selects_every_pod_the_program_creates(mixed_run: OfflineRun) -> None:
    deny = _policies(mixed_run)[c.NETPOL_DEFAULT_DENY]
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny
    assert "egress" not in deny
    templates = pod_templates(mixed_run.manifests())
    assert any(_component(t) == c.COMPONENT_MODEL_SERVER for t in templates.values())
    for where, template in templates.items():
        labels = template["metadata"]["labels"]
        assert selects(deny["podSelector"], labels), where
        for key in (c.LABEL_NAME, c.LABEL_INSTANCE, c.LABEL_COMPONENT, c.LABEL_PART_OF, c.LABEL_MANAGED_BY):
            assert key in labels, f"{where} lacks {key}"


def test_model_servers_accept_only_grace_pods_on_8000(mixed_run: OfflineRun) -> None:
    ingress = _policies(mixed_run)[c.NETPOL_MODEL_SERVER_INGRESS]
    assert ingress["policyTypes"] == ["Ingress"]
    assert ingress["ingress"] == [{
        "from": [{"podSelector": {"matchLabels": {"project": "grace"}}}],
        "ports": [{"protocol": "TCP", "port": 8000}],
    }]
    for where, template in pod_templates(mixed_run.manifests()).items():
        is_server = _component(template) == c.COMPONENT_MODEL_SERVER
        assert selects(ingress["podSelector"], template["metadata"]["labels"]) == is_server, where


def test_jobs_may_reach_model_servers_and_dns_only(mixed_run: OfflineRun) -> None:
    policies = _policies(mixed_run)
    job_egress = policies[c.NETPOL_JOB_EGRESS]
    assert job_egress["egress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]
    target = job_egress["egress"][0]["to"][0]["podSelector"]
    templates = pod_templates(mixed_run.manifests())
    servers = [t for t in templates.values() if _component(t) == c.COMPONENT_MODEL_SERVER]
    assert servers
    assert all(selects(target, t["metadata"]["labels"]) for t in servers)
    jobs = {
        w: t["metadata"]["labels"]
        for w, t in templates.items()
        if w.startswith("Job/") and _component(t) != c.COMPONENT_WEIGHTS_DOWNLOAD
    }
    components = {labels[c.LABEL_COMPONENT] for labels in jobs.values()}
    assert components == {c.COMPONENT_QUERY_JOB, c.COMPONENT_EXTRACTION_JOB}
    for where, labels in jobs.items():
        assert selects(job_egress["podSelector"], labels), where
        assert not selects(target, labels), f"{where} must not look like a model server"
    dns = policies[c.NETPOL_DNS_EGRESS]
    assert dns["podSelector"] == {"matchLabels": {"project": "grace"}}
    assert dns["egress"] == [{"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]


def test_https_egress_only_for_pods_that_download_or_call_deepseek(
    mixed_run: OfflineRun, created_namespace_run: OfflineRun
) -> None:
    https = _policies(mixed_run)[c.NETPOL_HTTPS_EGRESS]
    assert https["egress"][0]["ports"] == [{"protocol": "TCP", "port": 443}]
    assert selects(https["podSelector"], {"project": "grace", **naming.https_egress_labels()})
    assert not selects(https["podSelector"], {"project": "grace"})
    assert not selects(https["podSelector"], naming.https_egress_labels())  # foreign pods with the label
    for run in (mixed_run, created_namespace_run):
        external = run is created_namespace_run
        for where, template in pod_templates(run.manifests()).items():
            spec = template["spec"]
            names = {x["name"] for x in [*spec.get("initContainers", []), *spec["containers"]]}
            downloads = c.WEIGHTS_DOWNLOAD_CONTAINER_NAME in names
            extraction = _component(template) == c.COMPONENT_EXTRACTION_JOB
            needs = downloads or (extraction and external)
            assert selects(https["podSelector"], template["metadata"]["labels"]) == needs, where
            # NetworkPolicy selects pods: no pod running a vLLM server may reach the internet.
            if c.VLLM_CONTAINER_NAME in names:
                assert not selects(https["podSelector"], template["metadata"]["labels"]), where


def test_no_pod_but_grace_pods_is_confined(nrp_run: OfflineRun) -> None:
    """Other tenants' pods in a shared namespace keep their own network rules."""
    foreign = {"app": "someone-else"}
    for name, spec in _policies(nrp_run).items():
        assert not selects(spec["podSelector"], foreign), name


# --- shape ---------------------------------------------------------------------------------------


def test_children_are_named_after_the_component_and_parented_to_it(nrp_run: OfflineRun) -> None:
    [component] = nrp_run.of_type(TYPE_TOKEN)
    children = [r for r in nrp_run.resources if r.parent == component.urn]
    assert len(children) >= 9  # 3 ServiceAccounts, the token Secret, 5 NetworkPolicies
    assert all(r.name.startswith(f"{component.name}-") for r in children)


@pytest.mark.parametrize("run_name", ["nrp_run", "created_namespace_run"])
def test_every_rendered_builtin_object_validates(run_name: str, request: pytest.FixtureRequest) -> None:
    run: OfflineRun = request.getfixturevalue(run_name)
    manifests = run.manifests()
    assert len(manifests) > 20
    for manifest in manifests:
        assert_valid_k8s(manifest)


def test_metrics_ingress_only_with_monitoring_and_only_from_prometheus(nrp_run: OfflineRun) -> None:
    assert c.NETPOL_METRICS_INGRESS not in _policies(nrp_run)
    run = render_stack(base_config(monitoring={"enabled": True, "prometheusNamespace": "prom"}))
    metrics = _policies(run)[c.NETPOL_METRICS_INGRESS]
    assert metrics["podSelector"] == {"matchLabels": {"project": "grace"}}
    assert metrics["ingress"] == [{
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prom"}}}],
        "ports": [{"protocol": "TCP", "port": 8000}, {"protocol": "TCP", "port": 9090}],
    }]
