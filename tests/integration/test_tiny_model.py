"""The tiny model the suites run on: reproducible from its seed, and read the same way by vLLM and by
transformers (the exactness checks compare the two, so they must agree on the prompt's token ids)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.vllm

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILDER = REPO_ROOT / "scripts" / "build_tiny_model.py"
MESSAGES = [
    {"role": "system", "content": "Answer with one number."},
    {"role": "user", "content": "How many of the 3 letters have checks inside? It wasn't 100%."},
]
# Runs in the server's venv: transformers' own reading of the model folder, no vLLM involved.
_CHAT_IDS_SCRIPT = """
import json, sys
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
text = tokenizer.apply_chat_template(json.loads(sys.argv[2]), add_generation_prompt=True, tokenize=False)
print(json.dumps(tokenizer(text, add_special_tokens=False)["input_ids"]))
"""


def test_the_builder_is_deterministic(vllm_server, tmp_path):
    for name in ("a", "b"):
        subprocess.run(
            [str(vllm_server.server_python), str(BUILDER), str(tmp_path / name)],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    for file in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
    # Same seed as the running server's model, so a rebuilt folder reproduces its numbers.
    served = Path(vllm_server.model_dir) / "model.safetensors"
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == served.read_bytes()


def test_chat_template_is_inline_for_vllm(vllm_server):
    config = json.loads((Path(vllm_server.model_dir) / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert "add_generation_prompt" in config["chat_template"]


def test_vllm_and_transformers_render_the_same_chat_prompt(vllm_server):
    argv = [str(vllm_server.server_python), "-c", _CHAT_IDS_SCRIPT, str(vllm_server.model_dir)]
    direct = subprocess.run(
        [*argv, json.dumps(MESSAGES)], check=True, capture_output=True, text=True, timeout=120
    )
    expected = json.loads(direct.stdout.strip().splitlines()[-1])
    resp = httpx.post(
        f"{vllm_server.root_url}/tokenize",
        json={"model": vllm_server.served_name, "messages": MESSAGES, "add_generation_prompt": True},
        timeout=60.0,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["tokens"] == expected
