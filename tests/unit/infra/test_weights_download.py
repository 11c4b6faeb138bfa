"""The weight-download Job's program, run here against a fake `huggingface_hub`.

The fake mimics the parts the program uses: `model_info(repo, revision=...).sha`, `snapshot_download`
and the error classes in `huggingface_hub.errors` (GatedRepoError subclasses RepositoryNotFoundError,
which subclasses HfHubHTTPError, each carrying `.response.status_code`). Vocabulary files are served
from a `file://` folder, which `urllib` reads like the real https URL.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from grace_infra import constants as c
from grace_infra.config.stack_config import GraceConfig
from grace_infra.manifests import download_job
from grace_infra.payloads import download_weights as wd
from worker import contract

from .support import base_config

REPO = "meta-llama/Meta-Llama-3-70B-Instruct"
MAIN_COMMIT = "0123456789abcdef0123456789abcdef01234567"  # what the fake Hub says `main` is today


def resolved(revision: str) -> str:
    """The fake Hub's answer: a 40-hex commit resolves to itself, anything else (a branch) to MAIN_COMMIT."""
    return revision if len(revision) == 40 else MAIN_COMMIT


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

    def model_info(repo_id: str, *, revision: str) -> SimpleNamespace:
        if state.fail is not None and not isinstance(state.fail, OSError):
            raise state.fail
        return SimpleNamespace(id=repo_id, sha=resolved(revision))

    def snapshot_download(**kwargs: Any) -> str:
        state.calls.append(kwargs)
        if state.fail is not None:
            raise state.fail
        Path(kwargs["local_dir"], "model.safetensors").write_bytes(b"weights")
        return kwargs["local_dir"]

    package = ModuleType("huggingface_hub")
    package.snapshot_download = snapshot_download  # type: ignore[attr-defined]
    package.model_info = model_info  # type: ignore[attr-defined]
    errors = ModuleType("huggingface_hub.errors")
    for cls in (HfHubHTTPError, RepositoryNotFoundError, GatedRepoError):
        setattr(errors, cls.__name__, cls)
    package.errors = errors  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", package)
    monkeypatch.setitem(sys.modules, "huggingface_hub.errors", errors)
    return state


def test_first_run_downloads_the_resolved_commit_and_records_it(tmp_path: Path, hub: SimpleNamespace) -> None:
    assert wd.download(REPO, "main", tmp_path, ["original/*"]) == 0
    (call,) = hub.calls
    # The branch is resolved first and exactly that commit is downloaded, so the marker cannot lie.
    assert call == {
        "repo_id": REPO,
        "revision": MAIN_COMMIT,
        "local_dir": str(tmp_path),
        "ignore_patterns": ["original/*"],
    }
    marker = json.loads((tmp_path / wd.MARKER_FILE).read_text())
    assert marker == {"repo": REPO, "revision": "main", "commit": MAIN_COMMIT, "complete": True}
    assert set(contract.WEIGHTS_MARKER_FIELDS) <= set(marker)  # what every worker's meta file copies


def test_a_marker_without_a_commit_is_not_complete(tmp_path: Path, hub: SimpleNamespace) -> None:
    (tmp_path / wd.MARKER_FILE).write_text(json.dumps({"repo": REPO, "revision": "main", "complete": True}))
    assert wd.download(REPO, "main", tmp_path, []) == 0
    assert len(hub.calls) == 1
    assert json.loads((tmp_path / wd.MARKER_FILE).read_text())["commit"] == MAIN_COMMIT


def test_the_marker_file_name_is_the_one_the_pods_are_told(tmp_path: Path) -> None:
    assert wd.MARKER_FILE == contract.WEIGHTS_MARKER_FILE
    assert f"{c.WEIGHTS_MOUNT}/{wd.MARKER_FILE}" == c.WEIGHTS_MARKER_PATH


