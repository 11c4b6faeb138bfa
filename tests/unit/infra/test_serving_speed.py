"""The GPU-hour plan's speed estimate held against vLLM's own published runs, the datasheet table's
lookups, and a measured throughput taking the estimate's place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from grace_infra import constants as c
from grace_infra.config.catalog import CATALOG, Dtype, ModelSpec
from grace_infra.planning.gpu_performance import gpu_performance
from grace_infra.planning.serving_speed import FALLBACK_GPU, Load, server_speed

RUNS_FILE = Path(__file__).resolve().parents[2] / "fixtures" / "published_vllm_runs.yaml"
PUBLISHED = yaml.safe_load(RUNS_FILE.read_text())
# Values read off a bar chart are good to about 5 %.
CHART_READING = 0.05


def published_model(name: str, gpus: int) -> ModelSpec:
    facts: dict[str, Any] = PUBLISHED["models"][name]
    return ModelSpec(
        key=name, hf_repo=f"published/{name}", gated=False, num_attention_heads=64, gpus=gpus,
        tensor_parallel_size=gpus, dtype=Dtype.BFLOAT16, max_model_len=4096, weights_pvc_gi=1,
        cpu_request=1, memory_request_gi=1, load_budget_s=1, **facts,
    )  # fmt: skip


def estimate_and_measurement(run: dict[str, Any]) -> tuple[float, float]:
    """Seconds the estimate gives the run's requests, and the seconds vLLM measured for them."""
    speed = server_speed(published_model(run["model"], run["gpus"]), run["product"], run["batch"])
    requests = run.get("requests", 1000)
    estimate = speed.busy_s([Load(requests, run["prompt_tokens"], run["output_tokens"])])
    measured = run["seconds"] if "seconds" in run else requests / run["requests_per_s"]
    return estimate, measured


@pytest.mark.parametrize("run", PUBLISHED["runs"], ids=[r["name"] for r in PUBLISHED["runs"]])
def test_the_estimate_is_never_faster_than_vllm_measured_and_not_twice_as_slow(run: dict[str, Any]) -> None:
    estimate, measured = estimate_and_measurement(run)
    floor = measured if run["exact"] else measured * (1 - CHART_READING)
    said = f"{run['name']}: estimate {estimate:.2f} s, vLLM measured {measured:.2f} s"
    assert estimate >= floor, said
    assert estimate <= 2 * measured, said


def test_the_published_runs_cover_both_halves_of_the_estimate() -> None:
    # Prompt-heavy and reply-heavy runs on dense and mixture-of-experts models: a wrong FLOPS or
    # bandwidth term cannot hide behind the other.
    runs = PUBLISHED["runs"]
    assert any(r["prompt_tokens"] / r["output_tokens"] > 20 for r in runs)
    assert any(r["output_tokens"] / r["prompt_tokens"] > 3 for r in runs)
    assert any("active_params_billion" in PUBLISHED["models"][r["model"]] for r in runs)
    assert sum(r["exact"] for r in runs) >= 3


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ("NVIDIA-A100-SXM4-80GB", "NVIDIA A100 80GB SXM"),
        ("NVIDIA-A100-80GB-PCIe", "NVIDIA A100 80GB PCIe"),
        ("NVIDIA-A100-PCIE-40GB", "NVIDIA A100 40GB"),
        ("NVIDIA-L40", "NVIDIA L40"),
        ("NVIDIA-L40S", "NVIDIA L40S"),
        ("NVIDIA-A40", "NVIDIA A40"),
        ("NVIDIA-RTX-A6000", "NVIDIA RTX A6000"),
        ("NVIDIA-H100-NVL", "NVIDIA H100 NVL"),
        ("NVIDIA-H100-80GB-HBM3", "NVIDIA H100 SXM"),
        ("NVIDIA-GH200-480GB", "NVIDIA GH200"),
    ],
)
def test_node_labels_find_their_datasheet(label: str, name: str) -> None:
    gpu = gpu_performance(label)
    assert gpu is not None
    assert gpu.name == name


def test_an_unknown_product_is_planned_as_the_slowest_gpu_and_says_so() -> None:
    model = CATALOG["gemma-2-2b"]
    speed = server_speed(model, "NVIDIA-GeForce-GTX-1080-Ti", batch=64)
    assert speed.gpu == FALLBACK_GPU
    assert speed.source == f"{FALLBACK_GPU.name} (no figures for this product)"
    known = server_speed(model, "NVIDIA-A100-SXM4-80GB", batch=64)
    load = [Load(1000, 300, 64)]
    assert speed.busy_s(load) > known.busy_s(load)
    assert server_speed(model, None, batch=64).gpu == FALLBACK_GPU


def test_a_measured_throughput_replaces_the_estimate() -> None:
    model = CATALOG["llama-3-70b"].model_copy(update={"throughput_rps": 4.0})
    speed = server_speed(model, "NVIDIA-A100-SXM4-80GB", batch=64)
    assert speed.busy_s([Load(1000, 300, 64), Load(200, 5000, 1)]) == pytest.approx(1200 / 4.0)
    assert speed.source == "measured 4 req/s (throughputRps)"


def test_prompts_cost_by_active_parameters_and_replies_by_weight_bytes() -> None:
    a100 = "NVIDIA-A100-SXM4-80GB"
    llama, gpt_oss = CATALOG["llama-3-70b"], CATALOG["gpt-oss-120b"]
    # gpt-oss-120b has more parameters than Llama-3-70B but passes each token through 5.1B of them.
    assert gpt_oss.params_billion > llama.params_billion
    per_gpu_prefill = {
        m.key: server_speed(m, a100, 64).prefill_tokens_per_s / m.gpus for m in (llama, gpt_oss)
    }
    assert per_gpu_prefill["gpt-oss-120b"] / per_gpu_prefill["llama-3-70b"] == pytest.approx(70.6 / 5.1)
    # Writing streams every weight once per step: per GPU, the step time follows the bytes each GPU holds.
    speed = server_speed(llama, a100, 64)
    empty_context = speed.decode_step_s(64, 0)
    assert empty_context == pytest.approx(141.0e9 / 4 / (2039e9 * c.DECODE_BANDWIDTH_EFFICIENCY))
    assert speed.decode_step_s(64, 1000) > empty_context  # the KV cache is read too
    # Twice the replies, twice the writing; twice the prompts, twice the reading.
    write = speed.busy_s([Load(640, 0, 200)])
    assert speed.busy_s([Load(640, 0, 400)]) == pytest.approx(2 * write, rel=0.05)
    read = speed.busy_s([Load(640, 1000, 0)])
    assert speed.busy_s([Load(640, 2000, 0)]) == pytest.approx(2 * read)
