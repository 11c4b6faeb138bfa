"""Reading the input CSV exactly as written; writing the output so that its existence means complete."""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from worker import constants as c
from worker.errors import InputError

__all__ = ["InputTable", "read_input", "write_atomically"]


@dataclass(frozen=True)
class InputTable:
    """The input rows to process (all values as text) and what identifies the file they came from."""

    frame: pd.DataFrame  # every column dtype str; ids keep leading zeros, "NA" stays "NA"
    sha256: str  # of the whole file's bytes, so a checkpoint can tell whether its input changed
    file_rows: int  # rows in the file, before --limit


def read_input(path: Path, required_columns: Sequence[str], limit: int | None = None) -> InputTable:
    """Read `path` whole; InputError with one sentence for every way it can be unusable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        # In a Job the deployment says where the file should come from (which claim, how to upload).
        help_text = os.environ.get(c.MISSING_INPUT_HELP_ENV, "")
        raise InputError(f"--input {path}: no such file. {help_text}".rstrip()) from err
    except IsADirectoryError as err:
        raise InputError(f"--input {path}: is a directory, not a CSV file.") from err
    except OSError as err:
        raise InputError(f"--input {path}: cannot be read ({err.strerror}).") from err
    if not data.strip():
        raise InputError(f"--input {path}: the file is empty.")
    try:
        text = data.decode("utf-8-sig")  # -sig: spreadsheet exports often start with a byte-order mark
    except UnicodeDecodeError as err:
        raise InputError(
            f"--input {path}: not UTF-8 text (undecodable byte at offset {err.start}); re-save it as UTF-8."
        ) from err
    try:
        header = next(csv.reader(io.StringIO(text)), [])
    except csv.Error as err:
        raise InputError(f"--input {path}: not a readable CSV header ({err}).") from err
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        # pandas would rename the second "x" to "x.1", and the output's header would no longer be the input's.
        raise InputError(f"--input {path}: duplicate column name(s) {', '.join(duplicates)} in the header.")
    try:
        # dtype=str + keep_default_na=False: "007" stays "007", "NA" and "" stay text, nothing becomes NaN.
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error) as err:
        raise InputError(f"--input {path}: not a readable CSV ({str(err).strip()}).") from err
    missing = [column for column in required_columns if column not in frame.columns]
    if missing:
        raise InputError(
            f"--input {path}: missing column(s) {', '.join(missing)} that this study needs "
            f"(the file has: {', '.join(map(str, frame.columns))})."
        )
    if frame.empty:
        raise InputError(f"--input {path}: the file has a header but no rows.")
    file_rows = len(frame)
    if limit is not None:
        frame = frame.iloc[:limit]
    return InputTable(frame=frame, sha256=hashlib.sha256(data).hexdigest(), file_rows=file_rows)


def write_atomically(path: Path, content: str) -> None:
    """Write `content` to a temporary file beside `path`, fsync it, and rename it into place.

    Readers (the extraction Jobs) treat the output's existence as "complete", so it must never exist half
    written: a crash leaves at most the temporary file, which the next run overwrites.
    """
    temporary = path.with_name(path.name + c.TEMP_SUFFIX)
    with temporary.open("w", encoding="utf-8", newline="") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    _fsync_directory(path.parent)


def frame_to_csv(frame: pd.DataFrame) -> str:
    """CSV text with RFC 4180 line ends.

    The csv module quotes a field only for the delimiter, the quote and the characters of the line
    terminator. With "\n" a lone "\r" in a model's answer (the tiny test model writes them) went out
    unquoted and readers split the row in two; with "\r\n" both characters force quoting.
    """
    return frame.to_csv(index=False, lineterminator="\r\n")


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX: the directory entry lives in the directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