def test_a_restart_skips_a_complete_revision(
    tmp_path: Path, hub: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    wd.download(REPO, "abc123", tmp_path, [])
    assert wd.download(REPO, "abc123", tmp_path, []) == 0
    assert len(hub.calls) == 1
    assert "already complete" in capsys.readouterr().out


def test_a_new_revision_downloads_again(tmp_path: Path, hub: SimpleNamespace) -> None:
    first, second = "a" * 40, "b" * 40
    wd.download(REPO, first, tmp_path, [])
    wd.download(REPO, second, tmp_path, [])
    assert [call["revision"] for call in hub.calls] == [first, second]
    assert json.loads((tmp_path / wd.MARKER_FILE).read_text())["commit"] == second


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
            from types import SimpleNamespace
            def model_info(repo_id, *, revision):
                return SimpleNamespace(sha="0123456789abcdef0123456789abcdef01234567")
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
    vocabulary = tmp_path / "encodings"
    vocabulary.mkdir()
    content = b"vocabulary bytes\n"
    (vocabulary / "o200k_base.tiktoken").write_bytes(content)
    config = GraceConfig.parse(base_config(models=[{"key": "gpt-oss-20b"}]))
    init = download_job.download_container(config.served_models()[0], config)
    env = {e["name"]: e["value"] for e in init["env"] if "value" in e}
    # The real file's SHA-256 is in the env; this stand-in has its own, so the test swaps only the hash.
    assert env["GRACE_TIKTOKEN_FILES"] == f"o200k_base.tiktoken={c.TIKTOKEN_SHA256['o200k_base.tiktoken']}"
    env.update(
        GRACE_WEIGHTS_DIR=str(weights), HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(tmp_path / "site"),
        GRACE_TIKTOKEN_FILES=f"o200k_base.tiktoken={hashlib.sha256(content).hexdigest()}",
        GRACE_TIKTOKEN_BASE_URL=f"{vocabulary.as_uri()}/", GRACE_TIKTOKEN_DIR=str(weights / ".tiktoken"),
    )
    command = [sys.executable, *init["command"][1:]]
    first, second = (
        subprocess.run(
            command, env={**os.environ, **env}, capture_output=True, text=True, timeout=30, check=True
        )
        for _ in range(2)
    )
    assert f"FAKE openai/gpt-oss-20b {MAIN_COMMIT} original/*,metal/*" in first.stdout
    assert "FAKE" not in second.stdout
    assert "already complete" in second.stdout
    assert "already staged" in second.stdout
    marker = json.loads((weights / wd.MARKER_FILE).read_text())
    assert marker == {
        "repo": "openai/gpt-oss-20b", "revision": "main", "commit": MAIN_COMMIT, "complete": True,
    }
    assert (weights / ".tiktoken" / "o200k_base.tiktoken").read_bytes() == content


def test_a_vocabulary_with_the_wrong_hash_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "encodings"
    source.mkdir()
    (source / "o200k_base.tiktoken").write_bytes(b"tampered\n")
    target = tmp_path / "weights" / ".tiktoken"
    expected = c.TIKTOKEN_SHA256["o200k_base.tiktoken"]
    code = wd.stage_vocabularies({"o200k_base.tiktoken": expected}, f"{source.as_uri()}/", target)
    assert code == wd.EXIT_BAD_VOCABULARY
    assert expected in capsys.readouterr().err
    assert list(target.iterdir()) == []  # neither the real name nor the temporary file remains


def test_vocabulary_names_and_hash_match_openai_harmony() -> None:
    """openai/harmony src/tiktoken_ext/public_encodings.rs: o200k_harmony reads o200k_base.tiktoken from
    $TIKTOKEN_ENCODINGS_BASE and checks this SHA-256; the public file lives under this URL."""
    assert c.TIKTOKEN_SHA256 == {
        "o200k_base.tiktoken": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
    }
    assert c.TIKTOKEN_BASE_URL == "https://openaipublic.blob.core.windows.net/encodings/"
    assert wd.parse_vocabularies("a.tiktoken=1,b.tiktoken=2") == {"a.tiktoken": "1", "b.tiktoken": "2"}
    assert wd.parse_vocabularies("") == {}
