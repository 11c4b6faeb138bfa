"""The researchers' Experiment 1, request for request.

Every row of both real study CSVs goes through `python -m worker query` with the researchers' design
(jobs/studies/researchers/), against a recording fake server, and every request is compared with the one
their own code renders (../shared/reference/researchers: `<study>_exp1.jsonl`, one request a line, and
`models.json`, each studied model's parameters): the prompt byte for byte, temperature, max_tokens, stop
(present exactly when their model config has one), the seed, the keys of the body, the requests per row
and the endpoint. One run per study and distinct stop list serves every model that shares the list.

The fake answers request n with "#n" wrapped in white space, so each output cell names the request that
produced it (rows run concurrently, in no fixed order) and shows that the reply was stripped.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.support.ci import unavailable
from tests.support.contracts import COMPLETION_RECORD_COLUMNS, RESEARCHERS_REPLY_COLUMNS, SAMPLE_COLUMNS
from tests.support.fake_openai import FakeOpenAI, Ok, Request, text_completion_body
from tests.unit.worker.support import (
    COMPLETIONS,
    RESEARCHERS_REFERENCE,
    RESEARCHERS_STUDIES,
    SHARED_DATA,
    read_csv,
    read_meta,
    worker_args,
)
from worker.cli import main

# The six studied models, as models.json names them (their --model-name, the Hugging Face id).
MODELS = (
    "google/gemma-2-2b-it",
    "google/gemma-2-9b-it",
    "google/gemma-2-27b-it",
    "meta-llama/Meta-Llama-3-70B-Instruct",
    "openai/gpt-oss-20b",
    "openai/gpt-oss-120b",
)
# Each request of a row, in the order their script sends it, and the column its reply goes to
# (src/query_study1_exp1.py:73-115, src/query_study2_exp1.py:73-91).
REPLY_COLUMNS = {
    "study1": {"quantity": "response_quantity", "knowledge": "response_knowledge"},
    "study2": {"response": "response"},
}
# Their max_tokens per study (query_study1_exp1.py:79,99; query_study2_exp1.py:80).
MAX_TOKENS_KEY = {"study1": "max_tokens_text", "study2": "max_tokens_structured"}
# Their seed: --seed BASE_SEED + REPLICATION_ID, plus a per-script offset (query_study1_exp1.py:318,
# query_study2_exp1.py:232). The runs here are replication 0 of base seed 42.
BASE_SEED = 42
SEED_OFFSET = {"study1": 0, "study2": 1000}
# Columns their code puts into prompts unstripped (prompts.py:39-50, :206-218): when none of their cells
# has white space around it, stripping every value (the study files' strip_values) changes no byte.
UNSTRIPPED = {"study1": ("priorQ", "speach", "speachQ"), "study2": ("SP_Name", "LS_Name")}


def _need_reference() -> None:
    for path in (RESEARCHERS_REFERENCE, SHARED_DATA):
        if not path.is_dir():
            unavailable(f"{path} is not present: the researchers' requests and study files live there")


def reference(study: str) -> list[dict[str, Any]]:
    lines = (RESEARCHERS_REFERENCE / f"{study}_exp1.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def model_parameters() -> dict[str, dict[str, Any]]:
    document = json.loads((RESEARCHERS_REFERENCE / "models.json").read_text(encoding="utf-8"))
    models: dict[str, dict[str, Any]] = document["models"]
    return models


@dataclass(frozen=True)
class Run:
    """One `worker query` run: the output, the meta file and every completion body by request number."""

    output: pd.DataFrame
    meta: dict[str, Any]
    bodies: dict[int, dict[str, Any]]
    posted_paths: set[str]


def run_query(
    study: str,
    stop: list[str] | None,
    workdir: Path,
    *,
    study_file: Path | None = None,
    limit: int | None = None,
) -> Run:
    """`worker query` over the real CSV with the researchers' study file, stop strings as a Job passes."""
    counter = itertools.count()
    bodies: dict[int, dict[str, Any]] = {}

    def answer(request: Request) -> Ok:
        number = next(counter)  # the fake's handlers run on its one event-loop thread
        bodies[number] = request.json()
        return Ok(text_completion_body(request, f" \n#{number}\t "))

    output = workdir / "out.csv"
    extra = ["--samples", "1", "--seed", str(BASE_SEED)]
    if stop is not None:
        extra += ["--stop", json.dumps(stop)]
    if limit is not None:
        extra += ["--limit", str(limit)]
    with FakeOpenAI(handlers={COMPLETIONS: answer}) as server:
        argv = worker_args(
            "query", server.base_url, output, *extra,
            input=SHARED_DATA / f"{study}.csv", study=study_file or RESEARCHERS_STUDIES / f"{study}.yaml",
        )  # fmt: skip
        assert main(argv) == 0
        posted = {request.path for request in server.requests if request.method == "POST"}
    return Run(read_csv(output), read_meta(output), bodies, posted)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, list[str] | None], Run]:
    """The run of a study with a stop list, made once for every model that shares the list."""
    runs: dict[tuple[str, str], Run] = {}

    def get(study: str, stop: list[str] | None) -> Run:
        key = (study, json.dumps(stop))
        if key not in runs:
            runs[key] = run_query(study, stop, tmp_path_factory.mktemp(study))
        return runs[key]

    return get


