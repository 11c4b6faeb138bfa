"""The whole stack as one dependency graph: what `__main__.py` runs.

Order: parse config -> NRP policy (refuse before any resource exists) -> GraceFoundation ->
GraceStorage -> model servers -> experiment Jobs -> exports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from grace_infra import constants as c
from grace_infra import nrp_rules
from grace_infra.components.experiments import build_experiments
from grace_infra.components.foundation import GraceFoundation, GraceFoundationArgs
from grace_infra.components.model_server import VllmModelServer, VllmModelServerArgs
from grace_infra.components.storage import GraceStorage, GraceStorageArgs
from grace_infra.components.weights_job import WeightsDownload, WeightsDownloadArgs
from grace_infra.config.catalog import ServingMode
from grace_infra.config.stack_config import GraceConfig
from grace_infra.config.stack_files import DEEPSEEK_API_KEY_KEY, HF_TOKEN_KEY, SECRET_KEYS
from grace_infra.manifests.vllm_server import await_timeout
from grace_infra.planning.gpu_hours import gpu_hour_plan

__all__ = ["StackSecrets", "build_stack", "read_secrets", "read_stack_config"]



def _stack_config_keys() -> set[str]:
    """Every `grace:*` key the engine passed (from Pulumi.<stack>.yaml and Pulumi.yaml defaults)."""
    prefix = f"{c.PULUMI_CONFIG_NAMESPACE}:"
    keys = set(pulumi.runtime.config.CONFIG.get()) | set(pulumi.runtime.config.get_config_env())
    return {key.removeprefix(prefix) for key in keys if key.startswith(prefix)}


def read_stack_config() -> GraceConfig:
    """Read every `grace:*` key except the secrets and parse them into one GraceConfig.

    All keys are read, not only the declared ones, so a misspelt key is an error naming it instead of
    a setting silently ignored.
    """
    cfg = pulumi.Config(c.PULUMI_CONFIG_NAMESPACE)
    raw: dict[str, Any] = {}
    for key in sorted(_stack_config_keys() - set(SECRET_KEYS)):
        value = cfg.get(key)
        if value is None or value == "":
            continue  # Pulumi.yaml declares string keys with "" meaning unset
        # Objects and lists arrive JSON-encoded; scalars stay strings, so a string key's value "123"
        # is not turned into a number.
        raw[key] = json.loads(value) if value[:1] in "{[" else value
    return GraceConfig.parse(raw)


@dataclass(frozen=True)
class StackSecrets:
    """The stack's Pulumi secrets as secret Outputs; None when the key is unset or empty."""

    hf_token: pulumi.Output[str] | None
    deepseek_api_key: pulumi.Output[str] | None
    plaintext: tuple[str, ...]  # keys holding a value that was not set with --secret


def _is_encrypted(key: str) -> bool:
    full_key = f"{c.PULUMI_CONFIG_NAMESPACE}:{key}"
    # Mocks and the Automation API set secret keys in-process; the CLI passes them in the environment.
    runtime = pulumi.runtime
    return runtime.is_config_secret(full_key) or full_key in runtime.get_config_secret_keys_env()


def read_secrets() -> StackSecrets:
    cfg = pulumi.Config(c.PULUMI_CONFIG_NAMESPACE)

    def secret(key: str) -> pulumi.Output[str] | None:
        # Presence is not secret; the value only ever leaves here as a secret Output.
        return cfg.get_secret(key) if cfg.get(key) else None

    return StackSecrets(
        hf_token=secret(HF_TOKEN_KEY),
        deepseek_api_key=secret(DEEPSEEK_API_KEY_KEY),
        plaintext=tuple(key for key in SECRET_KEYS if cfg.get(key) and not _is_encrypted(key)),
    )


def configmap_mutable() -> bool:
    """Whether the default provider updates ConfigMap data in place (the stack setting
    kubernetes:enableConfigMapMutable, which the provider reads as `kubernetes:config:enableConfigMapMutable`
    in provider/pkg/provider/provider.go, Configure). Without it the provider lists `.data` among a
    ConfigMap's replacement triggers (provider/pkg/provider/diff.go, forceNewProperties: `else if
    clients.IsConfigMap(obj) && (!k.enableConfigMapMutable || clients.IsImmutable(obj))`), so every study
    file edit deletes and recreates grace-studies, and a pod starting in between fails to mount it."""
    namespace, key = c.CONFIGMAP_MUTABLE_SETTING.split(":", 1)
    return (pulumi.Config(namespace).get(key) or "").lower() == "true"


def component_options(config: GraceConfig) -> pulumi.ResourceOptions | None:
    """Options every component gets: with `grace:renderYamlTo`, a provider that writes YAML instead.

    Children inherit their parent's provider, so passing it to each component covers every object.
    """
    if not config.render_yaml_to:
        return None
    pulumi.log.warn(
        f"grace:renderYamlTo={config.render_yaml_to!r}: objects are written as YAML, not applied; "
        "Secret values are written there in plaintext."
    )
    provider = k8s.Provider(
        "grace-yaml", render_yaml_to_directory=config.render_yaml_to, enable_config_map_mutable=True
    )
    return pulumi.ResourceOptions(providers={"kubernetes": provider})


