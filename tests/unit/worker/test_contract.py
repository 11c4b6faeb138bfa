"""worker/contract.py: the names both packages use are written once, the meta file the runner writes is
the model's serialisation byte for byte, a hand-edited or partial meta file reads without a crash, and
`same_run` decides "is this the same run?" for every caller.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_openai import FakeOpenAI, Status
from worker import cli, contract
from worker.contract import MetaInput, MetaRows, RunMeta, RunStatus, same_run
from worker.run import completeness, supersede
from worker.run.checkpoint import make_header
from worker.run.input_wait import input_state
from worker.run.run_options import RunOptions
from worker.server.client_options import ClientOptions

REPO = Path(__file__).resolve().parents[3]
STUDY1 = REPO / "tests" / "fixtures" / "study1_small.csv"

# The meta file's keys in the order the runner has always written them (docs/never-losing-a-row.md
# shows such a file): stated here, not read from the model, so reordering the model's fields fails.
META_KEYS = [
    "pipeline", "worker_version", "command_line", "input", "server", "weights", "parameters", "client",
    "started_at", "finished_at", "duration_s", "rows_phase_s", "rows", "plan_digest", "supersedes",
    "status", "exit_code",
]  # fmt: skip
INPUT_KEYS = ["path", "sha256", "rows_in_file", "rows_processed", "limit", "samples_per_row"]
CLIENT_KEYS = ["model_name", "batch_size", "timeout_s", "max_retries"]
ROWS_KEYS = ["ok", "failed", "failed_row_specific", "failed_transport", "not_done", "from_checkpoint"]

HEADER = make_header("query", "abc123", {"model_name": "tiny", "temperature": 0.0, "turns": ("a", "b")})


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def query(endpoint: str, output: Path, *extra: str) -> list[str]:
    return [
        "query",
        "--input", str(STUDY1),
        "--output", str(output),
        "--model-endpoint", endpoint,
        "--model-name", "tiny",
        "--study", "chat/study1",
        "--metrics-port", "0",
        "--timeout", "1",
        "--max-retries", "1",
        "--backoff-base", "0.01",
        "--limit", "3",
        *extra,
    ]  # fmt: skip


def meta_path(output: Path) -> Path:
    return output.with_name(output.name + contract.META_SUFFIX)


def options(tmp_path: Path, **overrides: Any) -> RunOptions:
    client = ClientOptions(endpoint="http://127.0.0.1:9/v1", model_name="tiny")
    return RunOptions(input=STUDY1, output=tmp_path / "out.csv", client=client, **overrides)


def finished_meta(**overrides: Any) -> dict[str, Any]:
    """A complete run's meta file for HEADER over 3 rows, as a dict (then hand-edited by a test)."""
    return {
        "pipeline": "query",
        "input": {"sha256": "abc123", "rows_processed": 3},
        "parameters": {"model_name": "tiny", "temperature": 0.0, "turns": ["a", "b"]},
        "rows": {"ok": 3, "failed_transport": 0, "not_done": 0},
        "status": "complete",
        "exit_code": 0,
        **overrides,
    }


def write_output(tmp_path: Path, meta: dict[str, Any] | str) -> RunOptions:
    run = options(tmp_path)
    run.output.write_text("done\n")
    run.meta_path.write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return run


# --- the meta file the runner writes is the model's serialisation ---------------------------------------


