"""What one GPU can do, from NVIDIA's datasheets: memory bandwidth and dense 16-bit Tensor Core throughput.

The GPU-hour plan prices the matrix with these two numbers (planning/serving_speed.py): generating a
token streams every weight from GPU memory once per decode step (bandwidth-bound), reading a prompt is
matrix multiplication (compute-bound). Figures are the datasheets' dense numbers, never the "with sparsity"
ones (vLLM runs dense weights). Pure data and one lookup, like nrp/cluster_facts.py's tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["GPU_PERFORMANCE", "GpuPerformance", "gpu_performance"]


@dataclass(frozen=True)
class GpuPerformance:
    """One GPU product's datasheet figures."""

    name: str
    product_pattern: str  # regex over the `nvidia.com/gpu.product` node label value
    memory_bandwidth_gb_s: float  # GB/s (10^9 bytes per second)
    dense_tflops_16bit: float  # dense BF16 (FP16 where the GPU has no BF16) Tensor Core TFLOPS
    source: str

    def matches(self, product: str) -> bool:
        return re.search(self.product_pattern, product) is not None


_A100 = "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"
_H100 = "https://resources.nvidia.com/en-us-gpu-resources/h100-datasheet-24306"
_H200 = "https://www.nvidia.com/en-us/data-center/h200/"
_GH200 = "https://resources.nvidia.com/en-us-grace-cpu/grace-hopper-superchip"
_L40 = "https://images.nvidia.com/content/Solutions/data-center/vgpu-L40-datasheet.pdf"
_L40S = "https://resources.nvidia.com/en-us-l40s/l40s-datasheet-28413"
_A40 = "https://images.nvidia.com/content/Solutions/data-center/a40/nvidia-a40-datasheet.pdf"
_A6000 = "https://www.nvidia.com/content/dam/en-zz/Solutions/design-visualization/quadro-product-literature/proviz-print-nvidia-rtx-a6000-datasheet-us-nvidia-1454980-r9-web%20(1).pdf"
_RTX8000 = "https://www.nvidia.com/content/dam/en-zz/Solutions/design-visualization/quadro-product-literature/quadro-rtx-8000-us-nvidia-946977-r1-web.pdf"

# Order matters: the first match wins, so the 40 GB A100s and the H100 variants come before the
# patterns that would also match them. Labels as GPU Feature Discovery writes them (nrp/cluster_facts.py).
GPU_PERFORMANCE: tuple[GpuPerformance, ...] = (
    GpuPerformance("NVIDIA A100 40GB", r"A100.*40GB", 1555, 312, _A100),
    GpuPerformance("NVIDIA A100 80GB PCIe", r"A100.*80GB-PCIe|A100-PCIE-80GB", 1935, 312, _A100),
    GpuPerformance("NVIDIA A100 80GB SXM", r"A100", 2039, 312, _A100),
    GpuPerformance("NVIDIA GH200", r"GH200", 4000, 989, _GH200),
    GpuPerformance("NVIDIA H200", r"H200", 4800, 989, _H200),
    GpuPerformance("NVIDIA H100 NVL", r"H100.*NVL", 3900, 835, _H100),
    GpuPerformance("NVIDIA H100 PCIe", r"H100.*PCIe", 2000, 756, _H100),
    GpuPerformance("NVIDIA H100 SXM", r"H100", 3350, 989, _H100),
    GpuPerformance("NVIDIA L40S", r"L40S", 864, 362, _L40S),
    GpuPerformance("NVIDIA L40", r"L40$", 864, 181, _L40),
    GpuPerformance("NVIDIA A40", r"(^|-)A40$", 696, 150, _A40),
    GpuPerformance("NVIDIA RTX A6000", r"RTX-A6000$", 768, 155, _A6000),
    # Turing has no BF16: FP16 Tensor Core figure.
    GpuPerformance("NVIDIA Quadro RTX 8000", r"Quadro-RTX-8000", 672, 130, _RTX8000),
)


def gpu_performance(product: str | None) -> GpuPerformance | None:
    """The datasheet figures of `product`, or None for a product the table does not know."""
    if not product:
        return None
    return next((gpu for gpu in GPU_PERFORMANCE if gpu.matches(product)), None)
