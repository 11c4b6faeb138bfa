"""The checkpoint on real files: round trip, failure kinds, torn tails, damaged middles, full disks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from worker.errors import InputError
from worker.run.checkpoint import (
    CheckpointReader,
    CheckpointWriter,
    ItemKey,
    ItemState,
    load_checkpoint,
    make_header,
)

HEADER = make_header("query", "ab" * 32, {"model_name": "tiny", "generation": {"temperature": 0.0}})


def write_items(path: Path, items: list[tuple[ItemKey, ItemState]]) -> None:
    async def go() -> None:
        writer = CheckpointWriter.open(path, HEADER)
        for key, state in items:
            error = "" if state is ItemState.OK else f"failed {state.name}"
            writer.append(key, {"model_response": f"answer {key[0]}.{key[1]}", "error": error}, state)
        await writer.aclose()

    asyncio.run(go())


def write_rows(path: Path, rows: list[int]) -> None:
    write_items(path, [((row, 0), ItemState.OK) for row in rows])


def states(path: Path, rows: int = 4, samples: int = 1) -> dict[ItemKey, ItemState]:
    index = load_checkpoint(path, HEADER, rows=rows, samples_per_row=samples)
    return {key: index.state(key) for key in index.in_order() if index.state(key) is not ItemState.PENDING}


def answers(path: Path, rows: int = 4, samples: int = 1) -> dict[ItemKey, str]:
    index = load_checkpoint(path, HEADER, rows=rows, samples_per_row=samples)
    reader = CheckpointReader(path)
    try:
        return {
            key: reader.columns(index.offset(key))["model_response"]
            for key in index.in_order()
            if index.state(key) is not ItemState.PENDING
        }
    finally:
        reader.close()


def test_rows_round_trip_and_appending_continues(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    write_rows(path, [2, 0])
    write_rows(path, [1])  # a second run appends; the header is not repeated
    assert answers(path) == {(0, 0): "answer 0.0", (1, 0): "answer 1.0", (2, 0): "answer 2.0"}
    assert path.read_text().count('"checkpoint"') == 1


def test_no_file_means_nothing_done(tmp_path: Path) -> None:
    assert states(tmp_path / "absent.jsonl") == {}


def test_a_duplicate_line_keeps_the_first_success(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    write_rows(path, [0])
    with path.open("a") as handle:
        handle.write(
            json.dumps({"row": 0, "sample": 0, "failure": None, "columns": {"model_response": "x"}}) + "\n"
        )
    assert answers(path) == {(0, 0): "answer 0.0"}


def test_samples_of_one_row_are_separate_items(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    write_items(path, [((3, 1), ItemState.OK), ((3, 0), ItemState.OK)])
    assert answers(path, samples=2) == {(3, 0): "answer 3.0", (3, 1): "answer 3.1"}


def test_failure_kinds_and_what_is_pending(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    write_items(
        path,
        [((0, 0), ItemState.OK), ((1, 0), ItemState.ROW_FAILED), ((2, 0), ItemState.TRANSPORT_FAILED)],
    )
    index = load_checkpoint(path, HEADER, rows=4)
    assert list(index.pending(retry_failed=False)) == [(2, 0), (3, 0)]
    assert list(index.pending(retry_failed=True)) == [(1, 0), (2, 0), (3, 0)]
    # The rerun's line for a failed item supersedes it; a success is final.
    write_items(path, [((2, 0), ItemState.OK), ((1, 0), ItemState.OK), ((0, 0), ItemState.ROW_FAILED)])
    assert states(path) == {(0, 0): ItemState.OK, (1, 0): ItemState.OK, (2, 0): ItemState.OK}


def test_a_line_from_before_failure_kinds_is_a_row_failure_when_its_error_is_set(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    lines = [
        HEADER,
        {"row": 0, "columns": {"error": ""}},
        {"row": 1, "columns": {"error": "HTTP 400: too long"}},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert states(path) == {(0, 0): ItemState.OK, (1, 0): ItemState.ROW_FAILED}


@pytest.mark.parametrize("tail", [b'{"row": 3, "colu', b"\x00\x00\x00\x00\n\x00\x00", b"not json\n"])
def test_an_unfinished_tail_is_cut_off(tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "c.jsonl"
    write_rows(path, [0, 1])
    clean = path.read_bytes()
    path.write_bytes(clean + tail)
    assert set(states(path)) == {(0, 0), (1, 0)}
    assert path.read_bytes() == clean
    assert not (tmp_path / "c.jsonl.rejected").exists()


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (
            make_header("query", "ab" * 32, {"model_name": "tiny", "generation": {"temperature": 0.7}}),
            r"different parameters: generation: .*0\.0.* then, .*0\.7.* now",
        ),
        (make_header("query", "cd" * 32, HEADER["parameters"]), "its input file had different contents"),
        (make_header("probs", "ab" * 32, HEADER["parameters"]), "pipeline 'query', not 'probs'"),
    ],
    ids=["other-parameters", "other-input", "other-pipeline"],
)
def test_a_foreign_checkpoint_is_refused_and_left_alone(
    tmp_path: Path, other: dict[str, object], message: str
) -> None:
    path = tmp_path / "c.jsonl"
    write_rows(path, [0])
    path.write_bytes(path.read_bytes() + b'{"row": 1, "col')
    before = path.read_bytes()
    with pytest.raises(InputError, match=message):
        load_checkpoint(path, other, rows=4)
    assert path.read_bytes() == before


def test_damaged_middle_lines_are_moved_aside_and_only_their_rows_redone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.jsonl"
    write_rows(path, [0, 1, 2, 3])
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = [lines[0], lines[1], b"garb\x00age\n", lines[3], b'{"row": "two"}\n', lines[4]]
    path.write_bytes(b"".join(damaged))

    with caplog.at_level("WARNING"):
        index = load_checkpoint(path, HEADER, rows=4)

    assert list(index.pending(retry_failed=False)) == [(1, 0)]  # line 3 held row 1; the others survive
    assert answers(path) == {(0, 0): "answer 0.0", (2, 0): "answer 2.0", (3, 0): "answer 3.0"}
    assert path.read_bytes() == b"".join([lines[0], lines[1], lines[3], lines[4]])
    assert (tmp_path / "c.jsonl.rejected").read_bytes() == b'garb\x00age\n{"row": "two"}\n'
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "line(s) 3, 5 damaged; moved to c.jsonl.rejected" in warnings[0]


def test_a_damaged_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    write_rows(path, [0])
    path.write_bytes(b"garbage\n" + path.read_bytes().split(b"\n", 1)[1])
    with pytest.raises(InputError, match=r"line 1 \(its header\) is not JSON"):
        load_checkpoint(path, HEADER, rows=4)
