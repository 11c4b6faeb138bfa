"""What each pod asks the scheduler for: the single source of the numbers in manifests and plan.json.

The model-server component puts `model_server_resources(...).as_k8s()` into its vLLM container, and
the plan and the quota rule add up the same objects, so the plan cannot drift from what is deployed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from grace_infra import constants as c
from grace_infra.config.quantities import GI, cpu_quantity, parse_quantity
from grace_infra.config.stack_config import GraceConfig, ServedModel
from grace_infra.nrp import cluster_facts

__all__ = [
    "GI",
    "WORKER_TMP_SIZE_GI",
    "ContainerResources",
    "ephemeral_limit_within",
    "model_server_resources",
    "parse_quantity",
    "vllm_host_memory_estimate_gi",
    "vllm_memory_request_gi",
    "worker_resources",
]


WORKER_TMP_SIZE_GI = 1  # pandas/openai scratch only; every result goes to /output


@dataclass(frozen=True)
class ContainerResources:
    """Requests and limits of one container. CPU in cores, memory in GiB (whole), GPUs whole."""

    cpu_request: float
    cpu_limit: float
    memory_request_gi: int
    memory_limit_gi: int
    gpus: int
    gpu_resource_name: str
    # Node-local disk (emptyDir volumes, the writable layer): without a request the scheduler ignores it
    # and the kubelet may evict the pod under disk pressure. 0: not rendered.
    ephemeral_request_gi: int = 0
    ephemeral_limit_gi: int = 0

    def as_k8s(self) -> dict[str, dict[str, str]]:
        """The container's `resources` block. GPUs are extended resources: request must equal limit."""
        requests = {"cpu": cpu_quantity(self.cpu_request), "memory": f"{self.memory_request_gi}Gi"}
        limits = {"cpu": cpu_quantity(self.cpu_limit), "memory": f"{self.memory_limit_gi}Gi"}
        if self.ephemeral_request_gi:
            requests["ephemeral-storage"] = f"{self.ephemeral_request_gi}Gi"
            limits["ephemeral-storage"] = f"{self.ephemeral_limit_gi}Gi"
        if self.gpus:
            requests[self.gpu_resource_name] = str(self.gpus)
            limits[self.gpu_resource_name] = str(self.gpus)
        return {"requests": requests, "limits": limits}


def cpu_limit_within(request_cores: float, ratio: float) -> float:
    """The largest whole-millicore CPU limit <= ratio x request.

    Rounds to whole millicores before flooring: 6 * 1.2 * 1000 is 7199.999... in binary floating point.
    """
    return math.floor(round(request_cores * ratio * 1000, 6)) / 1000


def vllm_host_memory_estimate_gi(model: ServedModel) -> float:
    """What a loaded vLLM server holds in host memory, by its processes (constants, VLLM_HOST_*): the API
    server and the engine core; with tensor parallelism one worker process per GPU beside them (with
    one GPU the worker runs inside the engine core: vLLM's "uni" executor, config/parallel.py: `if
    self.distributed_executor_backend is None and self.world_size == 1`); each GPU's CUDA host state;
    the tokenizer; and, with TP > 1, the shared-memory queue. Weights and KV cache live on the GPUs."""
    workers = model.tensor_parallel_size if model.tensor_parallel_size > 1 else 0
    return (
        (2 + workers) * c.VLLM_HOST_PROCESS_GI
        + model.gpus * c.VLLM_HOST_CUDA_GI_PER_GPU
        + c.VLLM_HOST_TOKENIZER_GI
        + (c.VLLM_HOST_SHM_GI if model.tensor_parallel_size > 1 else 0.0)
    )


def vllm_memory_request_gi(model: ServedModel) -> int:
    """The vLLM container's memory request: the model's `memoryRequestGi` when set, else the estimate
    times VLLM_HOST_MEMORY_REQUEST_FACTOR, in whole GiB."""
    if model.memory_request_gi is not None:
        return model.memory_request_gi
    return math.ceil(vllm_host_memory_estimate_gi(model) * c.VLLM_HOST_MEMORY_REQUEST_FACTOR)


def model_server_resources(model: ServedModel) -> ContainerResources:
    """The vLLM container of one model.

    NRP allows a limit at most 20 % above its request; we use that headroom for CPU (tokenisation
    bursts) and memory (weight loading peaks), rounded down so the ratio never exceeds 1.2. GPUs go
    under the model's resolved extended resource (NRP's product table, or the stack's override).
    """
    ratio = c.NRP_LIMIT_TO_REQUEST_MAX_RATIO
    return ContainerResources(
        cpu_request=model.cpu_request,
        cpu_limit=cpu_limit_within(model.cpu_request, ratio),
        memory_request_gi=vllm_memory_request_gi(model),
        memory_limit_gi=math.floor(vllm_memory_request_gi(model) * ratio),
        gpus=model.gpus,
        gpu_resource_name=model.gpu_resource,
        ephemeral_request_gi=c.VLLM_SCRATCH_SIZE_GI,
        ephemeral_limit_gi=ephemeral_limit_within(c.VLLM_SCRATCH_SIZE_GI),
    )


def ephemeral_limit_within(request_gi: int) -> int:
    """The largest whole-GiB ephemeral-storage limit within NRP's 1.2 x request rule."""
    return math.floor(request_gi * c.NRP_LIMIT_TO_REQUEST_MAX_RATIO)


def worker_resources(config: GraceConfig) -> ContainerResources:
    """The worker is an I/O-bound asyncio client: one core, a little memory, no GPU.

    CPU may burst to NRP's 1.2x (rounded down); memory limit = request, so an out-of-memory kill is
    predictable instead of depending on what else runs on the node.
    """
    jobs = config.jobs
    return ContainerResources(
        cpu_request=jobs.cpu_request,
        cpu_limit=cpu_limit_within(jobs.cpu_request, c.WORKER_CPU_LIMIT_RATIO),
        memory_request_gi=jobs.memory_request_gi,
        memory_limit_gi=jobs.memory_request_gi,
        gpus=0,
        gpu_resource_name=cluster_facts.GENERIC_GPU_RESOURCE,  # no GPU: the name is never rendered
        # Node-local disk: /tmp (an emptyDir, the root filesystem is read-only), the job-mode run-state
        # emptyDir and the container's log; a whole GiB above /tmp's size limit covers the rest.
        ephemeral_request_gi=WORKER_TMP_SIZE_GI + 1,
        ephemeral_limit_gi=WORKER_TMP_SIZE_GI + 1,
    )
