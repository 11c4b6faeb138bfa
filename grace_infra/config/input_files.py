"""Where the study CSVs come from when the stack is rendered offline (tests, `render`, CI).

The nrp stack ships both study CSVs in the studies ConfigMap (`grace:experiments.inputFiles`, paths
relative to the project root): a researcher keeps them in `data/` (ignored by git; the researchers'
own repository has them at data/study1.csv and data/study2.csv), and `pulumi up` reads exactly those
files. A checkout without them (this repository's CI, a newcomer's first render) substitutes, for each
configured file that does not exist: `../shared/data/<file name>` when present (the real CSVs beside
the checkout), else `tests/fixtures/<study>_small.csv`. Only the offline render and the tests do this,
and `render` prints every substitution; the program itself never does: under `pulumi up` a missing
file is a one-line ConfigError naming the key.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["InputSubstitution", "offline_input_files"]

_INPUT_FILES = "inputFiles"


@dataclass(frozen=True)
class InputSubstitution:
    """One configured study CSV that is not in the checkout, and what the offline render read instead."""

    study: str
    configured: str  # the inputFiles value `pulumi up` reads, e.g. data/study1.csv
    stand_in: Path  # ../shared/data/<file name>, or a test fixture
    is_fixture: bool  # a few test rows, not the study: the plan's figures are not the campaign's

    @property
    def note(self) -> str:
        return (
            f"grace:experiments.inputFiles.{self.study}={self.configured} is not in this checkout; rendered "
            f"with {self.stand_in} instead (`pulumi up` reads {self.configured})"
        )


def offline_input_files(
    raw: Mapping[str, Any], project_root: Path
) -> tuple[dict[str, Any], list[InputSubstitution]]:
    """`raw` (grace:* keys without the prefix) with missing inputFiles replaced as the module doc says,
    and each replacement."""
    result = copy.deepcopy(dict(raw))
    experiments = result.get("experiments")
    files = experiments.get(_INPUT_FILES) if isinstance(experiments, dict) else None
    if not isinstance(files, dict):
        return result, []
    notes: list[InputSubstitution] = []
    for study, local in files.items():
        path = Path(str(local))
        if (path if path.is_absolute() else project_root / path).is_file():
            continue
        shared = project_root.parent / "shared" / "data" / path.name
        fixture = project_root / "tests" / "fixtures" / f"{study}_small.csv"
        stand_in = shared if shared.is_file() else fixture
        files[study] = str(stand_in)
        notes.append(InputSubstitution(str(study), str(local), stand_in, is_fixture=stand_in == fixture))
    return result, notes
