"""`worker extract` against the REAL vLLM 0.32 server (tiny random model, xgrammar, no-whitespace JSON).

The model's text is random, so these tests assert structure and validity, never values: the probe finds
json_schema enforced; every row ends schema-valid or carrying its error; Experiment 1's columns and row
order survive; on the project's exp1-shaped fixtures every row that has a response extracts cleanly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import pytest

from tests.support.contracts import SAMPLE_COLUMNS
from worker import cli

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
SHARED_DATA = REPO.parent / "shared" / "data"
STATUS = [
    "extraction_method",
    "extraction_self_coded",
    "extraction_errors",
    "extraction_attempts",
    "extraction_warnings",
]


def schema_of(study: str) -> dict[str, Any]:
    return json.loads(
        (REPO / "jobs" / "schemas" / "chat" / f"{study}_schema.json").read_text(encoding="utf-8")
    )


def cell_value(text: str, spec: dict[str, Any]) -> Any:
    """A CSV cell back as the JSON value it was written from (empty = null)."""
    if text == "":
        return None
    types = {branch.get("type") for branch in spec.get("anyOf", [spec])}
    return int(text) if "integer" in types else text


def assert_valid_or_error(frame: pd.DataFrame, study: str) -> int:
    """Every row is schema-valid with no error, or carries an error and no values; the valid count."""
    schema = schema_of(study)
    validator = jsonschema.Draft202012Validator(schema)
    properties = schema["properties"]
    valid = 0
    for index, row in frame.iterrows():
        values = {name: cell_value(row[name], spec) for name, spec in properties.items()}
        if row["extraction_errors"]:
            assert all(value is None for value in values.values()), (index, values)
        else:
            assert validator.is_valid(values), (index, values)
            # The parser codes an exact-format reply without a request; the model needs at least one.
            assert (int(row["extraction_attempts"]) >= 1) == (row["extraction_method"] != "parser")
            valid += 1
    return valid


def extract(server: Any, source: Path, output: Path, study: str, *extra: str) -> int:
    return cli.main([
        "extract", "--input", str(source), "--output", str(output), "--study", f"chat/{study}",
        "--model-endpoint", server.base_url, "--model-name", server.served_name,
        "--metrics-port", "0", "--max-retries", "2", *extra,
    ])  # fmt: skip


@pytest.mark.parametrize("study", ["study1", "study2"])
def test_extract_exp1_shaped_rows(vllm_server: Any, tmp_path: Path, study: str) -> None:
    source = tmp_path / "exp1.csv"
    shutil.copy(FIXTURES / "extract" / f"{study}_exp1.csv", source)
    output = tmp_path / "structured.csv"

    # One request at a time: the same batches every run, so greedy decoding of the seeded model repeats.
    code = extract(vllm_server, source, output, study, "--batch-size", "1")

    assert code in (0, 3)
    exp1 = pd.read_csv(source, dtype=str, keep_default_na=False)
    frame = pd.read_csv(output, dtype=str, keep_default_na=False)
    # The fixture predates sample/seed columns, so extraction adds them (a query output carries them).
    assert list(frame.columns) == [*exp1.columns, *SAMPLE_COLUMNS, *schema_of(study)["properties"], *STATUS]
    pd.testing.assert_frame_equal(frame[list(exp1.columns)], exp1)
    reply = "response_speech" if study == "study1" else "model_response"
    answered = exp1[reply] != ""
    # Constrained decoding plus validation: every row that has a response extracts to schema-valid values.
    assert assert_valid_or_error(frame, study) == answered.sum()
    no_response = frame[~answered]
    assert (no_response["extraction_attempts"] == "0").all()
    assert no_response["extraction_errors"].str.startswith("no_response:").all()
    meta = json.loads(output.with_name(output.name + ".meta.json").read_text())
    structured = meta["server"]["pipeline_findings"]["structured_output"]
    assert structured["backend"] == "json_schema"
    assert structured["probes"] == [
        "json_schema: enforced (the reply is exactly the only object the schema allows)"
    ]
    assert (code == 3) == bool((frame["extraction_errors"] != "").any())


def test_query_then_extract_end_to_end(vllm_server: Any, tmp_path: Path) -> None:
    """Experiment 1 with `worker query` on real study rows, then extraction waiting for its output."""
    source = SHARED_DATA / "study1.csv"
    if not source.is_file():
        source = FIXTURES / "study1_small.csv"
    exp1 = tmp_path / "exp1.csv"
    code = cli.main([
        "query", "--input", str(source), "--output", str(exp1), "--study", "chat/study1",
        "--model-endpoint", vllm_server.base_url, "--model-name", vllm_server.served_name,
        "--metrics-port", "0", "--limit", "4", "--max-tokens", "12",
    ])  # fmt: skip
    assert code in (0, 3)
    output = tmp_path / "structured.csv"

    code = extract(vllm_server, exp1, output, "study1", "--wait-for-input", "30", "--batch-size", "4")

    assert code in (0, 3)
    exp1_frame = pd.read_csv(exp1, dtype=str, keep_default_na=False)
    frame = pd.read_csv(output, dtype=str, keep_default_na=False)
    # The study's sampling: 4 rows x 5 samples, each sample coded once, its sample and seed kept.
    assert len(exp1_frame) == len(frame) == 20
    assert frame["sample"].tolist() == ["0", "1", "2", "3", "4"] * 4
    pd.testing.assert_frame_equal(frame[list(exp1_frame.columns)], exp1_frame)
    assert_valid_or_error(frame, "study1")
