"""Fixtures every test shares."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """The root logger as it was before the test.

    `worker.cli.main` configures logging for its process (`basicConfig(stream=sys.stderr, force=True)`);
    called in-process under capsys, that handler writes to a capture stream pytest closes after the test,
    and a later test's library warning (urllib3's retry) would print a logging traceback into its stderr.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for added in [handler for handler in root.handlers if handler not in handlers]:
        added.close()  # a FileHandler ($GRACE_LOG_FILE) holds its file open until closed
    root.handlers[:] = handlers
    root.setLevel(level)
