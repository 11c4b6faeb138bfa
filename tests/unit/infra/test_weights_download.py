"""The weight-download init container's program, run here against a fake `huggingface_hub`.

The fake mimics the parts the program uses: `snapshot_download` and the error classes in
`huggingface_hub.errors` (GatedRepoError subclasses RepositoryNotFoundError, which subclasses
HfHubHTTPError, each carrying `.response.status_code`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from grace_infra import model_server as ms
from grace_infra import weights_download as wd
from grace_infra.config import GraceConfig

from .support import base_config

REPO = "meta-llama/Meta-Llama-3-70B-Instruct"


class HfHubHTTPError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.response = SimpleNamespace(status_code=status)


class RepositoryNotFoundError(HfHubHTTPError):
    pass


class GatedRepoError(RepositoryNotFoundError):
    pass


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Install a fake huggingface_hub; `hub.calls` records downloads, `hub.fail` raises instead."""
    state = SimpleNamespace(calls=[], fail=None)

    def snapshot_download(**kwargs: Any) -> str:
        state.calls.append(kwargs)
        if state.fail is not None:
            raise state.fail
        Path(kwargs["local_dir"], "model.safetensors").write_bytes(b"weights")
        return kwargs["local_dir"]

    package = ModuleType("huggingface_hub")
    package.snapshot_download = snapshot_download  # type: ignore[attr-defined]
    errors = ModuleType("huggingface_hub.errors")
    for cls in (HfHubHTTPError, RepositoryNotFoundError, GatedRepoError):
        setattr(errors, cls.__name__, cls)
    package.errors = errors  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", package)
    monkeypatch.setitem(sys.modules, "huggingface_hub.errors", errors)
    return state


def test_first_run_downloads_and_marks_complete(tmp_path: Path, hub: SimpleNamespace) -> None:
    assert wd.download(REPO, "abc123", tmp_path, ["original/*"]) == 0
    (call,) = hub.calls
    assert call == {
        "repo_id": REPO,
        "revision": "abc123",
        "local_dir": str(tmp_path),
        "ignore_patterns": ["original/*"],
    }
    marker = json.loads((tmp_path / wd.MARKER_FILE).read_text())
    assert marker == {"repo": REPO, "revision": "abc123", "complete": True}


def test_a_restart_skips_a_complete_revision(
    tmp_path: Path, hub: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    wd.download(REPO, "abc123", tmp_path, [])
    assert wd.download(REPO, "abc123", tmp_path, []) == 0
    assert len(hub.calls) == 1
    assert "already complete" in capsys.readouterr().out


def test_a_new_revision_downloads_again(tmp_path: Path, hub: SimpleNamespace) -> None:
    wd.download(REPO, "abc123", tmp_path, [])
    wd.download(REPO, "def456", tmp_path, [])
    assert [call["revision"] for call in hub.calls] == ["abc123", "def456"]
    assert json.loads((tmp_path / wd.MARKER_FILE).read_text())["revision"] == "def456"


def test_an_interrupted_download_is_not_marked_complete(tmp_path: Path, hub: SimpleNamespace) -> None:
    wd.download(REPO, "abc123", tmp_path, [])
    hub.fail = OSError("No space left on device")
    with pytest.raises(OSError, match="No space left"):
        wd.download(REPO, "def456", tmp_path, [])
    assert not (tmp_path / wd.MARKER_FILE).exists()  # the old revision's marker is gone too
    hub.fail = None
    wd.download(REPO, "def456", tmp_path, [])
    assert len(hub.calls) == 3


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (GatedRepoError("gated", 403), "HTTP 403"),
        (RepositoryNotFoundError("no access", 401), "HTTP 401"),
        (HfHubHTTPError("forbidden", 403), "HTTP 403"),
    ],
)
def test_no_access_prints_one_clear_message(
    tmp_path: Path, hub: SimpleNamespace, capsys: pytest.CaptureFixture[str], error: Exception, code: str
) -> None:
    hub.fail = error
    assert wd.download(REPO, "abc123", tmp_path, []) == wd.EXIT_NO_ACCESS
    message = capsys.readouterr().err.strip()
    assert message.startswith(f"grace: cannot download {REPO} ({code}): the Hugging Face token in secret")
    assert f"https://huggingface.co/{REPO}" in message
    assert "\n" not in message
    assert not (tmp_path / wd.MARKER_FILE).exists()


def test_other_http_errors_are_not_disguised_as_access_problems(tmp_path: Path, hub: SimpleNamespace) -> None:
    hub.fail = HfHubHTTPError("server error", 500)
    with pytest.raises(HfHubHTTPError):
        wd.download(REPO, "abc123", tmp_path, [])


def test_the_shipped_source_runs_standalone_with_only_huggingface_hub(tmp_path: Path) -> None:
    """Run the exact `python3 -c` command of the init container, with a fake hub on PYTHONPATH."""
    fake = tmp_path / "site" / "huggingface_hub"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        textwrap.dedent(
            """
            from pathlib import Path
            def snapshot_download(**kw):
                Path(kw["local_dir"], "config.json").write_text("{}")
                print("FAKE", kw["repo_id"], kw["revision"], ",".join(kw["ignore_patterns"]))
            """
        )
    )
    (fake / "errors.py").write_text(
        "class HfHubHTTPError(Exception): pass\n"
        "class RepositoryNotFoundError(HfHubHTTPError): pass\n"
        "class GatedRepoError(RepositoryNotFoundError): pass\n"
    )
    weights = tmp_path / "weights"
    weights.mkdir()
    config = GraceConfig.parse(base_config(models=[{"key": "gpt-oss-20b"}]))
    init = ms.weights_download_init_container(config.served_models()[0], config)
    env = {e["name"]: e["value"] for e in init["env"] if "value" in e}
    env.update(
        GRACE_WEIGHTS_DIR=str(weights), HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(tmp_path / "site")
    )
    command = [sys.executable, *init["command"][1:]]
    first, second = (
        subprocess.run(
            command, env={**os.environ, **env}, capture_output=True, text=True, timeout=30, check=True
        )
        for _ in range(2)
    )
    assert "FAKE openai/gpt-oss-20b main original/*,metal/*" in first.stdout
    assert "FAKE" not in second.stdout
    assert "already complete" in second.stdout
    marker = json.loads((weights / wd.MARKER_FILE).read_text())
    assert marker == {"repo": "openai/gpt-oss-20b", "revision": "main", "complete": True}
