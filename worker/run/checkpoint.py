"""The append-only checkpoint `<output>.partial.jsonl`: one JSON line per finished work item.

Line 1 is a header naming the pipeline, the input file's SHA-256 and the run's parameters; every later
line is one finished work item, `{"row": 17, "sample": 0, "failure": null, "columns": {...}}` (input row
17's first sample), a success or a failure. `failure` says which kind:
  null         success: final, a later line for the same item is ignored;
  "row"        the row itself failed (a 400 for a prompt over the context length, an answer that does not
               parse): kept as the row's result unless the run is given --retry-failed;
  "transport"  the server could not be reached or kept failing after every retry: the next run sends the
               row again, and its new line supersedes this one.
A line without `sample` is sample 0; one without `failure` is a row failure when its error column is set.

A restarted run with the same input and parameters skips the finished items; any other run is refused,
because mixing rows from two different runs into one output would silently corrupt an experiment.

Memory: loading keeps one byte offset and one state byte per work item (9 MB for a million), never the
columns; the final output reads each item's line back by its offset.

Durability: each line is written (one write(2), no user-space buffer) before its item counts as done, so
a `kill -9` loses only the requests in flight. A background group commit fsyncs every half second, so a
node crash loses at most the last moment of rows, which the rerun does again; a torn or garbled tail
from such a crash is cut off on load. Damaged lines in the middle (a disk or a hand edit) are moved to
`<checkpoint>.rejected` and their items redone. A write refused by the filesystem (full, read-only) is
undone by truncating to the last complete line, so the checkpoint stays loadable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

from worker import constants as c
from worker.contract import same_run
from worker.errors import InputError
from worker.run.atomic_files import storage_error, temporary_for

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointIndex",
    "CheckpointWriter",
    "ItemKey",
    "ItemState",
    "load_checkpoint",
    "make_header",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1  # bump when the line layout changes; older checkpoints are then refused

ItemKey = tuple[int, int]  # (input row index, sample index): one work item, one output row


class ItemState(IntEnum):
    """What the checkpoint says about one work item (one byte each in CheckpointIndex)."""

    PENDING = 0  # no line yet
    OK = 1
    ROW_FAILED = 2  # failure "row": final unless --retry-failed
    TRANSPORT_FAILED = 3  # failure "transport": redone by the next run

    @property
    def failure(self) -> str | None:
        """The line's `failure` value."""
        return {ItemState.ROW_FAILED: "row", ItemState.TRANSPORT_FAILED: "transport"}.get(self)


_STATE_OF_FAILURE = {None: ItemState.OK, "row": ItemState.ROW_FAILED, "transport": ItemState.TRANSPORT_FAILED}


