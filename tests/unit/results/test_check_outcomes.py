"""`grace results check` counts each output's rows by outcome (complete, partial, empty, failed) and lists
the extraction's warnings: on an extraction output the REAL worker writes (against the fake extractor),
with one row coded completely, one missing a field, one whose percentages add up to 274, one failed; and
the item table `grace results tidy` builds from the same (chat design) extraction output."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from grace_infra.commands.results import subcommands
from grace_infra.commands.results.analysis import analysis_tables
from grace_infra.commands.results.check import check_outputs, discover_outputs
from grace_infra.commands.results.outputs import read_output
from tests.support.fake_openai import FakeOpenAI
from tests.unit.worker.support import STUDIES_DIR, Extractor, good, study1_row, worker_args, write_csv
from worker import cli

REPLY = "Initial answer: 3. 0: 0% 1: 5% 2: 25% 3: 70%. Knows exactly: no"  # not the parser's format
STRUCTURED = "structured/tiny/study1_structured.csv"


def _study_with_extraction() -> Path:
    """The study 1 file whichever design folder holds it that has an extraction section."""
    found = [p for p in sorted(STUDIES_DIR.rglob("study1.yaml")) if "\nextraction:" in p.read_text()]
    assert found, f"no study1.yaml under {STUDIES_DIR} has an extraction section"
    return found[0]


@pytest.fixture
def claim(tmp_path: Path) -> Iterator[Path]:
    extractor = Extractor()
    with FakeOpenAI() as server:
        extractor.install(server)
        yield _extract(server, extractor, tmp_path)


def _extract(server: FakeOpenAI, extractor: Extractor, tmp_path: Path) -> Path:
    extractor.script("complete", good())
    extractor.script("partial", good(knowledge_answer=None))
    extractor.script("warned", good(probability_0=70, probability_1=70, probability_2=64, probability_3=70))
    rows = [
        study1_row("complete", f"ROW-complete {REPLY}"),
        study1_row("partial", f"ROW-partial {REPLY}"),
        study1_row("warned", f"ROW-warned {REPLY}"),
        study1_row("failed", "", error="gave up after 6 attempts: HTTP 503: overloaded"),
    ]
    root = tmp_path / "claim"
    output = root / STRUCTURED
    argv = worker_args(
        "extract", server.base_url, output,
        input=write_csv(tmp_path / "exp1.csv", rows), study=_study_with_extraction(), backoff_base=0.01,
        wait_timeout=5, max_retries=0,
    )  # fmt: skip
    assert cli.main(argv) in (0, 3)
    return root


def test_check_counts_partial_rows_and_lists_the_warnings(
    claim: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (check,) = check_outputs(claim)
    assert (check.complete_rows, check.partial_rows, check.empty_rows, check.failed_rows) == (2, 1, 0, 1)
    assert check.warned_rows == 1
    (warning,) = check.warnings
    assert warning.endswith("= N, expected 100 +/- 1 (N: 274)")
    assert subcommands.main(["check", str(claim)]) == 0
    out = capsys.readouterr().out
    header, _, line = out.splitlines()[:3]
    assert header.split()[2:8] == ["rows", "complete", "partial", "empty", "failed", "warned"]
    assert line.split()[2:8] == ["4/4", "2", "1", "0", "1", "1"]
    assert "extraction warnings:" in out
    assert f"{STRUCTURED}: 1 row(s): {warning}" in out


def test_the_chat_designs_extraction_fills_the_item_table(claim: Path) -> None:
    """The chat design asks for four percentages: X0..X3 are the extraction's, the knowledge share its
    `knowledge_answer`; the failed row has none, the partial one no knowledge answer."""
    (tables,) = analysis_tables(read_output(path) for path in discover_outputs(claim))
    assert (tables.study, tables.experiment) == ("study1", "exp1")
    items = tables.items.set_index("story_shortname")
    expected = {
        "story-complete": (0, 5, 25, 70),
        "story-partial": (0, 5, 25, 70),
        "story-warned": (70, 70, 64, 70),
    }
    for story, percents in expected.items():
        assert [items.loc[story, f"X{k}"] for k in range(4)] == list(percents)
    assert items.loc["story-complete", "knows_yes"] == 0.0  # "no"
    assert math.isnan(items.loc["story-partial", "knows_yes"])
    assert items.loc["story-failed", "n_coded"] == 0
    assert math.isnan(items.loc["story-failed", "X0"])
