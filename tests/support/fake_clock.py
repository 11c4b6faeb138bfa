"""A clock that moves only when the code under test sleeps on it, so timing is tested without the wall clock.

Code that waits takes a `clock` (a monotonic reading) and a `sleep`; a test passes these instead of
`time.monotonic` and `time.sleep` / `asyncio.sleep`:

    clock = FakeClock()
    wait_for_input(path, 10, clock=clock, sleep=clock.sleep)        # a blocking wait
    ModelClient(options, clock=clock, sleep=clock.async_sleep)      # an asyncio one
    clock.at(0.4, lambda: path.write_text("x"))                     # something happens 0.4 s in
    clock.slept                                                     # every sleep asked for, in order

Each sleep returns at once, having moved `now` on by what was asked and run what was due by then; an
asynchronous sleep still yields to the event loop once, as a real one does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["FakeClock"]


@dataclass
class FakeClock:
    now: float = 0.0  # seconds, as time.monotonic() would read
    slept: list[float] = field(default_factory=list)  # every sleep asked for, in seconds
    _due: list[tuple[float, Callable[[], object]]] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def at(self, when: float, action: Callable[[], object]) -> None:
        """Run `action` once the clock reaches `when` (on the sleep that gets it there)."""
        self._due.append((when, action))
        self._due.sort(key=lambda entry: entry[0])

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        while self._due and self._due[0][0] <= self.now:
            _, action = self._due.pop(0)
            action()

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)
