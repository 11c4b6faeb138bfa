"""The checkpoint file on its own: what a reload accepts, repairs and refuses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from worker.checkpoint import CheckpointWriter, load_checkpoint, make_header
from worker.errors import InputError

HEADER = make_header("query", "ab" * 32, {"model_name": "tiny", "generation": {"temperature": 0.0}})


def write_rows(path: Path, rows: list[int]) -> None:
    async def go() -> None:
        writer = CheckpointWriter.open(path, HEADER)
        for row in rows:
            writer.append((row, 0), {"model_response": f"answer {row}", "error": ""})
        await writer.aclose()

    asyncio.run(go())


def test_rows_round_trip_and_appending_continues(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    write_rows(path, [2, 0])
    write_rows(path, [1])  # a second run appends; the header is not repeated
    assert load_checkpoint(path, HEADER) == {
        (2, 0): {"model_response": "answer 2", "error": ""},
        (0, 0): {"model_response": "answer 0", "error": ""},
        (1, 0): {"model_response": "answer 1", "error": ""},
    }
    assert path.read_text().count('"checkpoint"') == 1


def test_no_file_means_nothing_done(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "absent.jsonl", HEADER) == {}


def test_a_duplicate_line_keeps_the_first(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    write_rows(path, [0])
    with path.open("a") as handle:
        handle.write(json.dumps({"row": 0, "columns": {"model_response": "other"}}) + "\n")
    assert load_checkpoint(path, HEADER)[(0, 0)]["model_response"] == "answer 0"


def test_samples_of_one_row_are_separate_items(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"

    async def go() -> None:
        writer = CheckpointWriter.open(path, HEADER)
        writer.append((4, 1), {"model_response": "second"})
        writer.append((4, 0), {"model_response": "first"})
        await writer.aclose()

    asyncio.run(go())
    assert load_checkpoint(path, HEADER) == {
        (4, 1): {"model_response": "second"},
        (4, 0): {"model_response": "first"},
    }


@pytest.mark.parametrize(
    "tail", [b'{"row": 3, "colu', b"\x00\x00\x00\x00\n\x00\x00", b'{"row": 3}\nnot json\n'[11:]]
)
def test_an_unfinished_tail_is_cut_off(tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "c.jsonl"
    write_rows(path, [0, 1])
    clean = path.read_bytes()
    path.write_bytes(clean + tail)
    assert set(load_checkpoint(path, HEADER)) == {(0, 0), (1, 0)}
    assert path.read_bytes() == clean


def test_a_foreign_checkpoint_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    write_rows(path, [0])
    path.write_bytes(path.read_bytes() + b'{"row": 1, "col')
    before = path.read_bytes()
    other = make_header("query", "ab" * 32, {"model_name": "tiny", "generation": {"temperature": 0.7}})
    with pytest.raises(InputError, match=r"different parameters: generation: .*0\.0.* then, .*0\.7.* now"):
        load_checkpoint(path, other)
    assert path.read_bytes() == before
    with pytest.raises(InputError, match="its input file had different contents"):
        load_checkpoint(path, make_header("query", "cd" * 32, HEADER["parameters"]))
    with pytest.raises(InputError, match="pipeline 'query', not 'probs'"):
        load_checkpoint(path, make_header("probs", "ab" * 32, HEADER["parameters"]))


def test_a_garbled_middle_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    write_rows(path, [0, 1])
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "garbage", lines[2]]) + "\n")
    with pytest.raises(InputError, match=r"line 2 is not JSON"):
        load_checkpoint(path, HEADER)