def make_header(pipeline: str, input_sha256: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    # Round-trip through JSON so tuples and lists compare equal with what a reload reads back.
    return json.loads(
        json.dumps(
            {
                "checkpoint": CHECKPOINT_FORMAT,
                "pipeline": pipeline,
                "input_sha256": input_sha256,
                "parameters": dict(parameters),
            },
            sort_keys=True,
        )
    )


@dataclass
class CheckpointIndex:
    """Where each work item's line is and what it says, for `rows` x `samples_per_row` items."""

    rows: int
    samples_per_row: int
    offsets: array[int] = field(init=False)  # byte offset of the item's line, -1 when it has none
    states: bytearray = field(init=False)  # ItemState per item

    def __post_init__(self) -> None:
        size = self.rows * self.samples_per_row
        self.offsets = array("q", [-1]) * size
        self.states = bytearray(size)

    def in_order(self) -> Iterator[ItemKey]:
        """Every work item in output order: row by row, samples in order."""
        for row in range(self.rows):
            for sample in range(self.samples_per_row):
                yield row, sample

    def state(self, key: ItemKey) -> ItemState:
        return ItemState(self.states[self._slot(key)])

    def offset(self, key: ItemKey) -> int:
        return self.offsets[self._slot(key)]

    def record(self, key: ItemKey, state: ItemState, *, offset: int) -> None:
        """Note a line; a success is final, a failure is superseded by any later line for the item."""
        if not self.covers(key):
            return  # an item outside this run (an earlier run had a larger --limit): kept, not used
        slot = self._slot(key)
        if self.states[slot] != ItemState.OK:
            self.offsets[slot] = offset
            self.states[slot] = state

    def covers(self, key: ItemKey) -> bool:
        row, sample = key
        return 0 <= row < self.rows and 0 <= sample < self.samples_per_row

    def count(self, state: ItemState) -> int:
        return self.states.count(state)

    def pending(self, *, retry_failed: bool) -> Iterator[ItemKey]:
        """Items this run must send: no line, a transport failure, and with `retry_failed` a row failure."""
        redo = {ItemState.PENDING, ItemState.TRANSPORT_FAILED}
        if retry_failed:
            redo.add(ItemState.ROW_FAILED)
        for key in self.in_order():
            if self.states[self._slot(key)] in redo:
                yield key

    def _slot(self, key: ItemKey) -> int:
        return key[0] * self.samples_per_row + key[1]


def load_checkpoint(
    path: Path,
    header: Mapping[str, Any],
    *,
    rows: int,
    samples_per_row: int = 1,
    error_column: str = "error",
) -> CheckpointIndex:
    """The finished items of `path` (none when it does not exist); refuses a checkpoint of another run.

    Cuts off a torn tail, and moves damaged lines in the middle to `<path>.rejected` with one warning.
    """
    index = CheckpointIndex(rows=rows, samples_per_row=samples_per_row)
    if not path.exists():
        return index
    try:
        scan = _scan(path, header, index, error_column)
    except OSError as err:
        raise InputError(f"checkpoint {path}: cannot be read ({err.strerror}).") from err
    if scan.rejected:
        _move_aside(path, scan.rejected)
    elif scan.tail_at is not None:
        log.warning(
            "checkpoint %s: cutting %d bytes of unfinished lines from an interrupted run",
            path,
            scan.size - scan.tail_at,
        )
        try:
            with path.open("r+b") as handle:
                handle.truncate(scan.tail_at)
        except OSError as err:
            raise storage_error(path, err, "cannot cut the unfinished tail of") from err
    return index


@dataclass
class _Scan:
    size: int = 0  # the file's size in bytes
    tail_at: int | None = None  # where the torn/garbled tail starts, if there is one
    rejected: dict[int, bytes] = field(default_factory=dict)  # line number -> damaged middle line


def _scan(path: Path, header: Mapping[str, Any], index: CheckpointIndex, error_column: str) -> _Scan:
    """Read every line once, indexing the good ones at the offsets they will have once rejects are gone."""
    scan = _Scan()
    suspects: list[tuple[int, int, bytes]] = []  # (line number, original offset, bytes): bad so far
    kept_offset = 0  # offset in the file as it will be without the rejected lines
    with path.open("rb") as handle:
        first = handle.readline()
        if not first:
            return scan
        if not first.endswith(b"\n"):
            scan.size, scan.tail_at = len(first), 0  # even the header was not finished: start over
            return scan
        found = _parse_header(path, first)
        if not same_run(found, header):
            raise InputError(
                f"checkpoint {path} was written by a different run ({_difference(found, header)}); "
                "rerun with the same input and parameters, or delete the checkpoint to start over."
            )
        offset = kept_offset = len(first)
        number = 1
        for line in iter(handle.readline, b""):
            number += 1
            record = _row_record(line, error_column) if line.endswith(b"\n") else None
            if record is None:
                suspects.append((number, offset, line))
            else:
                for bad_number, _, bad in suspects:  # a good line follows: they are damage, not a tail
                    scan.rejected[bad_number] = bad
                suspects.clear()
                index.record(*record, offset=kept_offset)
                kept_offset += len(line)
            offset += len(line)
        scan.size = offset
    if suspects:
        scan.tail_at = suspects[0][1]
        if scan.rejected:  # the rewrite drops the tail too
            scan.rejected.update({number: line for number, _, line in suspects if line.strip(b"\x00\n")})
    return scan


def _move_aside(path: Path, rejected: dict[int, bytes]) -> None:
    """Append the damaged lines to `<path>.rejected`, rewrite `path` without them, warn once."""
    aside = path.with_name(path.name + c.REJECTED_SUFFIX)
    temporary = temporary_for(path)
    try:
        with aside.open("ab") as out:
            for line in rejected.values():
                out.write(line if line.endswith(b"\n") else line + b"\n")
            out.flush()
            os.fsync(out.fileno())
        with path.open("rb") as source, temporary.open("wb") as target:
            for number, line in enumerate(iter(source.readline, b""), start=1):
                if number not in rejected and line.endswith(b"\n"):
                    target.write(line)
            target.flush()
            os.fsync(target.fileno())
        temporary.replace(path)
    except OSError as err:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise storage_error(path, err, "cannot move damaged lines out of") from err
    numbers = sorted(rejected)
    more = f" and {len(numbers) - 10} more" if len(numbers) > 10 else ""
    shown = ", ".join(map(str, numbers[:10])) + more
    log.warning(
        "checkpoint %s: line(s) %s damaged; moved to %s, their rows will be redone",
        path,
        shown,
        aside.name,
    )


class CheckpointWriter:
    """Appends finished items: a line is in the OS when `append` returns; fsync follows in the background."""

    def __init__(self, path: Path, fd: int, offset: int) -> None:
        self._path = path
        self._fd = fd
        self._offset = offset  # end of the last complete line
        self._written = 0  # lines written
        self._synced = 0  # lines known to be on disk
        self._sync_task: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, path: Path, header: Mapping[str, Any]) -> CheckpointWriter:
        """Open for appending, writing the header first when the file is new or empty."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            offset = os.lseek(fd, 0, os.SEEK_END)
        except OSError as err:
            raise storage_error(path, err) from err
        writer = cls(path, fd, offset)
        if offset == 0:
            writer._write(_line(header))
            writer._fsync()
        return writer

    @property
    def synced(self) -> int:
        """Lines known to be on disk (not only in the OS's cache)."""
        return self._synced

    def append(self, key: ItemKey, columns: Mapping[str, Any], state: ItemState) -> int:
        """Write one finished item; its line's offset. Call from the event loop. StorageError on failure."""
        row, sample = key
        line = _line({"row": row, "sample": sample, "failure": state.failure, "columns": columns})
        offset = self._write(line)
        self._written += 1
        # Group commit: a background task fsyncs at most every CHECKPOINT_SYNC_INTERVAL_S, covering every
        # line written by then. Rows never wait for it: on the busy shared disk an fsync took ~0.7 s, and
        # waiting for it capped a 64-in-flight run at ~85 rows/s; an fsync per row on a fast disk cost a
        # task, a thread hop and a syscall per row instead.
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_pending())
        return offset

    def _write(self, data: bytes) -> int:
        start = self._offset
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]  # a full disk can take part of a line first
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)  # no half line left for the next run to stumble on
            raise storage_error(self._path, err) from err
        self._offset = start + len(data)
        return start

    def _fsync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as err:
            raise storage_error(self._path, err, "cannot sync") from err

    async def _sync_pending(self) -> None:
        while self._synced < self._written:
            await asyncio.sleep(c.CHECKPOINT_SYNC_INTERVAL_S)
            covered = self._written
            with contextlib.suppress(OSError):  # the next append or aclose reports a failing disk
                await asyncio.to_thread(os.fsync, self._fd)
                self._synced = covered

    async def aclose(self) -> None:
        """Stop the background fsync, sync everything, close. StorageError when the sync fails."""
        task = self._sync_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            self._fsync()
            self._synced = self._written
        finally:
            os.close(self._fd)


