"""Facts about the National Research Platform's cluster (Nautilus) as data, each with its public source.

Pure data and lookups: config parsing, policy, the pod builders and the plan all read these tables, so
a fact changes in exactly one place. docs/nrp-cluster.md lists every fact with its source and what
the program does about it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "ARM64_TOLERATIONS",
    "BLOCK_STORAGE_CLASSES",
    "FILESYSTEM_STORAGE_CLASSES",
    "GENERIC_GPU_RESOURCE",
    "GPU_KINDS",
    "GPU_SOURCE",
    "KNOWN_STORAGE_CLASSES",
    "POLICY_SOURCE",
    "PURGE_PRONE_STORAGE_CLASSES",
    "RESERVATION_TAINT_KEY",
    "SPECIAL_USE_SOURCE",
    "STORAGE_SOURCE",
    "GpuKind",
    "gpu_kind_for_product",
    "gpu_memory_gb",
    "gpu_resource_for_product",
    "known_gpu_resources",
]

GPU_SOURCE = "https://nrp.ai/documentation/userdocs/running/gpu-pods"
STORAGE_SOURCE = "https://nrp.ai/documentation/userdocs/storage/ceph"
POLICY_SOURCE = "https://nrp.ai/documentation/userdocs/start/policies/"
SPECIAL_USE_SOURCE = "https://nrp.ai/documentation/userdocs/running/special"

# --- GPUs ----------------------------------------------------------------------------------------

# Every GPU NRP does not list as special is advertised under the device plugin's default resource.
GENERIC_GPU_RESOURCE = "nvidia.com/gpu"
# NRP's taint system (SPECIAL_USE_SOURCE, "All Taints"): `nautilus.io/reservation` marks user-facing
# reservations, which "Users can only tolerate ... if they are part of an approved group";
# `nautilus.io/hardware` special hardware nodes "users should not land on by default but are permitted
# to tolerate if needed"; the page maps the former one-key taints onto these (nautilus.io/csusb=true ->
# nautilus.io/reservation=csusb:NoSchedule). A reserved pool is tolerated through grace:gpu.tolerations.
RESERVATION_TAINT_KEY = "nautilus.io/reservation"
# Grace Hopper nodes are arm64 and tainted; pods must tolerate the taint (GPU_SOURCE, "Requesting
# special GPUs") and run arm64 images. The GPU page names `nautilus.io/arm64`; under the taint system
# above, special hardware is tainted `nautilus.io/hardware` (arm64 nodes: nautilus.io/hardware=arm64).
# Both are rendered: a toleration of a taint no node carries changes nothing, and `grace preflight`
# reads the taints the GH200 nodes really carry.
ARM64_TOLERATIONS = (
    {"key": "nautilus.io/hardware", "operator": "Equal", "value": "arm64", "effect": "NoSchedule"},
    {"key": "nautilus.io/arm64", "operator": "Exists", "effect": "NoSchedule"},
)


@dataclass(frozen=True)
class GpuKind:
    """One kind of NRP GPU: the extended resource its nodes advertise and how to recognise its nodes."""

    name: str  # as NRP's GPU page names it
    resource: str  # the extended resource a pod must request (and limit) to land on these nodes
    product_pattern: str  # regex over the `nvidia.com/gpu.product` node label value
    memory_gb: float | None  # memory of one GPU (NRP's GPU type table), None where it varies by model
    reservation: bool = False  # namespace quota for this resource is 0 until NRP raises it
    arm64: bool = False  # nodes are arm64 and need ARM64_TOLERATIONS

    def matches(self, product: str) -> bool:
        return re.search(self.product_pattern, product) is not None


# NRP's "Requesting special GPUs" table (GPU_SOURCE). Order matters: the first match wins, so the MIG
# slice comes before the A100 it is cut from. Patterns match the GPU Feature Discovery label values,
# e.g. NVIDIA-A100-SXM4-80GB, NVIDIA-A100-80GB-PCIe, NVIDIA-RTX-A6000, Quadro-RTX-8000, NVIDIA-GH200-480GB.
# A100, H100, H200 and GH200 are gated by a per-namespace quota that is 0 by default: A100 access is
# requested through NRP's reservation form, H100/H200/GH200 are not user-requestable.
GPU_KINDS: tuple[GpuKind, ...] = (
    GpuKind("NVIDIA A100 MIG 1g.10gb", "nvidia.com/mig-small", r"A100.*MIG-1g\.10gb", 10),
    GpuKind("NVIDIA GH200 Grace Hopper", "nvidia.com/gh200", r"GH200", 96, reservation=True, arm64=True),
    GpuKind("NVIDIA H200", "nvidia.com/h200", r"H200", 141, reservation=True),
    GpuKind("NVIDIA H100", "nvidia.com/h100", r"H100", None, reservation=True),  # 80 GB SXM, 94 GB NVL
    GpuKind("NVIDIA A100", "nvidia.com/a100", r"A100", None, reservation=True),
    GpuKind("NVIDIA A40", "nvidia.com/a40", r"(^|-)A40$", 48),
    GpuKind("NVIDIA RTX A6000", "nvidia.com/rtxa6000", r"RTX-A6000$", 48),
    GpuKind("NVIDIA Quadro RTX 8000", "nvidia.com/rtx8000", r"Quadro-RTX-8000", 48),
    GpuKind("NVIDIA RTX PRO 6000 Blackwell", "nvidia.com/rtx6000bw", r"RTX-PRO-6000-Blackwell", 96),
)

# 48 GB cards of the generic pool (NRP's GPU type table lists the L40 at 48 GB; the L40S has the same).
GENERIC_POOL_MEMORY_GB = {"NVIDIA-L40": 48.0, "NVIDIA-L40S": 48.0}


def gpu_kind_for_product(product: str) -> GpuKind | None:
    """The special GPU kind a node product belongs to; None for the generic pool."""
    return next((kind for kind in GPU_KINDS if kind.matches(product)), None)


def gpu_resource_for_product(product: str | None) -> str:
    """The extended resource a pod selecting `product` must request to schedule on its nodes."""
    kind = gpu_kind_for_product(product) if product else None
    return kind.resource if kind else GENERIC_GPU_RESOURCE


def known_gpu_resources() -> tuple[str, ...]:
    """Every GPU resource name NRP advertises."""
    return (GENERIC_GPU_RESOURCE, *(kind.resource for kind in GPU_KINDS))


_LABEL_MEMORY = re.compile(r"(\d+)GB", re.IGNORECASE)


def gpu_memory_gb(product: str | None, configured_gb: float) -> float:
    """Memory of one GPU of `product`: the GPU table's size, else the size its label names
    (NVIDIA-A100-PCIE-40GB -> 40), else `configured_gb` (grace:gpu.memoryGb). The table comes first:
    NVIDIA-GH200-480GB names the node's memory, not its GPU's 96 GB."""
    if not product:
        return configured_gb
    kind = gpu_kind_for_product(product)
    if kind and kind.memory_gb:
        return float(kind.memory_gb)
    if product in GENERIC_POOL_MEMORY_GB:
        return GENERIC_POOL_MEMORY_GB[product]
    match = _LABEL_MEMORY.search(product)
    return float(match.group(1)) if match else configured_gb


# --- storage -------------------------------------------------------------------------------------

# "Currently available storageClasses" (STORAGE_SOURCE). CephFS classes are ReadWriteMany; RBD
# (rook-ceph-block*) classes attach to one node at a time (ReadWriteOnce).
FILESYSTEM_STORAGE_CLASSES = frozenset({
    "rook-cephfs",  # US West
    "rook-cephfs-central",
    "rook-cephfs-east",
    "rook-cephfs-south-east",
    "rook-cephfs-pacific",
    "rook-cephfs-haosu",  # restricted to the Hao Su and Ravi cluster
    "rook-cephfs-tide",  # restricted to the SDSU Tide cluster
    "rook-cephfs-fullerton",
    "rook-cephfs-ucsd",  # purge-prone: see PURGE_PRONE_STORAGE_CLASSES
})
BLOCK_STORAGE_CLASSES = frozenset({
    "rook-ceph-block",  # US West, the cluster default
    "rook-ceph-block-central",
    "rook-ceph-block-east",
    "rook-ceph-block-south-east",
    "rook-ceph-block-pacific",
    "rook-ceph-block-tide",  # restricted to the SDSU Tide cluster
    "rook-ceph-block-fullerton",
})
KNOWN_STORAGE_CLASSES = FILESYSTEM_STORAGE_CLASSES | BLOCK_STORAGE_CLASSES
# "We reserve the right to purge any data that's staying there longer than needed at admin's
# discretion without any notifications" (STORAGE_SOURCE, UCSD NVMe CephFS filesystem policy).
PURGE_PRONE_STORAGE_CLASSES = frozenset({"rook-cephfs-ucsd"})
