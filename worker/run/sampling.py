"""N samples per input row: which sample a work item is, and the seed it is sent with.

The runner expands every input row into `samples_per_row` work items `(row_index, sample_index)`; each
becomes one output row carrying `sample` and `seed`. Seeds are derived, never drawn, so a rerun (another
process, another Python, another machine) sends every sample with the seed it was first sent with, and a
resumed run cannot tell which samples it answered itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["SEED_LIMIT", "Sample", "derive_seed"]

# vLLM takes `seed` as a signed 64-bit integer, but torch's and numpy's generators only take 32 bits on
# some paths; staying below 2**31 - 1 keeps every seed valid everywhere it may be forwarded.
SEED_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class Sample:
    """One of the `samples_per_row` answers a pipeline gives for an input row."""

    index: int  # 0 .. samples_per_row - 1
    seed: int  # derive_seed(base_seed, row_index, index); send it with every request of this sample


def derive_seed(base_seed: int, row_index: int, sample_index: int) -> int:
    """A seed in [0, 2**31 - 1) fixed by the three numbers alone.

    SHA-256 over their decimal text: Python's `hash()` is salted per process and `random` changes between
    versions, so neither would give a rerun the same seeds.
    """
    digest = hashlib.sha256(f"{base_seed}:{row_index}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % SEED_LIMIT
