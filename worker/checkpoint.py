"""The append-only checkpoint `<output>.partial.jsonl`: one JSON line per finished row.

Line 1 is a header naming the pipeline, the input file's SHA-256 and the run's parameters; every later
line is one finished work item (`{"row": 17, "sample": 0, "columns": {...}}`: input row 17's first sample),
success or permanent failure; a line without `sample` is sample 0. A restarted run
with the same input and parameters skips the rows listed; any other run is refused, because mixing rows
from two different runs into one output would silently corrupt an experiment.

Durability: each line is written and flushed before its row counts as done, so a `kill -9` loses only the
requests in flight. A background group commit fsyncs the lines every half second, so a node crash loses at
most the last moment of rows, which the rerun simply does again; a torn or garbled tail from such a crash
is cut off on load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from worker import constants as c
from worker.errors import InputError

__all__ = ["CHECKPOINT_FORMAT", "CheckpointWriter", "ItemKey", "load_checkpoint"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1  # bump when the line layout changes; older checkpoints are then refused

ItemKey = tuple[int, int]  # (input row index, sample index): one work item, one output row


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


def load_checkpoint(path: Path, header: Mapping[str, Any]) -> dict[ItemKey, dict[str, Any]]:
    """Finished work items by (row, sample); {} without a checkpoint. Refuses a foreign checkpoint.

    A torn last line (the process died mid-write) is cut off so appending continues on a clean line.
    """
    if not path.exists():
        return {}
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputError(f"checkpoint {path}: cannot be read ({err.strerror}).") from err
    # Everything after the last newline is a line the previous run did not finish writing, and a node
    # crash can leave garbage (zeros) after the last synced line: both are cut off, after the header check.
    lines = raw.split(b"\n")[:-1]
    keep = len(lines)
    while keep > 1 and not _is_json_object(lines[keep - 1]):
        keep -= 1
    complete = lines[:keep]
    if complete:
        found = _parse_line(path, 1, complete[0])
        if found != dict(header):
            raise InputError(
                f"checkpoint {path} was written by a different run ({_difference(found, header)}); "
                "rerun with the same input and parameters, or delete the checkpoint to start over."
            )
    size = sum(len(line) + 1 for line in complete)
    if size < len(raw):
        log.warning(
            "checkpoint %s: cutting %d bytes of unfinished lines from an interrupted run",
            path,
            len(raw) - size,
        )
        with path.open("r+b") as handle:
            handle.truncate(size)
    done: dict[ItemKey, dict[str, Any]] = {}
    for number, line in enumerate(complete[1:], start=2):
        record = _parse_line(path, number, line)
        row, sample, columns = record.get("row"), record.get("sample", 0), record.get("columns")
        if not isinstance(row, int) or not isinstance(sample, int) or not isinstance(columns, dict):
            raise InputError(
                f"checkpoint {path} line {number}: not a row record; delete the file to start over."
            )
        done.setdefault((row, sample), columns)  # finished once; a duplicate line cannot change it
    return done


class CheckpointWriter:
    """Appends finished rows: a line is in the OS when `append` returns; fsync follows in the background."""

    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle
        self._written = 0  # lines written and flushed
        self._synced = 0  # lines known to be on disk
        self._sync_task: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, path: Path, header: Mapping[str, Any]) -> CheckpointWriter:
        """Open for appending, writing the header first when the file is new or empty."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a", encoding="utf-8")
        if handle.tell() == 0:
            handle.write(_line(header))
            handle.flush()
            os.fsync(handle.fileno())
        return cls(handle)

    @property
    def synced(self) -> int:
        """Rows known to be on disk (not only in the OS's cache)."""
        return self._synced

    def append(self, key: ItemKey, columns: Mapping[str, Any]) -> None:
        """Write and flush one finished work item; call from the event loop."""
        row_index, sample_index = key
        self._handle.write(_line({"row": row_index, "sample": sample_index, "columns": dict(columns)}))
        self._handle.flush()  # in the OS now: survives kill -9 of this process
        self._written += 1
        # Group commit: a background task fsyncs at most every CHECKPOINT_SYNC_INTERVAL_S, covering every
        # line written by then. Rows never wait for it: on the busy shared disk an fsync took ~0.7 s, and
        # waiting for it capped a 64-in-flight run at ~85 rows/s; an fsync per row on a fast disk cost a
        # task, a thread hop and a syscall per row instead.
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_pending())

    async def _sync_pending(self) -> None:
        while self._synced < self._written:
            await asyncio.sleep(c.CHECKPOINT_SYNC_INTERVAL_S)
            covered = self._written
            await asyncio.to_thread(os.fsync, self._handle.fileno())
            self._synced = covered

    async def aclose(self) -> None:
        """Stop the background fsync, sync everything, close."""
        task = self._sync_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._synced = self._written
        self._handle.close()


def _is_json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"


def _parse_line(path: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError as err:
        raise InputError(
            f"checkpoint {path} line {number} is not JSON ({err}); delete the file to start over."
        ) from err
    if not isinstance(record, dict):
        raise InputError(
            f"checkpoint {path} line {number} is not a JSON object; delete the file to start over."
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
