"""docs/experiment-jobs.md quotes the lines `grace render --stack nrp` prints under its GPU-hour table: the
requests per row and the sampling it plans with (keyed by design and study) must be the render's own.

Only the lines that follow from the study files and the stack are compared; the rows and token lines
name the CSVs found on this machine (the real ones, or the fixtures a fresh clone renders with).
"""

from __future__ import annotations

import pytest

from grace_infra.commands.render import render
from grace_infra.config.stack_files import PROJECT_ROOT
from grace_infra.planning.gpu_hours import format_gpu_hour_table

DOC = PROJECT_ROOT / "docs" / "experiment-jobs.md"
QUOTED = ("Requests per row:", "Sampling (")


@pytest.fixture(scope="module")
def printed_lines() -> list[str]:
    table = format_gpu_hour_table(render("nrp").plan["gpuHours"])
    return [line for line in table.splitlines() if line.startswith(QUOTED)]


def test_the_doc_quotes_the_plan_lines_the_render_prints(printed_lines: list[str]) -> None:
    assert len(printed_lines) == len(QUOTED)
    doc_lines = DOC.read_text(encoding="utf-8").splitlines()
    assert [line for line in doc_lines if line.startswith(QUOTED)] == printed_lines