def mismatches(study: str, run: Run, model: dict[str, Any]) -> list[str]:
    """Every way the run's requests differ from the researchers' for the rows the run answered."""
    problems: list[str] = []
    expected_keys = ["model", "prompt", "max_tokens", "temperature"]
    expected_keys += [*(["stop"] if model["stop"] is not None else []), "seed"]
    columns = REPLY_COLUMNS[study]
    used: list[int] = []
    rows = set(range(len(run.output)))
    for record in reference(study):
        if record["row"] not in rows:
            continue
        where = f"row {record['row']} {record['question']}"
        cell = run.output[columns[record["question"]]].iloc[record["row"]]
        if not cell.startswith("#") or cell != cell.strip():
            problems.append(f"{where}: reply cell {cell!r} is not the stripped reply")
            continue
        number = int(cell[1:])
        used.append(number)
        body = run.bodies[number]
        if body["prompt"].encode() != record["prompt"].encode():
            at = next(
                (i for i, (a, b) in enumerate(zip(body["prompt"], record["prompt"], strict=False)) if a != b),
                min(len(body["prompt"]), len(record["prompt"])),
            )
            problems.append(
                f"{where}: prompt differs at character {at}: sent {body['prompt'][at - 20 : at + 20]!r}, "
                f"theirs {record['prompt'][at - 20 : at + 20]!r}"
            )
        if list(body) != expected_keys:
            problems.append(f"{where}: body keys {list(body)}, expected {expected_keys}")
        if body.get("temperature") != model["temperature_text"]:
            problems.append(f"{where}: temperature {body.get('temperature')}")
        if body.get("max_tokens") != model[MAX_TOKENS_KEY[study]]:
            problems.append(f"{where}: max_tokens {body.get('max_tokens')}")
        if body.get("stop") != model["stop"]:
            problems.append(f"{where}: stop {body.get('stop')!r}, theirs {model['stop']!r}")
        if body.get("seed") != BASE_SEED + SEED_OFFSET[study]:
            problems.append(f"{where}: seed {body.get('seed')}")
        if body.get("model") != "tiny":
            problems.append(f"{where}: model {body.get('model')!r}")
    if sorted(used) != sorted(run.bodies):
        problems.append(f"{len(run.bodies)} requests were sent for {len(used)} reference requests")
    if run.posted_paths != {COMPLETIONS}:
        problems.append(f"requests were posted to {sorted(run.posted_paths)}, not only {COMPLETIONS}")
    return problems


