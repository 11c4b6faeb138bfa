"""Reading the input CSV exactly as written, as a stream: memory stays flat however many rows it has.

`read_input` checks the whole file once (encoding, header, every row's field count) and hashes it on the
way; `InputTable.records()` then reads it again row by row for the run and for the final output. Values
stay text: "007" keeps its zeros, "NA" and "" stay what they are.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from worker import contract
from worker.errors import InputError

__all__ = ["InputTable", "read_input"]

_CHUNK = 1 << 20
# The csv module refuses fields over 128 KiB by default; a model's answer copied into an input (extraction
# reads query outputs) can be longer.
csv.field_size_limit(1 << 30)


@dataclass(frozen=True)
class InputTable:
    """The input file: its columns, what identifies it, and its rows as a stream of dicts of text."""

    path: Path
    columns: tuple[str, ...]
    sha256: str  # of the whole file's bytes, so a checkpoint can tell whether its input changed
    file_rows: int  # rows in the file, before --limit
    rows: int  # rows to process: file_rows, or --limit when smaller

    def records(self) -> Iterator[dict[str, str]]:
        """The rows to process, in order, one dict per row (a short row's missing fields are "")."""
        with self.path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(
                handle, strict=True
            )  # strict: an unclosed quote is an error, not a long field
            next(reader)
            width = len(self.columns)
            for fields in itertools.islice((fields for fields in reader if fields), self.rows):
                padding = [""] * (width - len(fields))
                yield dict(zip(self.columns, [*fields, *padding], strict=True))


def read_input(path: Path, required_columns: Sequence[str], limit: int | None = None) -> InputTable:
    """Check `path` in one streaming pass; InputError with one sentence for every way it is unusable."""
    sha256 = _check_bytes(path)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, strict=True)  # strict: an unclosed quote is an error, not a long field
        try:
            columns = tuple(next(reader, []))
            rows = 0
            for fields in reader:
                if not fields:
                    continue  # a blank line is no row (as spreadsheets and pandas read it)
                rows += 1
                if len(fields) > len(columns):
                    raise InputError(
                        f"--input {path}: not a readable CSV (line {reader.line_num} has {len(fields)} "
                        f"fields, the header {len(columns)}); quote values that contain commas."
                    )
        except csv.Error as err:
            raise InputError(f"--input {path}: not a readable CSV (line {reader.line_num}: {err}).") from err
    _check_header(path, columns, required_columns)
    if rows == 0:
        raise InputError(f"--input {path}: the file has a header but no rows.")
    return InputTable(
        path=path,
        columns=columns,
        sha256=sha256,
        file_rows=rows,
        rows=rows if limit is None else min(rows, limit),
    )


def _check_bytes(path: Path) -> str:
    """The file's SHA-256; InputError when it is missing, empty or not UTF-8 (naming the byte offset)."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    blank = True
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                blank = blank and not chunk.strip()
                pending = len(decoder.getstate()[0])  # bytes of a character split across chunks
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as err:
                    raise InputError(
                        f"--input {path}: not UTF-8 text (undecodable byte at offset "
                        f"{offset - pending + err.start}); re-save it as UTF-8."
                    ) from err
                offset += len(chunk)
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError as err:
                raise InputError(
                    f"--input {path}: not UTF-8 text (the file ends inside a character); re-save it as UTF-8."
                ) from err
    except FileNotFoundError as err:
        # In a Job the deployment says where the file should come from (which claim, how to upload).
        help_text = os.environ.get(contract.MISSING_INPUT_HELP_ENV, "")
        raise InputError(f"--input {path}: no such file. {help_text}".rstrip()) from err
    except IsADirectoryError as err:
        raise InputError(f"--input {path}: is a directory, not a CSV file.") from err
    except OSError as err:
        raise InputError(f"--input {path}: cannot be read ({err.strerror}).") from err
    if blank:
        raise InputError(f"--input {path}: the file is empty.")
    return digest.hexdigest()


def _check_header(path: Path, columns: Sequence[str], required_columns: Sequence[str]) -> None:
    duplicates = sorted({name for name in columns if columns.count(name) > 1})
    if duplicates:
        # The output repeats the input's header; two columns of one name would be ambiguous to every reader.
        raise InputError(f"--input {path}: duplicate column name(s) {', '.join(duplicates)} in the header.")
    missing = [column for column in required_columns if column not in columns]
    if missing:
        raise InputError(
            f"--input {path}: missing column(s) {', '.join(missing)} that this study needs "
            f"(the file has: {', '.join(columns)})."
        )
