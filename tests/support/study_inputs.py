"""Small input files for tests that run the worker: the first rows of a study's CSV.

The real study file when ../shared/data holds it (the user's data: read, never committed), else the
project's fixture, so a test runs on real rows wherever they exist.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
FIXTURES = REPO / "tests" / "fixtures"


def first_rows(study: str, rows: int, folder: Path) -> Path:
    """`folder/<study>.csv` holding the first `rows` rows of the study's CSV, every value as written."""
    source = SHARED_DATA / f"{study}.csv"
    if not source.exists():
        source = FIXTURES / f"{study}_small.csv"
    target = folder / f"{study}.csv"
    pd.read_csv(source, dtype=str, keep_default_na=False).head(rows).to_csv(target, index=False)
    return target
