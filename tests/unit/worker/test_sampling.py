"""N samples per input row: one work item, one checkpoint line and one output row per (row, sample)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.fake_openai import FakeOpenAI
from tests.unit.worker.support import CHAT, REPO, read_csv
from worker.run.pipeline import Pipeline
from worker.run.run_options import RunOptions
from worker.run.runner import run_pipeline
from worker.run.sampling import SEED_LIMIT, Sample, derive_seed
from worker.server.client import ModelClient
from worker.server.client_options import ClientOptions


@dataclass
class EchoPipeline(Pipeline):
    """Sends one chat request per sample, carrying the sample's seed, and records what it was given."""

    samples_per_row: int = 1
    base_seed: int = 7

    name = "echo"
    required_columns = ("text",)
    output_columns = ("given_sample", "given_seed", "answer", "error")
    error_column = "error"

    def parameters(self) -> dict[str, Any]:
        return {}

    async def process(
        self, row_index: int, row: Mapping[str, str], client: ModelClient, sample: Sample
    ) -> dict[str, Any]:
        reply = await client.chat([{"role": "user", "content": row["text"]}], seed=sample.seed)
        return {
            "given_sample": sample.index,
            "given_seed": sample.seed,
            "answer": reply.body["choices"][0]["message"]["content"],
        }


def run(server: FakeOpenAI, tmp_path: Path, pipeline: EchoPipeline) -> int:
    source = tmp_path / "in.csv"
    if not source.exists():
        source.write_text("text\nalpha\nbeta\n", encoding="utf-8")
    options = RunOptions(
        input=source,
        output=tmp_path / "out.csv",
        client=ClientOptions(endpoint=server.base_url, model_name="tiny", max_retries=0),
        wait_timeout_s=2,
        metrics_port=0,
    )
    return run_pipeline(pipeline, options)


def test_every_sample_is_its_own_output_row_with_its_seed(server: FakeOpenAI, tmp_path: Path) -> None:
    assert run(server, tmp_path, EchoPipeline(samples_per_row=3)) == 0

    frame = read_csv(tmp_path / "out.csv")
    assert list(frame.columns) == ["text", "sample", "seed", "given_sample", "given_seed", "answer", "error"]
    assert list(frame["text"]) == ["alpha"] * 3 + ["beta"] * 3
    assert list(frame["sample"]) == ["0", "1", "2"] * 2
    expected = [str(derive_seed(7, row, sample)) for row in (0, 1) for sample in (0, 1, 2)]
    assert list(frame["seed"]) == expected
    assert list(frame["given_seed"]) == expected  # the pipeline was handed the seed the output records
    sent = sorted(request.json()["seed"] for request in server.requests_to(CHAT))
    assert sent == sorted(int(seed) for seed in expected)
    assert len(set(expected)) == 6


def test_a_rerun_sends_only_the_missing_samples(server: FakeOpenAI, tmp_path: Path) -> None:
    assert run(server, tmp_path, EchoPipeline(samples_per_row=2)) == 0
    checkpoint = tmp_path / "out.csv.partial.jsonl"
    lines = checkpoint.read_text().splitlines()
    # Drop row 1's sample 0 and the output, as a kill before the end would have left them.
    kept = [line for line in lines if json.loads(line).get("row") != 1 or json.loads(line)["sample"] != 0]
    assert len(kept) == len(lines) - 1
    checkpoint.write_text("\n".join(kept) + "\n")
    (tmp_path / "out.csv").unlink()
    before = len(server.requests_to(CHAT))

    assert run(server, tmp_path, EchoPipeline(samples_per_row=2)) == 0

    resent = server.requests_to(CHAT)[before:]
    assert [request.json()["seed"] for request in resent] == [derive_seed(7, 1, 0)]
    frame = read_csv(tmp_path / "out.csv")
    assert list(zip(frame["text"], frame["sample"], strict=True)) == [
        ("alpha", "0"), ("alpha", "1"), ("beta", "0"), ("beta", "1"),
    ]  # fmt: skip


def test_a_different_sample_count_is_refused_on_resume(server: FakeOpenAI, tmp_path: Path) -> None:
    assert run(server, tmp_path, EchoPipeline(samples_per_row=2)) == 0
    (tmp_path / "out.csv").unlink()
    assert run(server, tmp_path, EchoPipeline(samples_per_row=3)) == 2


def test_seeds_are_the_same_in_another_process_with_another_hash_salt() -> None:
    code = "from worker.run.sampling import derive_seed; print([derive_seed(b, r, s) for b in (0, 42) "
    code += "for r in (0, 1, 2423) for s in (0, 1, 9)])"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    printed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    ).stdout
    here = [derive_seed(b, r, s) for b in (0, 42) for r in (0, 1, 2423) for s in (0, 1, 9)]
    assert json.loads(printed) == here
    assert all(0 <= seed < SEED_LIMIT for seed in here)
    assert len(set(here)) == len(here)
