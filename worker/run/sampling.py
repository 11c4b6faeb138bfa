"""N samples per input row: which sample a work item is, and the seed it is sent with.

The runner expands every input row into `samples_per_row` work items `(row_index, sample_index)`; each
becomes one output row carrying `sample` and `seed`. Seeds are computed, never drawn, so a rerun (another
process, another Python, another machine) sends every sample with the seed it was first sent with, and a
resumed run cannot tell which samples it answered itself. Two rules (a study's `sampling.seed_rule`):

- `derive_seed`: each (row, sample) its own seed, hashed from the base seed and both indices;
- `replication_seed`: one seed per sample index, shared by every row, as the researchers' replicated Jobs
  did (a replication is one pass over every row, `--seed BASE_SEED + REPLICATION_ID` plus a fixed offset
  per script: tgmorton/knowledge-politeness-llms `templates/replicated-job.yaml.j2:128`,
  `src/utils/replication.py:48-53`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from worker.constants import SEED_LIMIT

__all__ = ["SEED_LIMIT", "Sample", "derive_seed", "replication_seed"]


@dataclass(frozen=True)
class Sample:
    """One of the `samples_per_row` answers a pipeline gives for an input row."""

    index: int  # 0 .. samples_per_row - 1
    seed: int  # the pipeline's seed rule (Pipeline.sample_seed); send it with every request of this sample


def derive_seed(base_seed: int, row_index: int, sample_index: int) -> int:
    """A seed in [0, 2**31 - 1) fixed by the three numbers alone.

    SHA-256 over their decimal text: Python's `hash()` is salted per process and `random` changes between
    versions, so neither would give a rerun the same seeds.
    """
    digest = hashlib.sha256(f"{base_seed}:{row_index}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % SEED_LIMIT


def replication_seed(base_seed: int, sample_index: int, offset: int) -> int:
    """The seed of every request of sample `sample_index`, whatever the row: base + sample + offset."""
    return base_seed + sample_index + offset