def test_the_runners_meta_file_is_the_models_serialisation_key_for_key(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    output = tmp_path / "out.csv"
    assert cli.main(query(server.base_url, output, "--plan-digest", "d1")) == 0
    text = meta_path(output).read_text(encoding="utf-8")
    written = json.loads(text)
    assert list(written) == META_KEYS
    assert list(written["input"]) == INPUT_KEYS
    assert list(written["client"]) == CLIENT_KEYS
    assert list(written["rows"]) == ROWS_KEYS
    assert text.startswith('{\n  "pipeline": "query",\n')  # two-space indent, a final newline
    assert text.endswith("}\n")
    assert RunMeta.from_json(text).to_json() == text  # read back and written again: the same bytes


def test_a_stopped_runs_meta_ends_with_why(server: FakeOpenAI, tmp_path: Path) -> None:
    output = tmp_path / "out.csv"
    chats: list[int] = []

    def away(request: Any) -> bool:  # the server answers four rows, then is gone (health included)
        if request.path == "/v1/chat/completions":
            chats.append(1)
        return len(chats) > 4

    server.rule(away, Status(503))
    args = query(server.base_url, output, "--batch-size", "1", "--wait-timeout", "0.5")
    args[args.index("--limit") + 1] = "10"
    assert cli.main(args) == contract.EXIT_SERVER_UNAVAILABLE
    text = meta_path(output).read_text(encoding="utf-8")
    written = json.loads(text)
    assert list(written) == [*META_KEYS, "message"]
    assert written["status"] == RunStatus.SERVER_UNAVAILABLE
    assert RunMeta.from_json(text).to_json() == text


def test_a_recorded_plan_digest_changes_two_keys_and_nothing_else(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    output = tmp_path / "out.csv"
    assert cli.main(query(server.base_url, output, "--plan-digest", "d1")) == 0
    before = json.loads(meta_path(output).read_text(encoding="utf-8"))
    output.with_name(output.name + contract.CHECKPOINT_SUFFIX).unlink()
    assert cli.main(query(server.base_url, output, "--plan-digest", "d2")) == 0
    text = meta_path(output).read_text(encoding="utf-8")
    after = json.loads(text)
    assert list(after) == [*META_KEYS, "plan_digest_history"]
    (change,) = after.pop("plan_digest_history")
    assert change["previous"] == "d1"
    assert after == {**before, "plan_digest": "d2"}
    assert text == json.dumps({**before, "plan_digest": "d2", "plan_digest_history": [change]},
                              indent=2, ensure_ascii=False) + "\n"  # fmt: skip


def test_only_the_keys_a_run_sets_are_written() -> None:
    meta = RunMeta(pipeline="probs", status=RunStatus.INTERRUPTED, exit_code=143, interrupted_by="SIGTERM")
    assert json.loads(meta.to_json()) == {
        "pipeline": "probs",
        "status": "interrupted",
        "exit_code": 143,
        "interrupted_by": "SIGTERM",
    }
    assert json.loads(RunMeta(plan_digest=None, input=MetaInput(limit=None)).to_json()) == {
        "input": {"limit": None},
        "plan_digest": None,
    }


# --- reading: any JSON object is a RunMeta; nothing on disk crashes a reader ----------------------------


def test_a_hand_edited_meta_reads_what_it_can_and_keeps_the_rest() -> None:
    meta = RunMeta.from_json(json.dumps({
        "note": "re-run by hand",
        "pipeline": None,
        "input": [1, 2],
        "parameters": ["not", "an", "object"],
        "rows": {"failed_transport": "many", "not_done": 2, "extra": True},
        "status": 5,
        "exit_code": "3",
        "duration_s": 12,
        "plan_digest_history": "garbled",
    }))  # fmt: skip
    assert meta.pipeline is None
    assert meta.input == MetaInput()  # a section that is not an object is empty
    assert meta.parameters is None
    assert (meta.rows.failed_transport, meta.rows.not_done, meta.rows.failed_row_specific) == (None, 2, 0)
    assert (meta.status, meta.exit_code) == (None, None)  # "3" is not an exit code
    assert meta.duration_s == 12.0
    assert meta.plan_digest_history is None
    assert not meta.finished
    # Unknown keys survive a rewrite, after the known ones.
    assert list(json.loads(meta.to_json()))[-1] == "note"
    assert json.loads(meta.to_json())["rows"]["extra"] is True


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]", '"complete"', "null"])
def test_a_meta_file_that_is_not_a_json_object_reads_as_none(tmp_path: Path, text: str) -> None:
    path = tmp_path / "out.csv.meta.json"
    path.write_text(text)
    assert RunMeta.read(path) is None
    with pytest.raises(ValueError, match=r"."):
        RunMeta.from_json(text)


def test_a_missing_meta_file_reads_as_none(tmp_path: Path) -> None:
    assert RunMeta.read(tmp_path / "nothing.meta.json") is None


def test_counts_default_to_zero_and_booleans_are_not_numbers() -> None:
    rows = MetaRows.model_validate({"ok": True, "failed": 1.5})
    assert (rows.ok, rows.failed, rows.not_done) == (None, None, 0)


# --- same_run: the one decision -------------------------------------------------------------------------


def meta(**overrides: Any) -> RunMeta:
    return RunMeta.model_validate(finished_meta(**overrides))


def test_a_meta_file_is_the_same_run_on_pipeline_input_and_parameters() -> None:
    assert same_run(meta(), HEADER)
    # Compared as JSON: the tuple in the header is the list in the file; 0 is 0.0.
    assert same_run(meta(parameters={"model_name": "tiny", "temperature": 0, "turns": ["a", "b"]}), HEADER)
    # Not the checkpoint's format, nor what the run did: those are other questions.
    assert same_run(meta(status="interrupted", exit_code=143), {**HEADER, "checkpoint": 999})


@pytest.mark.parametrize(
    "edit",
    [
        {"pipeline": "probs"},
        {"pipeline": None},
        {"input": {"sha256": "other"}},
        {"input": "garbled"},
        {"parameters": {"model_name": "tiny", "temperature": 0.7, "turns": ["a", "b"]}},
        {"parameters": None},
        {"parameters": ["garbled"]},
    ],
    ids=str,
)
def test_a_meta_file_of_another_run_or_a_garbled_one_is_not_the_same_run(edit: dict[str, Any]) -> None:
    assert not same_run(meta(**edit), HEADER)


def test_nothing_is_the_same_run() -> None:
    assert not same_run(None, HEADER)
    assert not same_run(RunMeta(), HEADER)


def test_a_checkpoint_header_must_match_whole() -> None:
    found = json.loads(json.dumps(HEADER))  # as read back from the file
    assert same_run(found, HEADER)
    assert same_run(dict(reversed(found.items())), HEADER)  # key order is not content
    assert not same_run({**found, "checkpoint": found["checkpoint"] + 1}, HEADER)  # another format
    assert not same_run({**found, "note": "hand-made"}, HEADER)
    assert not same_run({**found, "input_sha256": "other"}, HEADER)
    assert not same_run({**found, "parameters": {**found["parameters"], "temperature": 0.7}}, HEADER)


# --- the callers: the same decision, and no crash on a garbled file -------------------------------------


def is_complete(tmp_path: Path, meta: dict[str, Any] | str, rows: int = 3) -> bool:
    return completeness.complete_run(write_output(tmp_path, meta), HEADER, rows=rows) is not None


def test_complete_run_is_same_run_plus_finished_over_the_same_rows(tmp_path: Path) -> None:
    assert is_complete(tmp_path, finished_meta())
    assert is_complete(tmp_path, finished_meta(exit_code=contract.EXIT_ROWS_FAILED))
    assert not is_complete(tmp_path, finished_meta(), rows=4)
    assert not is_complete(tmp_path, finished_meta(exit_code=contract.EXIT_STORAGE))
    assert not is_complete(tmp_path, finished_meta(status=RunStatus.INTERRUPTED))
    assert not is_complete(tmp_path, finished_meta(pipeline="probs"))
    (tmp_path / "out.csv").unlink()
    assert completeness.complete_run(options(tmp_path), HEADER, rows=3) is None  # no output, no run


@pytest.mark.parametrize(
    ("rows", "complete"),
    [
        ({}, True),  # a missing count is 0
        ("garbled", True),  # a section that is not an object has no counts
        ({"not_done": 1}, False),
        ({"failed_transport": "x"}, False),  # not a number: the run decides for itself
        ({"failed_transport": None}, False),
    ],
    ids=str,
)
def test_complete_run_reads_the_counts_without_crashing(tmp_path: Path, rows: Any, complete: bool) -> None:
    assert is_complete(tmp_path, finished_meta(rows=rows)) is complete


@pytest.mark.parametrize("text", ["{", "[]", json.dumps({"input": 5, "rows": [1], "exit_code": None})])
def test_an_unreadable_meta_is_not_complete(tmp_path: Path, text: str) -> None:
    assert not is_complete(tmp_path, text)


def test_a_resumed_run_carries_its_supersedes_record_only_when_it_is_the_same_run(tmp_path: Path) -> None:
    record = {"moved_to": "superseded/x", "files": ["out.csv"]}
    run = write_output(tmp_path, finished_meta(status="interrupted", supersedes=record))
    assert supersede.carried_record(run, HEADER) == record
    run = write_output(tmp_path, finished_meta(status="interrupted", supersedes=record, pipeline="probs"))
    assert supersede.carried_record(run, HEADER) is None
    run = write_output(tmp_path, finished_meta(input=["garbled"], supersedes=record))
    assert supersede.carried_record(run, HEADER) is None


def test_the_record_of_a_moved_run_falls_back_to_its_checkpoint_header(tmp_path: Path) -> None:
    run = options(tmp_path, supersede=True)
    old_header = {**HEADER, "pipeline": "probs"}
    run.checkpoint_path.write_text(json.dumps(old_header) + "\n")
    # The old meta file names no pipeline and has no input section; its parameters are null on purpose.
    run.meta_path.write_text(json.dumps({"parameters": None, "started_at": "then"}))
    record = supersede.move_aside_if_foreign(run, HEADER, started_at=datetime.now(UTC))
    assert record is not None
    previous = record["previous_run"]
    assert previous["pipeline"] == "probs"  # from the header: the meta file has no such key
    assert previous["input_sha256"] == "abc123"
    assert previous["parameters"] is None  # the meta file's own null
    assert previous["started_at"] == "then"


def test_a_garbled_plan_digest_is_another_run_for_extraction(tmp_path: Path) -> None:
    exp1 = tmp_path / "exp1.csv"
    exp1.write_text("x\n")
    meta_path(exp1).write_text(json.dumps({"plan_digest": ["planned"]}))
    assert input_state(exp1, "planned") == (
        "exists but was made by another Experiment 1 run (plan digest none)"
    )
    meta_path(exp1).write_text(json.dumps({"plan_digest": "planned"}))
    assert input_state(exp1, "planned") is None


# --- written once ---------------------------------------------------------------------------------------


def test_the_contract_imports_nothing_of_ours() -> None:
    tree = ast.parse((REPO / "worker" / "contract.py").read_text(encoding="utf-8"))
    imported = {
        alias.name if isinstance(node, ast.Import) else node.module or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not {name for name in imported if name.split(".")[0] in {"worker", "grace_infra"}}


def _string_constants(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str | int):
            yield node.lineno, node.value


def test_no_package_writes_a_contract_value_again() -> None:
    # The distinctive values: environment names, paths, suffixes, the init container's subcommand and
    # the metrics port (short words like "run" also mean other things, e.g. a volume named "studies").
    values = {
        contract.LOG_LEVEL_ENV, contract.LOG_FILE_ENV, contract.WEIGHTS_MARKER_ENV,
        contract.MISSING_INPUT_HELP_ENV, contract.DEEPSEEK_API_KEY_ENV, contract.STUDIES_DIR_ENV,
        contract.STUDIES_MOUNT, contract.CONTAINER_STUDIES_DIR, contract.WEIGHTS_MARKER_FILE,
        contract.CHECKPOINT_SUFFIX, contract.META_SUFFIX, contract.CHECK_OUTPUTS_COMMAND,
        contract.METRICS_PORT, contract.WAIT_FOR_INPUTS_COMMAND, contract.SERVER_START_FAILED_ENV,
        contract.SERVER_START_ATTEMPTS_ENV, contract.SERVER_START_STATE_ENV, contract.RESUME_JOB_ENV,
        contract.AFTER_JOBS_ENV,
    }  # fmt: skip
    # The download program is shipped into its container as text and imports nothing: it keeps its own
    # copy of the marker's name, compared with the contract's in tests/unit/infra/test_weights_download.py.
    # So do the sidecar's start wrapper and the gate's resume step, compared in test_server_start.py and
    # test_gpu_waits.py.
    allowed = {
        ("grace_infra/payloads/download_weights.py", contract.WEIGHTS_MARKER_FILE),
        ("grace_infra/payloads/server_start.py", contract.SERVER_START_ATTEMPTS_ENV),
        ("grace_infra/payloads/server_start.py", contract.SERVER_START_STATE_ENV),
        ("grace_infra/payloads/server_start.py", contract.SERVER_START_FAILED_ENV),
        ("grace_infra/payloads/resume_job.py", contract.RESUME_JOB_ENV),
        ("grace_infra/payloads/resume_job.py", contract.AFTER_JOBS_ENV),
    }
    found = [
        f"{relative}:{line} {value!r}"
        for package in ("grace_infra", "worker")
        for path in sorted((REPO / package).rglob("*.py"))
        if (relative := str(path.relative_to(REPO))) != "worker/contract.py"
        for line, value in _string_constants(path)
        if value in values and (relative, value) not in allowed
    ]
    assert found == []