def test_the_reference_lists_the_six_studied_models() -> None:
    _need_reference()
    assert sorted(model_parameters()) == sorted(MODELS)


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("study", ["study1", "study2"])
def test_every_request_is_the_researchers_own(
    recorded: Callable[[str, list[str] | None], Run], study: str, model_name: str
) -> None:
    _need_reference()
    model = model_parameters()[model_name]
    run = recorded(study, model["stop"])
    records = reference(study)
    per_row = Counter(record["row"] for record in records)
    assert len(run.output) == len(per_row)  # every row of the CSV, once
    assert len(run.bodies) == len(records)  # 600 for Study 1 (2 per row), 2,424 for Study 2
    assert set(per_row.values()) == {len(REPLY_COLUMNS[study])}
    assert mismatches(study, run, model) == []


@pytest.mark.parametrize("study", ["study1", "study2"])
def test_the_output_has_the_input_then_the_replies_and_the_meta_says_what_was_sent(
    recorded: Callable[[str, list[str] | None], Run], study: str
) -> None:
    _need_reference()
    stop = ["<|eot_id|>", "<|end_of_text|>"]
    run = recorded(study, stop)
    with (SHARED_DATA / f"{study}.csv").open(encoding="utf-8", newline="") as handle:
        source = list(csv.DictReader(handle))
    replies = RESEARCHERS_REPLY_COLUMNS[study]
    assert list(run.output.columns) == [*source[0], *SAMPLE_COLUMNS, *replies, *COMPLETION_RECORD_COLUMNS]
    assert replies == tuple(REPLY_COLUMNS[study].values())
    pd.testing.assert_frame_equal(run.output[list(source[0])], pd.DataFrame(source))
    assert (run.output["seed"] == str(BASE_SEED + SEED_OFFSET[study])).all()
    assert (run.output["attempts"] == str(len(replies))).all()
    first = json.loads(run.output["prompts"].iloc[0])
    assert first == [r["prompt"] for r in reference(study) if r["row"] == 0]
    parameters = run.meta["parameters"]
    assert parameters["form"] == "completion"
    assert parameters["endpoint"] == COMPLETIONS
    assert parameters["body_keys"] == ["model", "prompt", "max_tokens", "temperature", "stop", "seed"]
    assert parameters["generation"]["stop"] == stop
    assert parameters["sampling"]["seed_rule"] == "replication"
    assert parameters["sampling"]["seed_offset"] == SEED_OFFSET[study]
    assert parameters["strip_replies"] is True


@pytest.mark.parametrize("study", ["study1", "study2"])
def test_no_value_their_code_leaves_unstripped_has_white_space_around_it(study: str) -> None:
    """Why `strip_values: true` is exact here: their code strips most values, and the ones it does not
    strip have nothing to strip in the real CSVs (nor does any other column hold a `<br>`)."""
    _need_reference()
    with (SHARED_DATA / f"{study}.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for column in UNSTRIPPED[study]:
        assert all(row[column] == row[column].strip() for row in rows), column
    assert not any("<br>" in value for row in rows for key, value in row.items() if key != "story_setup")


def test_one_changed_character_in_a_prompt_is_caught(tmp_path: Path) -> None:
    """The comparison is not vacuous: a study file one character off fails it, naming the place."""
    _need_reference()
    text = (RESEARCHERS_STUDIES / "study1.yaml").read_text(encoding="utf-8")
    changed = tmp_path / "study1.yaml"
    changed.write_text(text.replace("just a number (0, 1, 2, or 3)", "just a number (0, 1, 2 or 3)", 1))
    model = model_parameters()["google/gemma-2-2b-it"]
    run = run_query("study1", model["stop"], tmp_path, study_file=changed, limit=3)
    problems = mismatches("study1", run, model)
    assert len(problems) == 3
    assert all(p.startswith(f"row {row} quantity: prompt differs") for row, p in enumerate(problems))
