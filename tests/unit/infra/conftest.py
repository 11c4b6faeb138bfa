"""Fixtures of the infra tests. The functions themselves live in support.py so modules can import them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from grace_infra.commands.offline import OfflineRun
from grace_infra.commands.render import Rendered, render

from . import support


@pytest.fixture
def base_config() -> Callable[..., dict[str, Any]]:
    """`base_config(**overrides)`: the nrp stack's raw config with top-level keys replaced."""
    return support.base_config


@pytest.fixture
def render_stack() -> Callable[..., OfflineRun]:
    """`render_stack(raw_config, secrets=None)`: run the program under mocks."""
    return support.render_stack


@pytest.fixture
def assert_valid_k8s() -> Callable[[dict[str, Any]], None]:
    """`assert_valid_k8s(manifest)`: strict Kubernetes 1.30 schema validation of a built-in object."""
    return support.assert_valid_k8s


@pytest.fixture(scope="session")
def nrp_rendered() -> Rendered:
    """`render("nrp")`, what `python -m grace_infra render --stack nrp` computes. Read-only."""
    return render("nrp")


@pytest.fixture(scope="session")
def nrp_run(nrp_rendered: Rendered) -> OfflineRun:
    """The nrp stack as committed (namespace adopted), with the Hugging Face token set. Read-only."""
    return nrp_rendered.run


@pytest.fixture(scope="session")
def mixed_run() -> OfflineRun:
    """The nrp stack with support.MIXED_MODELS (persistent servers and a job-mode model). Read-only."""
    return support.render_stack(support.base_config(models=support.MIXED_MODELS))


@pytest.fixture(scope="session")
def created_namespace_run() -> OfflineRun:
    """The nrp stack with `namespace.create=true` and both secrets set, DeepSeek external. Read-only."""
    raw = support.base_config()
    raw["namespace"] = {**raw["namespace"], "create": True}
    raw["jobs"] = {**raw.get("jobs", {}), "deepseekEndpoint": "https://api.deepseek.com/v1"}
    return support.render_stack(raw, secrets=dict(support.PLACEHOLDER_SECRETS))
