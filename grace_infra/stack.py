"""The whole stack as one dependency graph: what `__main__.py` runs."""

from __future__ import annotations

import json
from typing import Any

import pulumi

from grace_infra import constants as c
from grace_infra.config import GraceConfig


def read_stack_config() -> GraceConfig:
    """Read every declared `grace:*` key from the stack and parse them into one GraceConfig."""
    cfg = pulumi.Config(c.PULUMI_CONFIG_NAMESPACE)
    raw: dict[str, Any] = {}
    for name, info in GraceConfig.model_fields.items():
        key = info.alias or name
        value = cfg.get(key)
        if value is None:
            continue
        try:
            raw[key] = json.loads(value)
        except json.JSONDecodeError:
            raw[key] = value  # a plain string such as renderYamlTo
    return GraceConfig.parse(raw)


def build_stack() -> None:
    """Parse config, build the components, export outputs. Components are filled in per issue."""
    config = read_stack_config()
    pulumi.export("namespace", config.namespace.name)
