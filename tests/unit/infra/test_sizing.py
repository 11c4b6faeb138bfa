"""CPU limits sit exactly at NRP's 1.2 x request, never a millicore under or over it; the vLLM
server's memory request follows its processes (docs/model-servers.md, "Host memory")."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from grace_infra import constants as c
from grace_infra.config.stack_config import GraceConfig
from grace_infra.planning.sizing import cpu_limit_within, vllm_host_memory_estimate_gi

from .support import base_config, render_stack


@pytest.mark.parametrize(
    ("request_cores", "expected"),
    [(1, 1.2), (6, 7.2), (0.5, 0.6), (16, 19.2), (7, 8.4), (3.3, 3.96), (0.001, 0.001)],
)
def test_cpu_limit_is_the_largest_millicore_value_within_ratio(
    request_cores: float, expected: float
) -> None:
    limit = cpu_limit_within(request_cores, c.NRP_LIMIT_TO_REQUEST_MAX_RATIO)
    assert limit == expected
    # exact decimal arithmetic: within the ratio, and one more millicore would break it
    allowed = Decimal(str(request_cores)) * Decimal(str(c.NRP_LIMIT_TO_REQUEST_MAX_RATIO))
    assert Decimal(str(limit)) <= allowed < Decimal(str(limit)) + Decimal("0.001")


def _vllm(run: Any, name: str) -> dict[str, Any]:
    pod = run.manifest("Job", name)["spec"]["template"]["spec"]
    (sidecar,) = [x for x in pod["initContainers"] if x["name"] == c.VLLM_CONTAINER_NAME]
    return dict(sidecar["resources"])


def test_a_memory_override_wins_and_the_estimate_follows_the_processes() -> None:
    """The documented request per catalog model (docs/model-servers.md, "Host memory") is what renders;
    `memoryRequestGi` replaces it for one model only; and one more GPU adds a worker process and its
    CUDA state, never a share of the weights (which vLLM memory-maps from the claim)."""
    models = [{"key": "gemma-2-2b", "memoryRequestGi": 30}, {"key": "gemma-2-27b"}, {"key": "llama-3-70b"}]
    run = render_stack(base_config(models=models))
    overridden = _vllm(run, "matrix-gemma-2-2b")
    assert (overridden["requests"]["memory"], overridden["limits"]["memory"]) == ("30Gi", "36Gi")
    # The numbers docs/model-servers.md states for the catalog (2 and 4 GPUs here).
    assert _vllm(run, "matrix-gemma-2-27b")["requests"]["memory"] == "24Gi"
    assert _vllm(run, "matrix-llama-3-70b")["requests"]["memory"] == "40Gi"
    served = {m.key: m for m in GraceConfig.parse(base_config()).served_models()}
    one, four = served["gemma-2-2b"], served["llama-3-70b"]
    added = vllm_host_memory_estimate_gi(four) - vllm_host_memory_estimate_gi(one)
    per_gpu = c.VLLM_HOST_PROCESS_GI + c.VLLM_HOST_CUDA_GI_PER_GPU
    assert added == pytest.approx(4 * per_gpu - c.VLLM_HOST_CUDA_GI_PER_GPU + c.VLLM_HOST_SHM_GI)
    assert added < four.weights_gb / 4  # far below even one GPU's share of the 141 GB of weights
