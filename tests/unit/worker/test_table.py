"""Reading inputs as text and writing outputs atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.errors import InputError
from worker.run.atomic_files import write_atomically
from worker.run.input_table import read_input


def test_values_stay_text(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(b'\xef\xbb\xbfid,text,empty\n007,"a, ""b""<br> c",\nNA,1e3,NA\n')  # with a BOM
    table = read_input(source, ["id", "text"])
    assert list(table.records()) == [
        {"id": "007", "text": 'a, "b"<br> c', "empty": ""},
        {"id": "NA", "text": "1e3", "empty": "NA"},
    ]
    assert table.file_rows == 2
    assert len(table.sha256) == 64


def test_limit_keeps_the_first_rows_and_the_file_count(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id\n1\n2\n3\n")
    table = read_input(source, ["id"], limit=2)
    assert [row["id"] for row in table.records()] == ["1", "2"]
    assert table.file_rows == 3


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"is a directory, not a CSV file"):
        read_input(tmp_path, ["id"])


def test_atomic_write_replaces_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old")
    write_atomically(target, "new,content\n")
    assert target.read_text() == "new,content\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.csv"]  # no temporary left


def test_duplicate_column_names_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,text,id\n1,a,2\n")
    with pytest.raises(InputError, match=r"duplicate column name\(s\) id in the header"):
        read_input(source, ["id"])
