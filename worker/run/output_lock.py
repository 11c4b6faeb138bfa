"""One writer per output: an exclusive `flock` on `<output>.lock`, held for the whole run.

Two workers on one output (a replacement pod starting while the old one still terminates; a user rerunning
by hand) would both answer every row and interleave their checkpoint lines. `flock` is advisory but every
worker takes it, and it has the two properties the job needs:
- the kernel CephFS client sends flock requests to the metadata server, which arbitrates them across
  clients (https://github.com/torvalds/linux/blob/master/fs/ceph/locks.c), so two pods on two nodes
  mounting the same PVC exclude each other;
- the kernel drops it when the holder's file descriptor is closed, which includes the holder dying, so a
  killed pod can never leave a stale lock (no pid files to clean up). On CephFS the locks of a node that
  vanishes go when the metadata server evicts that client's session.

The lock file's content names the holder (host, pid, start time) for the second worker's message; the
content is informative only, the lock itself is the kernel's. The holder deletes the file before it
lets go, so a finished run leaves nothing behind; a worker that locked a file which was deleted (or
replaced) meanwhile sees that its inode is no longer the path's and locks the path anew.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from worker import constants as c
from worker.errors import OutputLocked
from worker.run.atomic_files import storage_error

__all__ = ["LockWaitStopped", "hold_output_lock", "lock_path_for"]

log = logging.getLogger(__name__)


class LockWaitStopped(Exception):  # noqa: N818 - names the situation, like the runner's stop
    """`stop_requested` turned true while waiting for another worker's lock (a SIGTERM, say)."""


def lock_path_for(output: Path) -> Path:
    return output.with_name(output.name + c.LOCK_SUFFIX)


@contextlib.contextmanager
def hold_output_lock(
    output: Path, *, wait_s: float = 0.0, stop_requested: Callable[[], bool] = lambda: False
) -> Iterator[None]:
    """Hold `<output>.lock` for the block; OutputLocked naming the holder if still held after `wait_s`.

    While waiting, `stop_requested` is asked every poll: True ends the wait with LockWaitStopped.
    """
    path = lock_path_for(output)
    created = [directory for directory in (path.parent, *path.parent.parents) if not directory.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise storage_error(path, err, "cannot create the output's directory for") from err
    try:
        fd = _acquire(path, wait_s, stop_requested)
        try:
            _describe_holder(fd, path)
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()  # while still holding it: nobody is between locking and checking the inode
            os.close(fd)  # releases the lock
    finally:
        for directory in created:  # a run that wrote nothing leaves no empty directories behind
            with contextlib.suppress(OSError):
                directory.rmdir()


def _acquire(path: Path, wait_s: float, stop_requested: Callable[[], bool]) -> int:
    """A descriptor of `path` holding its exclusive lock."""
    deadline = time.monotonic() + wait_s
    announced = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise storage_error(path, err, "cannot create the output's lock file") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in {errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES}:
                raise storage_error(path, err, "cannot lock") from err
        else:
            if _still_the_path(fd, path):
                return fd
            os.close(fd)  # the holder deleted it between our open and our lock: lock the new file
            continue
        holder = _holder(path)
        if time.monotonic() >= deadline:
            waited = f" after waiting {wait_s:g} s (--wait-for-lock)" if wait_s else ""
            raise OutputLocked(
                f"--output {path.with_suffix('')}: another worker is writing it ({holder}){waited}; "
                "let it finish, stop it, or pass --wait-for-lock SECONDS to wait for it."
            )
        if stop_requested():
            raise LockWaitStopped
        if not announced:
            log.info("waiting up to %g s for %s, locked by %s", wait_s, path, holder)
            announced = True
        time.sleep(min(c.LOCK_POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))


def _still_the_path(fd: int, path: Path) -> bool:
    try:
        return path.stat().st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _describe_holder(fd: int, path: Path) -> None:
    """Write who holds the lock into the lock file (only the holder ever writes it)."""
    holder = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    data = (json.dumps(holder) + "\n").encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError as err:
        raise storage_error(path, err, "cannot write the output's lock file") from err


def _holder(path: Path) -> str:
    """`host H, pid P, since T` from the lock file, or what is known when it cannot be read."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return f"host {holder['host']}, pid {holder['pid']}, since {holder['started_at']}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"holder not yet recorded in {path.name}"
