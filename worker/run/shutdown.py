"""SIGTERM and SIGINT as a request to stop cleanly, also when the worker is PID 1.

Kubernetes stops a pod (preemption, eviction, a node drain, `kubectl delete`) with SIGTERM and sends
SIGKILL after terminationGracePeriodSeconds (https://kubernetes.io/docs/concepts/workloads/pods/
pod-lifecycle/#pod-termination). In the job image `python -m worker` is PID 1, and by pid_namespaces(7)
a process outside the namespace (the container runtime) can "send signals to the "init" process of a
child PID namespace only if the "init" process has established a handler for that signal": without a
handler SIGTERM is ignored and the pod is SIGKILLed at the end of the period. With one, the worker stops
taking rows, gives the requests in flight SHUTDOWN_GRACE_S, flushes the checkpoint, writes the meta file
and exits 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), PID 1 or not. A second signal
abandons the requests in flight at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from worker import contract

__all__ = ["StopSignals"]

HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Records SIGTERM/SIGINT and wakes the run's event loop; `installed()` scopes the handlers."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None  # the first signal
        self.count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._abandon: asyncio.Event | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Handle the signals for the block (main thread only: Python delivers signals there)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {number: signal.signal(number, self._handle) for number in HANDLED}
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def attach(self) -> None:
        """Bind to the running event loop (call from inside it); a signal already received counts."""
        self._loop = asyncio.get_running_loop()
        self._stop, self._abandon = asyncio.Event(), asyncio.Event()
        self._wake()

    @property
    def stop_requested(self) -> bool:
        return self.received is not None

    @property
    def exit_code(self) -> int:
        return contract.EXIT_SIGNAL_BASE + int(self.received or 0)

    @property
    def name(self) -> str:
        return self.received.name if self.received is not None else ""

    async def wait_for_stop(self) -> None:
        assert self._stop is not None, "attach() first"
        await self._stop.wait()

    async def wait_for_abandon(self) -> None:
        assert self._abandon is not None, "attach() first"
        await self._abandon.wait()

    def _handle(self, number: int, _frame: FrameType | None) -> None:
        # Runs in the main thread between bytecodes; the loop may be blocked in select(), so wake it.
        self.count += 1
        if self.received is None:
            self.received = signal.Signals(number)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if self._stop is not None and self.count >= 1:
            self._stop.set()
        if self._abandon is not None and self.count >= 2:
            self._abandon.set()