class CheckpointReader:
    """Reads items' columns back by offset, for the final output."""

    def __init__(self, path: Path) -> None:
        self._handle = path.open("rb")

    def columns(self, offset: int) -> dict[str, Any]:
        self._handle.seek(offset)
        return json.loads(self._handle.readline())["columns"]

    def close(self) -> None:
        self._handle.close()


def _line(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode()


def _row_record(line: bytes, error_column: str) -> tuple[ItemKey, ItemState] | None:
    """(key, state) of a well-formed item line, None for anything else."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    row, sample, failure, columns = (
        record.get("row"),
        record.get("sample", 0),
        record.get("failure"),
        record.get("columns"),
    )
    if not (isinstance(row, int) and isinstance(sample, int) and isinstance(columns, dict)):
        return None
    if failure not in _STATE_OF_FAILURE:
        return None
    state = _STATE_OF_FAILURE[failure]
    if "failure" not in record and columns.get(error_column):
        state = ItemState.ROW_FAILED  # a line from before failures had kinds
    return (row, sample), state


def _parse_header(path: Path, line: bytes) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError as err:
        raise InputError(
            f"checkpoint {path} line 1 (its header) is not JSON ({err}); delete the file to start over."
        ) from err
    if not isinstance(record, dict):
        raise InputError(
            f"checkpoint {path} line 1 (its header) is not a JSON object; delete the file to start over."
        )
    return record


def _difference(found: Mapping[str, Any], expected: Mapping[str, Any]) -> str:
    """Name what differs, e.g. `input_sha256 differs` or `parameters.temperature: 0.7 != 0.0`."""
    if found.get("checkpoint") != expected.get("checkpoint"):
        return f"format {found.get('checkpoint')!r}; this worker writes {expected.get('checkpoint')!r}"
    if found.get("pipeline") != expected.get("pipeline"):
        return f"pipeline {found.get('pipeline')!r}, not {expected.get('pipeline')!r}"
    if found.get("input_sha256") != expected.get("input_sha256"):
        return "its input file had different contents"
    old, new = found.get("parameters") or {}, expected.get("parameters") or {}
    changed = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
    shown = "; ".join(f"{key}: {old.get(key)!r} then, {new.get(key)!r} now" for key in changed[:3])
    return f"different parameters: {shown}" if shown else "a different header"
