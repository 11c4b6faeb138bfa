"""`worker query` against the real vLLM server (tiny random-weight model): the whole pipeline end to end.

The model's text is random, so these tests check structure, counts and the server's own facts, never
wording. Requests ask for few tokens (`--max-tokens 8`) to keep a 2-core CPU server quick.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.support.contracts import (
    SAMPLE_COLUMNS,
    STUDY1_QUERY_ADDED_COLUMNS,
    STUDY1_REPLY_COLUMNS,
    STUDY2_QUERY_ADDED_COLUMNS,
    STUDY2_REPLY_COLUMNS,
)
from worker.errors import RequestRejected
from worker.server.client import ModelClient
from worker.server.client_options import ClientOptions

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
ROWS = 4
REPLY_COLUMNS = {"study1": STUDY1_REPLY_COLUMNS, "study2": STUDY2_REPLY_COLUMNS}
QUERY_ADDED_COLUMNS = {"study1": STUDY1_QUERY_ADDED_COLUMNS, "study2": STUDY2_QUERY_ADDED_COLUMNS}


def study_rows(study: str, rows: int, tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """The first rows of the real study file when ../shared/data has it, else the project's fixture."""
    source = SHARED_DATA / f"{study}.csv"
    if not source.exists():
        source = REPO / "tests" / "fixtures" / f"{study}_small.csv"
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    frame = pd.concat([frame] * (rows // len(frame) + 1), ignore_index=True).head(rows)
    path = tmp_path / f"{study}_input.csv"
    frame.to_csv(path, index=False)
    return path, frame


def command(server: Any, study: str, source: Path, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "worker", "query",
        "--input", str(source), "--output", str(output),
        "--model-endpoint", server.base_url, "--model-name", server.served_name,
        "--study", f"chat/{study}", "--max-tokens", "8", "--metrics-port", "0", "--wait-timeout", "60",
        # One answer per row (the study's own setting is 5): these tests count rows, not samples.
        "--samples", "1",
        *extra,
    ]  # fmt: skip


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.mark.parametrize("study", ["study1", "study2"])
def test_query_end_to_end(vllm_server: Any, tmp_path: Path, study: str) -> None:
    source, frame = study_rows(study, ROWS, tmp_path)
    output = tmp_path / "out.csv"
    done = run(command(vllm_server, study, source, output))
    assert done.returncode == 0, done.stderr[-3000:]
    result = read(output)
    replies = REPLY_COLUMNS[study]
    turns = len(replies)
    assert list(result.columns) == [*frame.columns, *SAMPLE_COLUMNS, *QUERY_ADDED_COLUMNS[study]]
    pd.testing.assert_frame_equal(result[frame.columns], frame)
    assert (result["error"] == "").all()
    assert (result["model_name"] == vllm_server.served_name).all()
    assert set(result["finish_reason"]) <= {"stop", "length"}
    assert all(int(n) > 20 for n in result["prompt_tokens"])  # the whole study prompt reached the model
    assert all(1 <= int(n) <= 8 * turns for n in result["completion_tokens"])
    assert (result["attempts"] == str(turns)).all()
    for _, row in result.iterrows():
        # The exact prompt of every turn, as the server's template rendered it: one BOS, at the start,
        # and each turn's prompt extends the one before (the conversation grows, nothing is re-rendered).
        ids = json.loads(row["prompt_token_ids"])
        assert len(ids) == turns
        assert all(turn.count(ids[0][0]) == 1 and turn[0] == ids[0][0] for turn in ids)
        assert all(later[: len(earlier)] == earlier for earlier, later in itertools.pairwise(ids))
        conversation = json.loads(row["conversation"])
        assert [m["role"] for m in conversation if m["role"] != "system"] == ["user", "assistant"] * turns
    meta = json.loads((tmp_path / "out.csv.meta.json").read_text())
    assert meta["server"]["version"]["version"].startswith("0.")
    assert meta["server"]["model"]["id"] == vllm_server.served_name
    assert meta["server"]["model"]["max_model_len"] == 512
    assert meta["parameters"]["generation"]["max_tokens"] == 8
    assert meta["rows"] == {
        "ok": ROWS,
        "failed": 0,
        "failed_row_specific": 0,
        "failed_transport": 0,
        "not_done": 0,
        "from_checkpoint": 0,
    }


def test_sigkill_then_rerun_against_the_real_server(vllm_server: Any, tmp_path: Path) -> None:
    rows = 24
    source, frame = study_rows("study2", rows, tmp_path)
    output = tmp_path / "out.csv"
    args = command(vllm_server, "study2", source, output, "--batch-size", "2")
    env = {**os.environ, "PYTHONPATH": str(REPO), "LOG_LEVEL": "WARNING"}
    worker = subprocess.Popen(args, cwd=REPO, env=env)
    checkpoint = tmp_path / "out.csv.partial.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and worker.poll() is None:
        if checkpoint.exists() and checkpoint.read_text().count("\n") > 4:  # header + at least 4 rows
            break
        time.sleep(0.05)
    assert worker.poll() is None, "the worker finished before it could be killed; use more rows"
    worker.send_signal(signal.SIGKILL)
    worker.wait(30)
    assert not output.exists()
    done_before = checkpoint.read_text().count("\n") - 1
    assert 4 <= done_before < rows
    done = run(args)
    assert done.returncode == 0, done.stderr[-3000:]
    result = read(output)
    pd.testing.assert_frame_equal(result[frame.columns], frame)  # every row once, in input order
    assert (result["error"] == "").all()
    meta = json.loads((tmp_path / "out.csv.meta.json").read_text())
    assert meta["rows"]["from_checkpoint"] >= done_before


def test_a_prompt_longer_than_the_model_is_a_recorded_400(vllm_server: Any, tmp_path: Path) -> None:
    source, frame = study_rows("study1", 3, tmp_path)
    frame.loc[1, "story_setup"] = "The letters arrived. " * 400  # far past max_model_len 512
    frame.to_csv(source, index=False)
    output = tmp_path / "out.csv"
    done = run(command(vllm_server, "study1", source, output))
    assert done.returncode == 3, done.stderr[-3000:]
    result = read(output)
    assert len(result) == 3
    assert list(result["error"] == "") == [True, False, True]
    error = result.loc[1, "error"]
    assert error.startswith("turn story: HTTP 400: ")  # the first question already does not fit
    assert "512" in error  # vLLM names the model's limit
    assert result.loc[1, "attempts"] == "1"  # never retried


def test_an_unknown_model_is_one_line_and_exit_2(vllm_server: Any, tmp_path: Path) -> None:
    source, _ = study_rows("study2", 2, tmp_path)
    output = tmp_path / "out" / "out.csv"
    args = command(vllm_server, "study2", source, output)
    args[args.index("--model-name") + 1] = "no-such-model"
    done = run(args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("worker query: error: --model-name no-such-model: The model `no-such-model`")
    assert "Traceback" not in done.stderr
    assert not output.parent.exists()


def test_the_servers_own_404_for_an_unknown_model(vllm_server: Any) -> None:
    """The check above uses /v1/models; this is vLLM's 404 body itself, as a fatal RequestRejected."""

    async def ask() -> None:
        options = ClientOptions(endpoint=vllm_server.base_url, model_name="no-such-model", max_retries=0)
        async with ModelClient(options) as client:
            await client.chat([{"role": "user", "content": "hi"}], max_tokens=1)

    with pytest.raises(RequestRejected) as caught:
        asyncio.run(ask())
    assert caught.value.status == 404
    assert "no-such-model" in caught.value.message
    assert caught.value.fatal