def readiness_commands(config: GraceConfig) -> dict[str, str]:
    """Per persistent model, the command that waits for its server to be Ready; the Jobs' progress."""
    namespace = config.namespace.name
    commands = {
        model.key: (
            f"kubectl -n {namespace} rollout status statefulset/{model.server_name} "
            f"--timeout={await_timeout(model)}"
        )
        for model in config.served_models()
        if model.serving_mode == ServingMode.PERSISTENT
    }
    commands["jobs"] = f"kubectl -n {namespace} get jobs -l {c.LABEL_PROJECT}={c.PROJECT} -w"
    return commands


def build_stack() -> None:
    """Parse config, check the NRP rules, build the components, export what people need."""
    config = read_stack_config()
    secrets = read_secrets()
    nrp_rules.enforce([
        *nrp_rules.check_config(config),
        *nrp_rules.check_secrets(
            config,
            has_hf_token=secrets.hf_token is not None,
            has_deepseek_key=secrets.deepseek_api_key is not None,
            plaintext=secrets.plaintext,
        ),
    ], warn=pulumi.log.warn)
    if not config.render_yaml_to and not configmap_mutable():
        pulumi.log.warn(
            f"{c.CONFIGMAP_MUTABLE_SETTING} is not true: every study file change deletes and recreates "
            f"the {c.STUDIES_CONFIGMAP} ConfigMap instead of updating it, and a pod starting in between "
            f"cannot mount it; pulumi config set {c.CONFIGMAP_MUTABLE_SETTING} true"
        )
    opts = component_options(config)

    foundation = GraceFoundation(
        "grace",
        GraceFoundationArgs(
            config=config, hf_token=secrets.hf_token, deepseek_api_key=secrets.deepseek_api_key
        ),
        opts,
    )
    storage = GraceStorage("grace", GraceStorageArgs(config=config, namespace=foundation.namespace), opts)

    # --- weights: one awaited download Job per model; every pod running vLLM is created after it.
    downloads = {
        model.key: WeightsDownload(
            f"weights-{model.key}",
            WeightsDownloadArgs(
                model=model, config=config,
                depends_on=[*foundation.ready, storage.claims[model.weights_pvc_name]],
            ),
            opts,
        )
        for model in config.served_models()
    }

    # --- model servers: job-mode models run inside their ExperimentJobs instead.
    servers = {
        model.key: VllmModelServer(
            model.server_name,
            VllmModelServerArgs(
                model=model, config=config, weights_ready=downloads[model.key].job,
                depends_on=foundation.ready,
            ),
            opts,
        )
        for model in config.served_models()
        if model.serving_mode == ServingMode.PERSISTENT
    }

    # --- experiment Jobs: never awaited, never made to wait for a server in Pulumi; each
    # waits in the cluster for its server's /health and its input file (see experiments.py).
    shared_claims = [storage.claims[name] for name in (c.INPUT_PVC, c.OUTPUT_PVC, c.LOGS_PVC)]
    experiments = build_experiments(
        config,
        depends_on=[*foundation.ready, *shared_claims],
        weights_claims={key: download.job for key, download in downloads.items()},
        opts=opts,
    )
    pulumi.export("experimentJobs", [job.name for job in experiments.planned])
    pulumi.export("gpuHourPlan", gpu_hour_plan(config, experiments.bundle).to_json())

    pulumi.export("namespace", foundation.namespace)
    pulumi.export("modelServers", {key: server.url for key, server in servers.items()})
    # The checkpoint each model is served from. The commit `revision` resolves to is known only when the
    # download Job runs: it records it in the marker file, which every container mounting the weights
    # reads at `weightsMarker` (GRACE_WEIGHTS_MARKER) and job-mode workers copy into their meta files.
    pulumi.export("weights", {
        model.key: {
            "hfRepo": model.hf_repo,
            "revision": model.revision,
            "downloadJob": downloads[model.key].job_name,
            "weightsMarker": c.WEIGHTS_MARKER_PATH,
        }
        for model in config.served_models()
    })
    # `pulumi up` does not wait for the servers to load (job_lifecycle.await_annotations): say how to.
    pulumi.export("watchReadiness", readiness_commands(config))
    pulumi.export("serviceAccounts", {
        "modelServer": foundation.model_server_account,
        "queryJob": foundation.query_job_account,
        "extractionJob": foundation.extraction_job_account,
    })
    pulumi.export("claims", {
        "input": storage.input_claim,
        "output": storage.output_claim,
        "logs": storage.logs_claim,
        "weights": storage.weights_claims,
    })
