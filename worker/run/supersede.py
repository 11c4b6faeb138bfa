"""A changed experiment runs; the run it replaces is moved aside, never deleted.

When a run finds files beside its output that a different run made (a checkpoint whose header names
other input or parameters, or an output with no checkpoint to account for it), `--supersede` moves the
output, checkpoint and meta file into

    <output dir>/superseded/<UTC time, e.g. 20261130T031500Z>/

keeping their names, writes `<output name>.superseded-by.json` there (which run replaced them, when),
and returns a record the new meta file carries under `supersedes`. Without `--supersede` nothing is
moved and the runner refuses (exit 2): a researcher running by hand decides.

Moves are renames within one filesystem (the output claim), so a crash leaves every file either in
place or in the folder, never half-copied.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from worker.contract import RunMeta, same_run
from worker.errors import InputError
from worker.run.atomic_files import write_atomically
from worker.run.run_options import RunOptions

__all__ = ["SUPERSEDED_DIR", "carried_record", "checkpoint_header", "move_aside_if_foreign"]

log = logging.getLogger(__name__)

SUPERSEDED_DIR = "superseded"
SUPERSEDED_BY_SUFFIX = ".superseded-by.json"
_STAMP = "%Y%m%dT%H%M%SZ"


def checkpoint_header(path: Path) -> dict[str, Any] | None:
    """The checkpoint's first line as a dict; None when the file is missing, empty or not JSON."""
    try:
        with path.open("rb") as handle:
            first = handle.readline()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise InputError(f"checkpoint {path}: cannot be read ({err.strerror}).") from err
    try:
        header = json.loads(first)
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


def _foreign(options: RunOptions, header: Mapping[str, Any]) -> str | None:
    """Why the files beside the output belong to another run, or None when they are this run's."""
    checkpoint = options.checkpoint_path
    if checkpoint.exists():
        found = checkpoint_header(checkpoint)
        if found is None and checkpoint.stat().st_size == 0:
            return None  # an empty checkpoint: the writer adds the header
        if not same_run(found, header):
            return "its checkpoint was written with other input or parameters"
        return None
    if options.output.exists():
        return "the output has no checkpoint beside it to show which run made it"
    return None


def _recorded(section: BaseModel, key: str, otherwise: Any) -> Any:
    """The section's value for `key` when the file has that key (null included), else `otherwise`."""
    return getattr(section, key) if key in section.model_fields_set else otherwise


def _free_folder(parent: Path, stamp: str, names: list[str]) -> Path:
    """`superseded/<stamp>`, or `<stamp>-2`, ... when a file of the same name is already there."""
    folder = parent / SUPERSEDED_DIR / stamp
    attempt = 1
    while any((folder / name).exists() for name in names):
        attempt += 1
        folder = parent / SUPERSEDED_DIR / f"{stamp}-{attempt}"
    return folder


def carried_record(options: RunOptions, header: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `supersedes` record of an earlier attempt of this same run (a resume after a stop), so the
    finished run's meta file still says which run it replaced."""
    meta = RunMeta.read(options.meta_path)
    return meta.supersedes if meta is not None and same_run(meta, header) else None


def move_aside_if_foreign(
    options: RunOptions, header: Mapping[str, Any], *, started_at: datetime
) -> dict[str, Any] | None:
    """Move another run's output, checkpoint and meta aside (see module doc); the record for the new
    meta file, or None when nothing had to move (or `options.supersede` is off: the runner then
    refuses). Raises InputError when the files cannot be moved."""
    if not options.supersede:
        return None  # the runner's own checks refuse, naming the file
    reason = _foreign(options, header)
    if reason is None:
        return None
    files = [p for p in (options.output, options.checkpoint_path, options.meta_path) if p.exists()]
    old_meta = RunMeta.read(options.meta_path) or RunMeta()
    old_header = checkpoint_header(options.checkpoint_path) or {}
    stamp = started_at.astimezone(UTC).strftime(_STAMP)
    folder = _free_folder(options.output.parent, stamp, [p.name for p in files])
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path in files:
            path.rename(folder / path.name)
    except OSError as err:
        raise InputError(
            f"--output {options.output}: cannot move the superseded files into {folder} ({err.strerror})."
        ) from err
    # What the old meta file says, else (no such key: no meta file, or one without it) the old header.
    previous = {
        "pipeline": _recorded(old_meta, "pipeline", old_header.get("pipeline")),
        "started_at": old_meta.started_at,
        "finished_at": old_meta.finished_at,
        "input_sha256": _recorded(old_meta.input, "sha256", old_header.get("input_sha256")),
        "parameters": _recorded(old_meta, "parameters", old_header.get("parameters")),
        "plan_digest": old_meta.plan_digest,
    }
    record = {
        "moved_to": str(folder),
        "files": [path.name for path in files],
        "reason": reason,
        "previous_run": previous,
    }
    superseded_by = {
        "superseded_at": datetime.now(UTC).isoformat(),
        "by_run_started_at": started_at.isoformat(),
        "by": {
            "pipeline": header.get("pipeline"),
            "input_sha256": header.get("input_sha256"),
            "parameters": header.get("parameters"),
            "plan_digest": options.plan_digest,
            "command_line": list(options.command_line),
        },
        "reason": reason,
    }
    note = folder / f"{options.output.name}{SUPERSEDED_BY_SUFFIX}"
    write_atomically(note, json.dumps(superseded_by, indent=2, ensure_ascii=False) + "\n")
    log.warning("%s: %s; moved %s into %s", options.output, reason, ", ".join(record["files"]), folder)
    return record
