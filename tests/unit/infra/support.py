"""Helpers every infra test uses: the nrp stack's config, an offline render, Kubernetes validation.

Import them directly (`from .support import base_config, render_stack, assert_valid_k8s`) or take the
fixtures of the same names from conftest.py.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

from grace_infra.commands.offline import OfflineRun, run_offline
from grace_infra.config.input_files import offline_input_files
from grace_infra.config.stack_files import provider_settings

PROJECT_ROOT = Path(__file__).resolve().parents[3]
KUBERNETES_VERSION = "1.30"
_SCHEMA_DIR = f"kubernetes-json-schema/v{KUBERNETES_VERSION}.0-local-strict"
# Recognisable fake secret values: tests assert they never appear in any rendered file.
PLACEHOLDER_SECRETS = {
    "hfToken": "hf_TEST_PLACEHOLDER_never_in_output",
    "deepseekApiKey": "sk-TEST_PLACEHOLDER_never_in_output",
}


# Both serving modes side by side: the five models NRP allows in a StatefulSet (<= 2 GPUs) persistent,
# llama-3-70b (4 GPUs) in its Jobs. The committed nrp stack serves every model in its Jobs.
MIXED_MODELS: list[dict[str, str]] = [
    {"key": "gemma-2-2b", "servingMode": "persistent"},
    {"key": "gemma-2-9b", "servingMode": "persistent"},
    {"key": "gemma-2-27b", "servingMode": "persistent"},
    {"key": "llama-3-70b", "servingMode": "job"},
    {"key": "gpt-oss-20b", "servingMode": "persistent"},
    {"key": "gpt-oss-120b", "servingMode": "persistent"},
]


@cache
def _stack_file(stack: str) -> dict[str, Any]:
    document = yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8"))
    # Only the grace:* keys: the provider's settings are passed by render_stack (provider_settings).
    items = document["config"].items()
    return {key.removeprefix("grace:"): value for key, value in items if key.startswith("grace:")}


def base_config(stack: str = "nrp", **overrides: Any) -> dict[str, Any]:
    """The raw `grace:*` mapping (keys without the prefix) of Pulumi.<stack>.yaml.

    `overrides` replace whole top-level keys, as a second `pulumi config set` would:
    `base_config(models=[{"key": "gemma-2-2b"}], renderYamlTo="out/")`. A fresh deep copy each call.
    """
    # The stack's own inputFiles (data/*.csv) are not in the checkout: the render's stand-ins. An
    # override is taken as given, so a test can name a missing file on purpose.
    stack_raw = offline_input_files(_stack_file(stack), PROJECT_ROOT)[0]
    return {**stack_raw, **copy.deepcopy(overrides)}


def render_stack(raw_config: dict[str, Any], secrets: dict[str, str] | None = None) -> OfflineRun:
    """Run `__main__.py` under Pulumi mocks with `raw_config`.

    `secrets` maps secret keys (`hfToken`, `deepseekApiKey`) to values set as Pulumi secrets; the
    default sets only the Hugging Face token (the nrp stack has gated models). Pass `{}` for none.
    """
    secrets = {"hfToken": PLACEHOLDER_SECRETS["hfToken"]} if secrets is None else secrets
    # The nrp stack's provider settings (kubernetes:enableConfigMapMutable), as `pulumi up` passes them.
    provider = provider_settings("nrp")
    return run_offline({**raw_config, **secrets, **provider}, secret_keys=[f"grace:{key}" for key in secrets])


def is_builtin(manifest: dict[str, Any]) -> bool:
    """Core, named built-in groups (apps, batch, *.k8s.io); False for CRDs such as ServiceMonitor."""
    group = manifest["apiVersion"].rpartition("/")[0]
    return group == "" or "." not in group or group.endswith(".k8s.io")


@cache
def _definitions() -> Resource:
    return Resource.from_contents(schema_contents(f"{_SCHEMA_DIR}/_definitions.json", KUBERNETES_VERSION))


@cache
def _validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """kubernetes_validate.validate's schema lookup, cached: it re-reads the 1.5 MB definitions per call.

    File naming as in kubernetes_validate.utils.validate: `rbac.authorization.k8s.io/v1` -> `rbac-v1`.
    """
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = schema_contents(f"{_SCHEMA_DIR}/{kind.lower()}-{group_version}.json", KUBERNETES_VERSION)
    registry = _definitions() @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def assert_valid_k8s(manifest: dict[str, Any]) -> None:
    """Validate a built-in object against the Kubernetes 1.30 schema, strictly (unknown fields fail)."""
    if not is_builtin(manifest):
        return
    validator = _validator(manifest["apiVersion"], manifest["kind"])
    error = jsonschema.exceptions.best_match(validator.iter_errors(manifest))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "<root>"
        name = manifest.get("metadata", {}).get("name")
        raise AssertionError(f"{manifest['kind']}/{name} is invalid at {where}: {error.message}")


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels + matchExpressions) matches `labels`."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        matched = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not matched:
            return False
    return True


def pod_templates(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`<Kind>/<name>` -> pod template ({metadata, spec}) of every workload (StatefulSet, Job, ...)."""
    templates = {}
    for manifest in manifests:
        spec = manifest.get("spec") or {}
        if manifest["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec:
            templates[f"{manifest['kind']}/{manifest['metadata']['name']}"] = spec["template"]
    return templates
