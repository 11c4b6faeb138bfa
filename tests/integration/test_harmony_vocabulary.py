"""gpt-oss offline: vLLM's own openai_harmony reads the vocabulary the download Job stages.

Runs the harmony loader of the vLLM environment (.venv-vllm, the same openai_harmony vLLM 0.32 ships
with) with TIKTOKEN_ENCODINGS_BASE pointing at a folder, and no network: it must read exactly
`<folder>/o200k_base.tiktoken` and check exactly the SHA-256 the download Job verifies. The real
vocabulary (about 3.6 MB from openaipublic.blob.core.windows.net) is not fetched here, so the success
path on the real file is not exercised; both refusals below prove where the file is read and which hash
guards it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from grace_infra import constants as c
from grace_infra.config.catalog import GPT_OSS_TIKTOKEN_FILES

pytestmark = pytest.mark.vllm

_LOAD = """
from openai_harmony import HarmonyEncodingName, load_harmony_encoding
try:
    load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
except Exception as exc:
    print(exc)
"""


def _load_with_base(folder: Path) -> str:
    tiny_vllm = sys.modules["tiny_vllm"]
    env = {"TIKTOKEN_ENCODINGS_BASE": str(folder), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [str(tiny_vllm.server_python()), "-c", _LOAD], env=env, capture_output=True, text=True, timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_the_loader_reads_the_staged_file_name_from_the_folder(tmp_path: Path) -> None:
    (name,) = GPT_OSS_TIKTOKEN_FILES
    assert _load_with_base(tmp_path) == "invalid tiktoken vocab file: No such file or directory (os error 2)"
    (tmp_path / name).write_text("aGVsbG8= 0\n")
    message = _load_with_base(tmp_path)
    # It opened <folder>/o200k_base.tiktoken and compared it with the hash the download Job checks.
    assert message.startswith("invalid tiktoken vocab file: hash mismatch")
    assert f"expected={c.TIKTOKEN_SHA256[name]}" in message
