"""The researchers' Experiment 1 design (jobs/studies/researchers/) against the real vLLM server (tiny
random-weight model): raw prompts to /v1/completions, end to end.

The model's text is random, so these tests check structure and the server's own facts. The worker runs
one request at a time (`--batch-size 1`) with the study's seeds, so the same body sent again alone gets the
same text: that is how the stripped cells are checked against what the server wrote, and the server's
prompt token count against `/tokenize` on the raw text (no chat template, no role markers, was applied).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.support.contracts import COMPLETION_RECORD_COLUMNS, RESEARCHERS_REPLY_COLUMNS, SAMPLE_COLUMNS

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
STUDIES = REPO / "jobs" / "studies" / "researchers"
ROWS = 4
MAX_TOKENS = {"study1": 100, "study2": 50}  # the researchers' max_tokens_text / max_tokens_structured
SEED = {"study1": 42, "study2": 42 + 1000}  # base seed 42, replication 0, their per-script offset
STOP = ["<end_of_turn>"]  # Gemma-2's list, as a Job passes it; vLLM takes any strings


def study_rows(study: str, tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """The first rows of the real study file when ../shared/data has it, else the project's fixture."""
    source = SHARED_DATA / f"{study}.csv"
    if not source.exists():
        source = REPO / "tests" / "fixtures" / f"{study}_small.csv"
    frame = pd.read_csv(source, dtype=str, keep_default_na=False).head(ROWS)
    path = tmp_path / f"{study}_input.csv"
    frame.to_csv(path, index=False)
    return path, frame


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def test_the_researchers_design_end_to_end(vllm_server: Any, tmp_path: Path) -> None:
    # The random model's text has white space around it only sometimes (a Study 2 reply rarely starts
    # with a space), so whether stripping had work to do is counted over both studies.
    unstripped = sum(run_study(vllm_server, tmp_path / study, study) for study in ("study1", "study2"))
    assert unstripped > 0


def run_study(vllm_server: Any, workdir: Path, study: str) -> int:
    """Run the study's first rows, check the output, and count the replies the server wrapped in white
    space."""
    workdir.mkdir()
    source, frame = study_rows(study, workdir)
    output = workdir / "out.csv"
    args = [
        sys.executable, "-m", "worker", "query",
        "--input", str(source), "--output", str(output), "--study", str(STUDIES / f"{study}.yaml"),
        "--model-endpoint", vllm_server.base_url, "--model-name", vllm_server.served_name,
        "--samples", "1", "--batch-size", "1", "--stop", json.dumps(STOP),
        "--metrics-port", "0", "--wait-timeout", "60",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    result = pd.read_csv(output, dtype=str, keep_default_na=False)
    replies = RESEARCHERS_REPLY_COLUMNS[study]
    assert list(result.columns) == [*frame.columns, *SAMPLE_COLUMNS, *replies, *COMPLETION_RECORD_COLUMNS]
    pd.testing.assert_frame_equal(result[frame.columns], frame)
    assert (result["error"] == "").all()  # vLLM accepted every raw completion request
    assert (result["model_name"] == vllm_server.served_name).all()
    assert (result["seed"] == str(SEED[study])).all()
    assert (result["attempts"] == str(len(replies))).all()
    assert all(set(json.loads(reasons)) <= {"stop", "length"} for reasons in result["finish_reasons"])
    parameters = json.loads((workdir / "out.csv.meta.json").read_text())["parameters"]
    assert parameters["form"] == "completion"
    assert parameters["generation"] == {"temperature": 0.3, "max_tokens": MAX_TOKENS[study], "stop": STOP}

    unstripped = 0
    for _, row in result.iterrows():
        for column, prompt in zip(replies, json.loads(row["prompts"]), strict=True):
            body = {
                "model": vllm_server.served_name, "prompt": prompt, "temperature": 0.3,
                "max_tokens": MAX_TOKENS[study], "stop": STOP, "seed": SEED[study],
            }  # fmt: skip
            again = post(f"{vllm_server.base_url}/completions", body)
            text = again["choices"][0]["text"]
            assert row[column] == text.strip()  # the server's own text, stripped
            unstripped += text != text.strip()
            # The raw text was tokenized as it is: no chat template added anything to it.
            tokens = post(f"{vllm_server.root_url}/tokenize", {"model": body["model"], "prompt": prompt})
            assert again["usage"]["prompt_tokens"] == tokens["count"]
    return unstripped
