"""Integration tests against a REAL vLLM CPU server running a tiny model built at test time.

Fixture API
-----------
``vllm_server`` (session scope) yields a ``TinyServer`` (defined in scripts/tiny_vllm.py):

- ``base_url``      ``http://127.0.0.1:PORT/v1``: pass as ``--model-endpoint`` / openai ``base_url``
- ``root_url``      ``http://127.0.0.1:PORT``: vLLM's own endpoints (``/health``, ``/tokenize``, ``/version``)
- ``served_name``   ``"tiny"``: the model name requests must carry (``--model-name``)
- ``model_dir``     Path of the Hugging Face folder the server loaded (tokenizer.json, config.json,
                    model.safetensors): load it with transformers for independent checks
- ``server_python`` Path of ``.venv-vllm/bin/python`` (torch + transformers + tokenizers), for a
                    direct forward pass in a subprocess; the project's .venv has no torch
- ``log_path``      the server's combined stdout/stderr (None when reusing a server)
- ``pid``           process-group leader (None when reusing)

The server: ``--max-model-len 512 --max-logprobs 20 --dtype float32 --enforce-eager`` and
structured outputs with xgrammar and ``disable_any_whitespace``. The tiny model has random
weights, so its text is random (``content`` may even be empty after special tokens are
stripped): assert on structure, counts and exact numbers, never on wording. Its chat template
renders each message as ``<|role|>\\n{content}</s>\\n`` after ``<s>`` and the generation prompt
is ``<|assistant|>\\n``. Single tokens: digits 0-3 and yes/no, with and without a leading space;
several tokens: "terrible", "wasn't", "100%".

Behaviour
---------
- Starts once per session on a free loopback port, in its own process group, waits for
  ``/health`` (deadline ``GRACE_VLLM_START_TIMEOUT``, default 600 s; failure shows the server log
  tail), warms up, and is always stopped at the end of the session.
- Every test marked ``vllm`` (mark modules with ``pytestmark = pytest.mark.vllm``) is SKIPPED with
  the reason when ``.venv-vllm`` is missing, but FAILS instead when the environment variable
  ``CI`` is set (to anything but ``""``/``0``/``false``): CI can never pass without the server.
- Fast local iteration: start a server once with ``python scripts/tiny_vllm.py start --workdir
  /tmp/tiny``, then export ``GRACE_VLLM_URL=http://127.0.0.1:PORT/v1`` and
  ``GRACE_TINY_MODEL_DIR=/tmp/tiny/model``; the fixture then reuses that server and never stops it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.ci import unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load_tiny_vllm() -> ModuleType:
    # scripts/ is not a package: load the one shared server implementation from its file, and
    # register it so its dataclasses pickle and compare like any module's.
    name = "tiny_vllm"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / "tiny_vllm.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


tiny_vllm = _load_tiny_vllm()


def _reuse_settings() -> tuple[str, Path] | None:
    url = os.environ.get("GRACE_VLLM_URL", "").strip()
    model_dir = os.environ.get("GRACE_TINY_MODEL_DIR", "").strip()
    if url and model_dir:
        return url.rstrip("/"), Path(model_dir)
    return None


def _unavailable(reason: str) -> None:
    unavailable(f"the real vLLM server: {reason}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Applies to tests in this directory only (a conftest hook is scoped to its directory).
    if item.get_closest_marker("vllm") is None or _reuse_settings() is not None:
        return
    reason = tiny_vllm.missing_env_reason()
    if reason is not None:
        _unavailable(reason)


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    reuse = _reuse_settings()
    if reuse is not None:
        base_url, model_dir = reuse
        root_url = base_url.removesuffix("/v1")
        if not tiny_vllm.is_healthy(root_url):
            pytest.fail(
                f"GRACE_VLLM_URL={base_url} is set but {root_url}/health does not answer 200", pytrace=False
            )
        if not (model_dir / "config.json").exists():
            pytest.fail(f"GRACE_TINY_MODEL_DIR={model_dir} has no config.json", pytrace=False)
        yield tiny_vllm.TinyServer(
            base_url=base_url,
            root_url=root_url,
            served_name=tiny_vllm.SERVED_NAME,
            model_dir=model_dir,
            server_python=tiny_vllm.server_python(),
            log_path=None,
        )
        return

    reason = tiny_vllm.missing_env_reason()
    if reason is not None:
        _unavailable(reason)
    workdir = tmp_path_factory.mktemp("tiny-vllm")
    timeout_s = float(os.environ.get("GRACE_VLLM_START_TIMEOUT", tiny_vllm.DEFAULT_START_TIMEOUT_S))
    try:
        model_dir = tiny_vllm.build_model(tiny_vllm.server_python(), workdir / "model")
        server = tiny_vllm.start_server(model_dir, workdir, timeout_s=timeout_s)
    except tiny_vllm.TinyVllmError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        tiny_vllm.stop_server(server)
