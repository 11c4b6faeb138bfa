"""The measured part of the vLLM host-memory estimate (constants.VLLM_HOST_PROCESS_GI), read from the
real vLLM server's processes: the resident memory of each process the tiny CPU server runs (the API
server, the engine core, the worker), from /proc. The CPU build's worker also holds the CPU backend's
KV cache (VLLM_CPU_KVCACHE_SPACE), which a GPU server keeps on the GPU: it is taken out of the worker.
The CUDA part of the estimate cannot be measured without a GPU and is not checked here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from grace_infra import constants as c

pytestmark = pytest.mark.vllm

GI = 1024**3


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line)


def _kib(value: str) -> int:
    return int(value.split(maxsplit=1)[0]) * 1024


def _group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except ProcessLookupError:
                continue
    return pids


def test_each_vllm_process_stays_within_the_per_process_allowance(vllm_server) -> None:
    if vllm_server.pid is None:
        pytest.skip("a reused server: its processes are not ours to read")
    import tiny_vllm  # noqa: PLC0415 (loaded by the integration conftest)

    resident = {}
    for pid in _group(vllm_server.pid):
        status = _status(pid)
        name = status.get("Name", "").strip()
        rss = _kib(status["VmRSS"]) if "VmRSS" in status else 0
        if rss > 100 * 1024**2:  # the vLLM processes, not the resource tracker or a shell
            resident[pid] = (name, rss)
    names = sorted(name for name, _ in resident.values())
    assert len(resident) >= 2, names  # at least the API server and the engine core
    for name, rss in resident.values():
        held = rss - (tiny_vllm.KV_CACHE_GIB * GI if "Worker" in name else 0)
        print(f"{name}: {rss / GI:.2f} GiB resident, {held / GI:.2f} GiB without the CPU KV cache")
        assert held <= c.VLLM_HOST_PROCESS_GI * GI, (name, rss)
