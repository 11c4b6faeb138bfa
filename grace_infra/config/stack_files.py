"""The stack's files as the Pulumi engine reads them: `Pulumi.yaml`'s defaults, `Pulumi.<stack>.yaml`
and extra `--config-file`s, and which `grace:*` keys are Pulumi secrets.

Every command that plans from a stack (`render`, `preflight`, `status`, `results`) starts here; none
of it imports Pulumi, so the commands that only read a stack start without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from grace_infra import constants as c
from grace_infra.config.stack_config import GraceConfig
from grace_infra.errors import GraceError

__all__ = [
    "DEEPSEEK_API_KEY_KEY",
    "HF_TOKEN_KEY",
    "PROJECT_ROOT",
    "SECRET_KEYS",
    "StackFileError",
    "load_raw_config",
    "needed_secrets",
    "project_defaults",
    "provider_settings",
]

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout: Pulumi.yaml, Pulumi.<stack>.yaml, jobs/
HF_TOKEN_KEY = "hfToken"  # noqa: S105 (a config key name, not a secret)
DEEPSEEK_API_KEY_KEY = "deepseekApiKey"
# Pulumi secrets: read with get_secret so they stay encrypted in state, never part of GraceConfig.
SECRET_KEYS = (HF_TOKEN_KEY, DEEPSEEK_API_KEY_KEY)


class StackFileError(GraceError):
    """A stack or config file that cannot be read."""


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StackFileError(f"{path} does not exist.") from None
    except (OSError, yaml.YAMLError) as exc:
        detail = str(exc).replace("\n", " ")
        raise StackFileError(f"{path} cannot be read as YAML: {detail}") from None


def _grace_keys(mapping: Any, path: Path) -> dict[str, Any]:
    """`grace:*` entries of a stack-style mapping, without the prefix; other namespaces are ignored."""
    if not isinstance(mapping, Mapping):
        raise StackFileError(f"{path} must be a mapping of grace:<key> settings, optionally under config:.")
    prefix = f"{c.PULUMI_CONFIG_NAMESPACE}:"
    entries = {}
    for raw_key, value in mapping.items():
        key = str(raw_key)
        if key.startswith(prefix):
            entries[key.removeprefix(prefix)] = value
        elif ":" not in key:
            entries[key] = value  # a bare key is in the project's namespace, as in Pulumi.yaml
    return entries


def project_defaults(project_file: Path) -> dict[str, Any]:
    """Defaults declared in Pulumi.yaml, which the Pulumi CLI applies to keys a stack leaves unset."""
    document = _read_yaml(project_file) or {}
    declared = document.get("config") or {}
    return {
        key: spec["default"]
        for key, spec in declared.items()
        if isinstance(spec, Mapping) and "default" in spec and spec["default"] not in ("", None)
    }


def load_raw_config(
    stack: str, config_files: Sequence[Path] = (), project_root: Path = PROJECT_ROOT
) -> tuple[dict[str, Any], set[str]]:
    """The stack's `grace:*` values as the engine would pass them, and the keys that are secrets.

    A value stored encrypted (`{secure: ...}`, from `pulumi config set --secret`) cannot be decrypted
    offline: its key is returned as a secret and its value dropped.
    """
    stack_file = project_root / f"Pulumi.{stack}.yaml"
    if not stack_file.is_file():
        raise StackFileError(f"--stack {stack}: {stack_file.name} does not exist in {project_root}.")
    raw = project_defaults(project_root / "Pulumi.yaml")
    documents = []
    for path in (stack_file, *config_files):
        document = _read_yaml(path) or {}
        is_stack_style = isinstance(document, Mapping) and "config" in document
        documents.append((path, (document["config"] or {}) if is_stack_style else document))
    secrets: set[str] = set()
    for path, mapping in documents:
        for key, value in _grace_keys(mapping, path).items():
            if isinstance(value, Mapping) and set(value) == {"secure"}:
                secrets.add(key)
                raw.pop(key, None)
            else:
                raw[key] = value
                secrets.discard(key)
    return raw, secrets


def provider_settings(
    stack: str, config_files: Sequence[Path] = (), project_root: Path = PROJECT_ROOT
) -> dict[str, str]:
    """The stack's settings of the default Kubernetes provider that change what `pulumi up` does to the
    objects (c.CONFIGMAP_MUTABLE_SETTING), full key -> string, as the engine passes them to the program."""
    settings: dict[str, str] = {}
    for path in (project_root / f"Pulumi.{stack}.yaml", *config_files):
        document = _read_yaml(path) or {}
        is_stack_style = isinstance(document, Mapping) and "config" in document
        mapping = (document["config"] or {}) if is_stack_style else document
        if isinstance(mapping, Mapping) and c.CONFIGMAP_MUTABLE_SETTING in mapping:
            value = mapping[c.CONFIGMAP_MUTABLE_SETTING]
            # YAML may spell it true (a bool); the engine passes every value as a string.
            text = str(value).lower() if isinstance(value, bool) else str(value)
            settings[c.CONFIGMAP_MUTABLE_SETTING] = text
    return settings


def needed_secrets(config: GraceConfig) -> set[str]:
    """Secrets this config cannot work without (checked by policy.check_secrets under a real stack)."""
    needed = set()
    if any(model.gated for model in config.served_models()):
        needed.add(HF_TOKEN_KEY)
    if config.jobs.deepseek_endpoint:
        needed.add(DEEPSEEK_API_KEY_KEY)
    return needed
