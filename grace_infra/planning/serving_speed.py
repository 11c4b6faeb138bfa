"""How long one vLLM server takes to answer a workload: a roofline estimate from its GPUs' datasheet.

    prefill tokens/s = GPUs x dense TFLOPS x PREFILL_COMPUTE_EFFICIENCY / (2 x active parameters)
    decode step (s)  = (weight bytes + KV-cache bytes the batch attends to) / GPUs
                       / (memory bandwidth x DECODE_BANDWIDTH_EFFICIENCY)
    busy seconds     = sum over request kinds of
                       requests x prompt tokens / prefill tokens/s
                       + requests x output tokens / batch x decode step (at the kind's mean context)

Reading a prompt is matrix multiplication (2 FLOPs per active parameter per token); writing a token streams
every weight from GPU memory once per step, shared by the `batch` requests in flight (the worker's
--batch-size). A mixture of experts reads all its experts per step at these batch sizes (64 requests x 4
experts per token cover gpt-oss's 32 or 128), so decode counts every weight and prefill only the active
ones. Prefix caching is not counted, nor is any overlap of prefill and decode, so the estimate errs long.

A measured `throughput_rps` on the model replaces all of this: requests / throughput_rps.

tests/unit/infra/test_serving_speed.py holds the estimate against vLLM's published runs on the same GPUs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grace_infra import constants as c
from grace_infra.config.catalog import ModelSpec
from grace_infra.planning.gpu_performance import GPU_PERFORMANCE, GpuPerformance, gpu_performance

__all__ = ["FALLBACK_GPU", "Load", "ServerSpeed", "server_speed"]

# A product without datasheet figures is planned as the slowest GPU of the table: the plan errs long.
FALLBACK_GPU = min(GPU_PERFORMANCE, key=lambda gpu: gpu.memory_bandwidth_gb_s)


@dataclass(frozen=True)
class Load:
    """`requests` requests of one kind: mean prompt tokens in and output tokens out per request."""

    requests: float
    prompt_tokens: float
    output_tokens: float


@dataclass(frozen=True)
class ServerSpeed:
    """One model server's speed on its GPUs, and what the figures come from."""

    model: ModelSpec
    gpu: GpuPerformance
    gpu_known: bool  # False: `gpu` is FALLBACK_GPU standing in for an unknown product
    batch: int  # requests in flight

    @property
    def prefill_tokens_per_s(self) -> float:
        flops = self.model.gpus * self.gpu.dense_tflops_16bit * 1e12 * c.PREFILL_COMPUTE_EFFICIENCY
        return flops / (2 * self.model.active_params * 1e9)

    def decode_step_s(self, batch: float, context_tokens: float) -> float:
        read_bytes = self.model.weights_gb * 1e9 + batch * context_tokens * self.model.kv_bytes_per_token
        bandwidth = self.gpu.memory_bandwidth_gb_s * 1e9 * c.DECODE_BANDWIDTH_EFFICIENCY
        return read_bytes / self.model.gpus / bandwidth

    def decode_tokens_per_s(self, context_tokens: float) -> float:
        """Tokens written per second with `batch` requests in flight at this context length."""
        return self.batch / self.decode_step_s(self.batch, context_tokens)

    @property
    def source(self) -> str:
        if self.model.throughput_rps is not None:
            return f"measured {self.model.throughput_rps:g} req/s (throughputRps)"
        return self.gpu.name if self.gpu_known else f"{self.gpu.name} (no figures for this product)"

    def busy_s(self, loads: Sequence[Load]) -> float:
        """Seconds this server needs for `loads`, served one kind after another."""
        if self.model.throughput_rps is not None:
            return sum(load.requests for load in loads) / self.model.throughput_rps
        seconds = 0.0
        for load in loads:
            if load.requests <= 0:
                continue
            seconds += load.requests * load.prompt_tokens / self.prefill_tokens_per_s
            batch = min(self.batch, load.requests)
            context = load.prompt_tokens + load.output_tokens / 2
            seconds += load.requests * load.output_tokens / batch * self.decode_step_s(batch, context)
        return seconds


def server_speed(model: ModelSpec, product: str | None, batch: int) -> ServerSpeed:
    """The speed of `model` served on `product` GPUs with `batch` requests in flight."""
    gpu = gpu_performance(product)
    return ServerSpeed(model=model, gpu=gpu or FALLBACK_GPU, gpu_known=gpu is not None, batch=batch)
