"""GraceFoundation: the namespace and everything every workload in it relies on.

Namespace (only when `grace:namespace.create`) and its ResourceQuota; one ServiceAccount per kind of
pod, bound to no Role (none calls the API; the extraction gate's own account and Role are created with
it, components/resume_gate.py); the Hugging Face and DeepSeek Secrets (only when their Pulumi
secret is set); and the NetworkPolicies that confine grace pods. Names are the fixed names of the
researchers' original manifests (`constants.py`): people type them in kubectl and pod templates
reference them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_kubernetes as k8s

from grace_infra import constants as c
from grace_infra.config.stack_config import GraceConfig
from grace_infra.manifests import naming
from worker import contract

__all__ = ["TYPE_TOKEN", "GraceFoundation", "GraceFoundationArgs"]

TYPE_TOKEN = "grace:index:GraceFoundation"  # noqa: S105 (a Pulumi type token, not a secret)
_COMPONENT = "foundation"

# One ServiceAccount per kind of pod, none bound to any Role and none with a token in its pods: vLLM, the
# weight download and the worker never call the Kubernetes API (every pod template also sets
# automountServiceAccountToken: false; a Job waits for its server over HTTP, not through the API). A
# token stolen from an internet-facing container would otherwise be usable against the API.
ACCOUNTS = (c.SA_MODEL_SERVER, c.SA_QUERY_JOB, c.SA_EXTRACTION_JOB)


@dataclass
class GraceFoundationArgs:
    """Inputs of GraceFoundation."""

    config: GraceConfig
    """The parsed stack config: namespace, quota, GPU resource name, whether DeepSeek is external."""

    hf_token: pulumi.Input[str] | None = None
    """Hugging Face token (a Pulumi secret); None creates no `huggingface-token` Secret."""

    deepseek_api_key: pulumi.Input[str] | None = None
    """DeepSeek API key (a Pulumi secret); None creates no `deepseek-api-key` Secret."""


class GraceFoundation(pulumi.ComponentResource):
    """Namespace, quota, service accounts, Secrets and NetworkPolicies of the Grace stack."""

    namespace: pulumi.Output[str]
    """Name of the namespace every object goes into; depends on the Namespace when it is created."""
    model_server_account: pulumi.Output[str]
    query_job_account: pulumi.Output[str]
    extraction_job_account: pulumi.Output[str]
    hf_token_secret: pulumi.Output[str] | None
    """Name of the `huggingface-token` Secret, None when grace:hfToken is not set."""
    deepseek_secret: pulumi.Output[str] | None
    """Name of the `deepseek-api-key` Secret, None when grace:deepseekApiKey is not set."""
    ready: list[pulumi.Resource]
    """What a workload must wait for: the Namespace (when created), accounts and Secrets."""

    def __init__(
        self, name: str, args: GraceFoundationArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        self._config = args.config
        self.ready = []
        if args.config.namespace.create:
            self.namespace = self._create_namespace(name).metadata.name
            self._create_quota(name)
        else:
            self.namespace = pulumi.Output.from_input(args.config.namespace.name)
        accounts = {account: self._create_account(name, account) for account in ACCOUNTS}
        self.model_server_account = accounts[c.SA_MODEL_SERVER]
        self.query_job_account = accounts[c.SA_QUERY_JOB]
        self.extraction_job_account = accounts[c.SA_EXTRACTION_JOB]
        self.hf_token_secret = self._create_secret(
            name, "hf-token", c.HF_TOKEN_SECRET, c.HF_TOKEN_SECRET_KEY, args.hf_token
        )
        self.deepseek_secret = self._create_secret(
            name, "deepseek-key", c.DEEPSEEK_SECRET, c.DEEPSEEK_SECRET_KEY, args.deepseek_api_key
        )
        self._create_network_policies(name)
        self.register_outputs({
            "namespace": self.namespace,
            "modelServerAccount": self.model_server_account,
            "queryJobAccount": self.query_job_account,
            "extractionJobAccount": self.extraction_job_account,
            "hfTokenSecret": self.hf_token_secret,
            "deepseekSecret": self.deepseek_secret,
        })

    # --- helpers ---------------------------------------------------------------------------------

    # Manifests are plain dicts in the API's camelCase; `Any` because the SDK types them as TypedDicts.
    def _metadata(self, object_name: str, role: str) -> Any:
        return {
            "name": object_name,
            "namespace": self.namespace,
            "labels": naming.recommended_labels(name=role, instance=object_name, component=_COMPONENT),
        }

    def _child(self, **extra: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, **extra)

    # --- namespace -------------------------------------------------------------------------------

    def _create_namespace(self, name: str) -> k8s.core.v1.Namespace:
        config = self._config.namespace
        labels = {
            **naming.recommended_labels(name="namespace", instance=config.name, component=_COMPONENT),
            **c.NAMESPACE_LABELS,
        }
        # Deleting or replacing a Namespace deletes every PVC in it, i.e. the study results and the
        # downloaded weights. protect: a plain `pulumi destroy` fails and `--exclude-protected` skips it;
        # retain_on_delete: even after unprotecting, Pulumi only forgets it and the cluster keeps it.
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={"name": config.name, "labels": labels},
            opts=self._child(protect=True, retain_on_delete=True),
        )
        self.ready.append(namespace)
        return namespace

    def _create_quota(self, name: str) -> None:
        quota = self._config.namespace.quota
        k8s.core.v1.ResourceQuota(
            f"{name}-quota",
            metadata=self._metadata(c.QUOTA_NAME, "resource-quota"),
            spec=cast(Any, {
                "hard": {
                    "requests.cpu": quota.requests_cpu,
                    "requests.memory": quota.requests_memory,
                    # One cap per GPU resource the models request: a quota on nvidia.com/gpu does not
                    # count nvidia.com/a100 requests at all.
                    **{
                        f"requests.{resource}": str(quota.requests_gpu)
                        for resource in dict.fromkeys(m.gpu_resource for m in self._config.served_models())
                    },
                    "persistentvolumeclaims": str(quota.persistent_volume_claims),
                    "pods": str(quota.pods),
                }
            }),
            opts=self._child(),
        )

    # --- identities ------------------------------------------------------------------------------

    def _create_account(self, name: str, account: str) -> pulumi.Output[str]:
        suffix = account.removeprefix(f"{c.PROJECT}-")
        service_account = k8s.core.v1.ServiceAccount(
            f"{name}-{suffix}-sa",
            metadata=self._metadata(account, "service-account"),
            automount_service_account_token=False,
            opts=self._child(),
        )
        self.ready.append(service_account)
        return service_account.metadata.name

    def _create_secret(
        self, name: str, suffix: str, secret_name: str, key: str, value: pulumi.Input[str] | None
    ) -> pulumi.Output[str] | None:
        if value is None:
            return None
        secret = k8s.core.v1.Secret(
            f"{name}-{suffix}",
            metadata=self._metadata(secret_name, "credentials"),
            type="Opaque",
            # Wrapping again keeps the value secret in state even if a caller passed a plain string.
            string_data=cast(Any, {key: pulumi.Output.secret(value)}),
            opts=self._child(),
        )
        self.ready.append(secret)
        return secret.metadata.name

    # --- network ---------------------------------------------------------------------------------

    def _create_network_policies(self, name: str) -> None:
        """Deny everything for grace pods, then open exactly the paths the workloads use.

        NetworkPolicies are additive allow-lists: a pod selected by several policies gets the union.
        Every policy selects on `project: grace`, which every grace pod template carries (the
        researchers' original policy selected that label but its pods did not carry it, so it confined
        nothing).
        """
        grace = naming.grace_pod_selector()
        model_servers = {**grace, c.LABEL_COMPONENT: c.COMPONENT_MODEL_SERVER}
        jobs = {
            "matchLabels": grace,
            "matchExpressions": [{
                "key": c.LABEL_COMPONENT,
                "operator": "In",
                "values": [c.COMPONENT_QUERY_JOB, c.COMPONENT_EXTRACTION_JOB],
            }],
        }
        vllm_port = [{"protocol": "TCP", "port": c.VLLM_PORT}]
        policies: dict[str, tuple[str, dict[str, Any]]] = {
            "default-deny": (c.NETPOL_DEFAULT_DENY, {
                "podSelector": {"matchLabels": grace},
                "policyTypes": ["Ingress", "Egress"],
            }),
            "model-server-ingress": (c.NETPOL_MODEL_SERVER_INGRESS, {
                "podSelector": {"matchLabels": model_servers},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": grace}}], "ports": vllm_port}],
            }),
            "job-egress": (c.NETPOL_JOB_EGRESS, {
                "podSelector": jobs,
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": {"matchLabels": model_servers}}], "ports": vllm_port}],
            }),
            # Port-only rule: the resolver may be a kube-dns pod or a node-local cache on a link-local
            # address, which no pod or namespace selector matches.
            "dns-egress": (c.NETPOL_DNS_EGRESS, {
                "podSelector": {"matchLabels": grace},
                "policyTypes": ["Egress"],
                "egress": [{"ports": [
                    {"protocol": "UDP", "port": c.DNS_PORT},
                    {"protocol": "TCP", "port": c.DNS_PORT},
                ]}],
            }),
            # The extraction gate resumes its Job through the API server (components/resume_gate.py).
            "gate-api-egress": (c.NETPOL_GATE_API_EGRESS, {
                "podSelector": {"matchLabels": {**grace, c.LABEL_COMPONENT: c.COMPONENT_GATE_JOB}},
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"protocol": "TCP", "port": port} for port in c.KUBE_API_PORTS]}],
            }),
            "https-egress": (c.NETPOL_HTTPS_EGRESS, {
                "podSelector": {"matchLabels": {**grace, **naming.https_egress_labels()}},
                "policyTypes": ["Egress"],
                "egress": [{
                    "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}],
                    "ports": [{"protocol": "TCP", "port": c.HTTPS_PORT}],
                }],
            }),
        }
        monitoring = self._config.monitoring
        if monitoring.enabled:
            # vLLM serves /metrics on its API port and the worker on its metrics port; a NetworkPolicy
            # cannot filter by path, so only the Prometheus namespace gets this, not the whole cluster.
            prometheus = {"namespaceSelector": {"matchLabels": {
                c.LABEL_NAMESPACE_NAME: monitoring.prometheus_namespace,
            }}}
            policies["metrics-ingress"] = (c.NETPOL_METRICS_INGRESS, {
                "podSelector": {"matchLabels": grace},
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [prometheus],
                    "ports": [
                        {"protocol": "TCP", "port": c.VLLM_PORT},
                        {"protocol": "TCP", "port": contract.METRICS_PORT},
                    ],
                }],
            })
        for suffix, (policy_name, spec) in policies.items():
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{suffix}",
                metadata=self._metadata(policy_name, "network-policy"),
                spec=cast(Any, spec),
                opts=self._child(),
            )
