"""Files beside the output: atomic replacement with per-process temporary names, and storage errors.

Every write the worker makes to the output's filesystem goes through here or turns its OSError into a
StorageError with `storage_error`, so a full disk, an exhausted CephFS quota or a read-only remount ends
in one sentence naming the path and the free space (exit 4), never a traceback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from worker import constants as c
from worker.errors import StorageError

__all__ = ["atomic_writer", "free_space", "remove_stale_temporaries", "storage_error", "temporary_for"]


def temporary_for(path: Path) -> Path:
    """`<path>.<pid>.tmp`: two processes never write the same temporary file."""
    return path.with_name(f"{path.name}.{os.getpid()}{c.TEMP_SUFFIX}")


def remove_stale_temporaries(path: Path) -> None:
    """Delete `<path>.*.tmp` left by killed runs; call only while holding the output's lock."""
    for stale in path.parent.glob(f"{path.name}.*{c.TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            stale.unlink()


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[IO[str]]:
    """A text handle whose content replaces `path` only when the block ends without an error.

    Readers treat the output's existence as "complete", so it must never exist half written: the content
    goes to a temporary file that is fsynced, then renamed over `path`, then the directory is fsynced.
    Any failure removes the temporary file and raises StorageError (OSError) or the block's own error.
    """
    temporary = temporary_for(path)
    try:
        with temporary.open("w", encoding="utf-8", newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
        _fsync_directory(path.parent)
    except OSError as err:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise storage_error(path, err) from err
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def write_atomically(path: Path, content: str) -> None:
    """Replace `path` with `content` atomically (see `atomic_writer`)."""
    with atomic_writer(path) as handle:
        handle.write(content)


def free_space(path: Path) -> int | None:
    """Bytes available to this user on the filesystem holding `path` (or its nearest existing parent)."""
    for candidate in (path, *path.parents):
        try:
            stats = os.statvfs(candidate)
        except OSError:
            continue
        return stats.f_bavail * stats.f_frsize
    return None


def storage_error(path: Path, err: OSError, doing: str = "cannot write") -> StorageError:
    """One sentence: the path, the system's reason, the free space, and that finished rows are kept."""
    free = free_space(path.parent)
    room = f"{_size(free)} free there" if free is not None else "free space unknown"
    return StorageError(
        f"{doing} {path}: {err.strerror or err} ({room}); make room or move --output, then rerun: "
        "finished rows are kept in the checkpoint.",
        path=str(path),
    )


def _size(count: int) -> str:
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX: the directory entry lives in the directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
