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

``strict_vllm_server`` (session scope) is a second server of the same kind whose model has the
Gemma-2-like chat template (``scripts/build_tiny_model.py --template strict``): a system message is
refused ("System role not supported") and so is any order but user/assistant/user/... Every
pipeline runs against it, so a pipeline that sends what Gemma-2 refuses fails in the suite. It
starts once, on first use (measured here: 56 s to ready on a quiet machine, 145 s for the fixture's
setup at load average 9-10), and is
reused the same way with ``GRACE_STRICT_VLLM_URL`` and ``GRACE_STRICT_MODEL_DIR``
(``python scripts/tiny_vllm.py start --workdir /tmp/strict --template strict``).
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


# The environment variables that point a fixture at an already running server, per chat template.
REUSE_VARIABLES = {
    "plain": ("GRACE_VLLM_URL", "GRACE_TINY_MODEL_DIR"),
    "strict": ("GRACE_STRICT_VLLM_URL", "GRACE_STRICT_MODEL_DIR"),
}


def _reuse_settings(template: str = "plain") -> tuple[str, Path] | None:
    url_variable, dir_variable = REUSE_VARIABLES[template]
    url = os.environ.get(url_variable, "").strip()
    model_dir = os.environ.get(dir_variable, "").strip()
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
    yield from _serve(tmp_path_factory, "plain")


@pytest.fixture(scope="session")
def strict_vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The tiny model with Gemma-2's template refusals (no system role, strict alternation)."""
    yield from _serve(tmp_path_factory, "strict")


def _serve(tmp_path_factory: pytest.TempPathFactory, template: str) -> Iterator[object]:
    reuse = _reuse_settings(template)
    if reuse is not None:
        base_url, model_dir = reuse
        root_url = base_url.removesuffix("/v1")
        url_variable, dir_variable = REUSE_VARIABLES[template]
        if not tiny_vllm.is_healthy(root_url):
            pytest.fail(
                f"{url_variable}={base_url} is set but {root_url}/health does not answer 200", pytrace=False
            )
        if not (model_dir / "config.json").exists():
            pytest.fail(f"{dir_variable}={model_dir} has no config.json", pytrace=False)
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
    workdir = tmp_path_factory.mktemp(f"tiny-vllm-{template}")
    timeout_s = float(os.environ.get("GRACE_VLLM_START_TIMEOUT", tiny_vllm.DEFAULT_START_TIMEOUT_S))
    try:
        model_dir = tiny_vllm.build_model(tiny_vllm.server_python(), workdir / "model", template=template)
        server = tiny_vllm.start_server(model_dir, workdir, timeout_s=timeout_s)
    except tiny_vllm.TinyVllmError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        tiny_vllm.stop_server(server)
