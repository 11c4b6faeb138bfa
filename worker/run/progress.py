"""Progress of a run: a bar on a terminal, a structured log line every few seconds in a pod."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from worker import constants as c

__all__ = ["Progress"]

log = logging.getLogger("worker.run.progress")


class Progress:
    """Counts finished rows and reports rows done/total, rate and ETA at most every interval."""

    def __init__(
        self, pipeline: str, total: int, *, ok: int = 0, failed: int = 0, stream: TextIO | None = None
    ) -> None:
        """`ok` and `failed` count rows a previous run finished (read from the checkpoint)."""
        self.pipeline = pipeline
        self.total = total
        self.ok = ok
        self.failed = failed
        self.done = ok + failed
        self._resumed = self.done
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._started = time.monotonic()
        self._interval = c.PROGRESS_BAR_INTERVAL_S if self._tty else c.PROGRESS_LOG_INTERVAL_S
        self._last_report = 0.0

    def row_finished(self, ok: bool) -> None:
        self.done += 1
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        now = time.monotonic()
        if now - self._last_report >= self._interval:
            self._last_report = now
            self._report(now)

    def close(self) -> None:
        self._report(time.monotonic())
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()

    def _report(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        rate = (self.done - self._resumed) / elapsed
        remaining = self.total - self.done
        eta = remaining / rate if rate > 0 else float("inf")
        if self._tty:
            width = 30
            filled = int(width * self.done / self.total) if self.total else width
            bar = "#" * filled + "-" * (width - filled)
            eta_text = _duration(eta)
            self._stream.write(
                f"\r{self.pipeline} [{bar}] {self.done}/{self.total} rows  {rate:.1f} rows/s  "
                f"ETA {eta_text}  failed {self.failed}  "
            )
            self._stream.flush()
        else:
            # logfmt: one line a log pipeline (Loki, kubectl logs | grep) can parse without a schema
            log.info(
                "progress pipeline=%s done=%d total=%d ok=%d failed=%d rate=%.2f eta_s=%s",
                self.pipeline,
                self.done,
                self.total,
                self.ok,
                self.failed,
                rate,
                "inf" if eta == float("inf") else f"{eta:.0f}",
            )


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
