"""Every pipeline against a REAL vLLM server whose chat template refuses what Gemma-2's refuses.

`strict_vllm_server` serves the tiny model with a template that raises "System role not supported" for a
system message and "Conversation roles must alternate user/assistant/user/assistant/..." for any other
order; vLLM answers both with HTTP 400. On Gemma-2 2B/9B/27B a pipeline that sends either gets no answer
at all, so each pipeline must answer every row here, and record `system_merged_into_user` in its meta file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from worker import cli

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
ROWS = 2


def endpoint(server: Any) -> list[str]:
    return [
        "--model-endpoint", server.base_url, "--model-name", server.served_name,
        "--metrics-port", "0", "--wait-timeout", "60",
    ]  # fmt: skip


def first_rows(study: str, tmp_path: Path) -> Path:
    frame = pd.read_csv(FIXTURES / f"{study}_small.csv", dtype=str, keep_default_na=False).head(ROWS)
    path = tmp_path / f"{study}_input.csv"
    frame.to_csv(path, index=False)
    return path


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def findings(output: Path) -> dict[str, Any]:
    meta = json.loads(output.with_name(output.name + ".meta.json").read_text())
    found: dict[str, Any] = meta["server"]["pipeline_findings"]
    return found


def test_the_server_refuses_what_gemma2_refuses(strict_vllm_server: Any) -> None:
    """The fixture is what it claims: without this, the tests below could pass against a lenient template."""
    tokenize = f"{strict_vllm_server.root_url}/tokenize"
    system = {"role": "system", "content": "S"}
    user = {"role": "user", "content": "U"}
    for messages, refusal in (
        ([system, user], "System role not supported"),
        ([user, user], "Conversation roles must alternate user/assistant/user/assistant/..."),
    ):
        body = {"model": strict_vllm_server.served_name, "messages": messages, "add_generation_prompt": True}
        response = httpx.post(tokenize, json=body, timeout=60)
        assert response.status_code == 400
        assert response.json()["error"]["message"] == refusal
    assert httpx.post(tokenize, json={**body, "messages": [user]}, timeout=60).status_code == 200


@pytest.mark.parametrize("study", ["study1", "study2"])
def test_query_answers_every_row(strict_vllm_server: Any, tmp_path: Path, study: str) -> None:
    output = tmp_path / "exp1.csv"
    code = cli.main([
        "query", "--input", str(first_rows(study, tmp_path)), "--output", str(output),
        "--study", f"chat/{study}",
        "--max-tokens", "4", "--samples", "1", *endpoint(strict_vllm_server),
    ])  # fmt: skip
    result = read(output)
    assert list(result["error"]) == [""] * ROWS
    assert code == 0
    # Study 2 has a system message (merged); Study 1 has none but three turns (strict alternation).
    assert findings(output)["system_merged_into_user"] is True
    for conversation in result["conversation"]:
        roles = [m["role"] for m in json.loads(conversation)]
        assert roles == ["user", "assistant"] * (len(roles) // 2)


def test_probs_answers_every_row(strict_vllm_server: Any, tmp_path: Path) -> None:
    output = tmp_path / "exp2.csv"
    code = cli.main([
        "probs", "--input", str(first_rows("study2", tmp_path)), "--output", str(output),
        "--study", "chat/study2", *endpoint(strict_vllm_server),
    ])  # fmt: skip
    result = read(output)
    assert list(result["error"]) == [""] * ROWS
    assert code == 0
    assert findings(output)["system_merged_into_user"] is True
    assert all("<|system|>" not in prompt for prompt in result["frame_prompt"])


def test_extract_answers_every_row(strict_vllm_server: Any, tmp_path: Path) -> None:
    source = tmp_path / "exp1.csv"
    shutil.copy(FIXTURES / "extract" / "study2_exp1.csv", source)
    output = tmp_path / "structured.csv"
    code = cli.main([
        "extract", "--input", str(source), "--output", str(output), "--study", "chat/study2",
        "--max-retries", "2", "--batch-size", "1", *endpoint(strict_vllm_server),
    ])  # fmt: skip
    result = read(output)
    exp1 = read(source)
    answered = exp1["model_response"] != ""
    # A template refusal would be an HTTP 400 naming the template's rule on every request. Random text may
    # still fail validation, and a re-ask of it may outgrow the 512-token context (a different 400).
    errors = result["extraction_errors"]
    assert not errors.str.contains("System role not supported|roles must alternate").any()
    assert ((errors == "") | errors.str.contains("maximum context length"))[answered].all()
    assert (errors[answered] == "").any()
    assert code in (0, 3)
    assert findings(output)["system_merged_into_user"] is True
