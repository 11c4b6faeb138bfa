"""Fixtures the worker tests share. The plain helpers they build on live in support.py beside this file,
so modules can import them by name (as tests/unit/infra does with its support.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.fake_clock import FakeClock
from tests.support.fake_openai import FakeOpenAI
from tests.support.toy_lm import ToyLM
from tests.unit.worker.support import Extractor


@pytest.fixture
def server_setup() -> Callable[[FakeOpenAI], None]:
    """What `server` does to its FakeOpenAI before starting it: nothing. A module whose tests need another
    server (a latency, the toy model's handlers, the extractor) overrides this fixture, e.g.
    `return toy.install`."""
    return lambda _server: None


@pytest.fixture
def server(server_setup: Callable[[FakeOpenAI], None]) -> Iterator[FakeOpenAI]:
    """A fresh fault-injecting OpenAI-compatible server (tests/support/fake_openai.py), stopped after."""
    fake = FakeOpenAI()
    server_setup(fake)
    with fake:
        yield fake


@pytest.fixture
def toy() -> ToyLM:
    """The toy language model (tests/support/toy_lm.py); `toy.install(server)` serves it."""
    return ToyLM()


@pytest.fixture
def extractor() -> Extractor:
    """A vLLM-like extractor with no scripted rows yet (support.Extractor); `extractor.install(server)`."""
    return Extractor()


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when slept on (tests/support/fake_clock.py)."""
    return FakeClock()
