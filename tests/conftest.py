"""Session-wide test isolation that no single suite can provide for itself.

`asyncio.run()` (the worker's tests run the worker in-process) ends by clearing the thread's
current event loop. Pulumi's mock runtime is synchronous and, in `set_mocks`, registers the root
Stack through `asyncio.get_event_loop()`, which then raises "There is no current event loop in
thread 'MainThread'". Every infra test that ran after any worker test in the same pytest process
failed that way (133 errors in one `pytest tests/`), while each suite alone passed.

One loop for the whole session is made current again before every test. It is never dropped, so
it cannot be garbage-collected unclosed (a ResourceWarning, an error under this project's warning
filter), and it is closed when the session ends. `asyncio.run()` is unaffected: it only refuses
to start inside a *running* loop.
"""

from __future__ import annotations

import asyncio

import pytest

_SESSION_LOOP: asyncio.AbstractEventLoop | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _SESSION_LOOP  # noqa: PLW0603 (one loop per pytest process, by design)
    _SESSION_LOOP = asyncio.new_event_loop()
    asyncio.set_event_loop(_SESSION_LOOP)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # tryfirst: before pytest sets up the test's fixtures (session fixtures render the stack).
    if _SESSION_LOOP is not None and not _SESSION_LOOP.is_closed():
        asyncio.set_event_loop(_SESSION_LOOP)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _SESSION_LOOP is not None and not _SESSION_LOOP.is_closed():
        asyncio.set_event_loop(None)
        _SESSION_LOOP.close()
