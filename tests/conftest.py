"""Session-wide test isolation that no single suite can provide for itself.

`asyncio.run()` (the worker's tests run the worker in-process) ends by clearing the thread's
current event loop. Pulumi's mock runtime is synchronous and, in `set_mocks`, registers the root
Stack through `asyncio.get_event_loop()`, which then raises "There is no current event loop in
thread 'MainThread'". Every infra test that ran after any worker test in the same pytest process
failed that way (133 errors in one `pytest tests/`), while each suite alone passed.

So before each test, a thread that `asyncio.run()` left without a current loop gets one. The check
must not create a loop itself (`get_event_loop()` would, implicitly, on a fresh thread), and every
loop made here is kept and closed at the end: a dropped loop is collected unclosed, and its
ResourceWarning is an error under this project's warning filter.
"""

from __future__ import annotations

import asyncio

import pytest

_LOOPS: list[asyncio.AbstractEventLoop] = []


def _current_loop_was_cleared() -> bool:
    # CPython's default policy records the current loop in `_local`; asyncio.run() sets it to None
    # and marks it as explicitly set, which is exactly the state get_event_loop() refuses.
    local = getattr(asyncio.get_event_loop_policy(), "_local", None)
    return local is not None and getattr(local, "_set_called", False) and local._loop is None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # tryfirst: before pytest sets up the test's fixtures (session fixtures render the stack).
    if _current_loop_was_cleared():
        loop = asyncio.new_event_loop()
        _LOOPS.append(loop)
        asyncio.set_event_loop(loop)


def pytest_sessionfinish(session: pytest.Session) -> None:
    for loop in _LOOPS:
        if not loop.is_closed():
            loop.close()
