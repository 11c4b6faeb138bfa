"""`worker probs` against the real vLLM server, checked against an independent transformers forward pass.

The exactness check: every option log-probability the worker reports is recomputed from the token
ids it recorded, by `probs_reference.py` running in the server's own venv (torch + transformers, no worker
code), and must agree within 1e-3, for single-token options (both methods) and multi-token options
(continuation). Every renormalised distribution must sum to 1 within 1e-6.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.support.study_inputs import first_rows

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[2]
REFERENCE_SCRIPT = Path(__file__).with_name("probs_reference.py")
TOLERANCE = 1e-3
ROWS = 2  # the first rows of each study: enough for every question, cheap on a 2-core CI machine

STUDY1_QUESTIONS = ["state0", "state1", "state2", "state3", "knowledge"]
STUDY2_QUESTIONS = ["frame", "assessment", "utterance"]
DETAIL_SUFFIXES = [
    "method",
    "coverage",
    "absent",
    "raw",
    "logprobs",
    "variants",
    "prompt",
    "prompt_token_ids",
]



def run_probs(server: Any, input_csv: Path, output: Path, *extra: str) -> pd.DataFrame:
    command = [
        sys.executable, "-m", "worker", "probs",
        "--input", str(input_csv), "--output", str(output),
        "--model-endpoint", server.base_url, "--model-name", server.served_name,
        "--metrics-port", "0", "--wait-timeout", "30", *extra,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-3000:]}"
    return pd.read_csv(output, dtype=str, keep_default_na=False)


def reference(server: Any, request: dict[str, Any]) -> dict[str, Any]:
    payload = json.dumps({"model_dir": str(server.model_dir), **request})
    done = subprocess.run(
        [str(server.server_python), str(REFERENCE_SCRIPT)],
        input=payload,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def assert_exact(
    frame: pd.DataFrame,
    questions: list[str],
    server: Any,
    study: str,
    *,
    tokens: list[str] | None = None,
    variants: str = "case-and-space",
) -> set[str]:
    """Every question of every row against the reference, which renders and tokenizes everything itself.

    The prompt's token ids, the options' token sequences and their log-probabilities must all be the
    reference's own (no input shared with the worker but the study file and the CSV row), the prompt
    must hold exactly one BOS, at its start. The methods seen.
    """
    rows = frame.to_dict("records")
    cases = [
        {"row": i, "question": q, "method": row[f"{q}_method"]}
        for i, row in enumerate(rows)
        for q in questions
    ]
    answer = reference(
        server,
        {
            "study_file": str(REPO / "jobs" / "studies" / "chat" / f"{study}.yaml"),
            "rows": rows,
            "variants": variants,
            "tokens": tokens,
            "cases": cases,
        },
    )
    bos = answer["bos_id"]
    for case, expected in zip(cases, answer["cases"], strict=True):
        row, question, where = rows[case["row"]], case["question"], (case["row"], case["question"])
        prompt_ids = json.loads(row[f"{question}_prompt_token_ids"])
        assert prompt_ids == expected["prompt_ids"], where
        assert prompt_ids.count(bos) == 1, where
        assert prompt_ids[0] == bos, where
        assert row[f"{question}_prompt"] == expected["prompt_text"], where
        recorded = json.loads(row[f"{question}_variants"])
        absent = set(filter(None, row[f"{question}_absent"].split(";")))
        worker = {
            k: (-math.inf if v is None else v) for k, v in json.loads(row[f"{question}_logprobs"]).items()
        }
        assert set(worker) == set(expected["logprobs"]), where
        for label, sequences in expected["sequences"].items():
            if case["method"] == "first-token":
                assert {tuple(ids[:1]) for ids in recorded[label].values()} <= {
                    tuple(s[:1]) for s in sequences
                }
            else:
                assert {tuple(ids) for ids in recorded[label].values()} == {tuple(s) for s in sequences}, (
                    where
                )
        for label, value in expected["logprobs"].items():
            if label in absent:
                assert worker[label] == -math.inf, (where, label)
            else:
                assert worker[label] == pytest.approx(value, abs=TOLERANCE), (where, label)
        # The options' values differ by far more than the tolerance: a wrong token id could not pass.
        compared = [v for label, v in expected["logprobs"].items() if label not in absent]
        if len(compared) > 1:
            assert max(compared) - min(compared) > 100 * TOLERANCE, where
    return {case["method"] for case in cases}


def prob_columns(frame: pd.DataFrame, prefix: str) -> list[str]:
    return [c for c in frame.columns if c.startswith(prefix)]


def assert_distributions_sum_to_one(frame: pd.DataFrame, groups: list[str]) -> None:
    for _, row in frame.iterrows():
        for prefix in groups:
            columns = prob_columns(frame, prefix)
            assert columns, prefix
            total = math.fsum(float(row[c]) for c in columns)
            assert total == pytest.approx(1.0, abs=1e-6), (prefix, total)


def test_study1_end_to_end_and_exact(vllm_server, tmp_path):
    frame = run_probs(
        vllm_server, first_rows("study1", ROWS, tmp_path), tmp_path / "s1.csv", "--study", "chat/study1"
    )
    assert len(frame) == ROWS
    bins = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    expected = [f"state{k}_prob_{b}" for k in range(4) for b in bins]
    expected += [f"state{k}_{s}" for k in range(4) for s in ("mean", "std", "entropy")]
    expected += ["prob_knowledge_yes", "prob_knowledge_no", "entropy_knowledge"]
    expected += [f"{q}_{s}" for q in STUDY1_QUESTIONS for s in DETAIL_SUFFIXES]
    assert len([c for c in expected if c.startswith("state") and "_prob_" in c]) == 44
    missing = [c for c in [*expected, "error"] if c not in frame.columns]
    assert not missing
    for column in expected:
        if not column.endswith("_absent"):
            assert (frame[column] != "").all(), column
    assert (frame["error"] == "").all()
    for k in range(4):
        probs = frame[[f"state{k}_prob_{b}" for b in bins]].astype(float).to_numpy()
        means = (probs * bins).sum(axis=1)
        assert frame[f"state{k}_mean"].astype(float).to_numpy() == pytest.approx(means, abs=1e-9)
    assert_distributions_sum_to_one(frame, [f"state{k}_prob_" for k in range(4)] + ["prob_knowledge_"])
    # "100%" is four tokens and shares "1" with "10%": only continuation is exact, and auto chose it.
    methods = assert_exact(frame, STUDY1_QUESTIONS, vllm_server, "study1")
    assert "continuation" in methods
    meta = json.loads((tmp_path / "s1.csv.meta.json").read_text())
    findings = meta["server"]["pipeline_findings"]
    assert findings["approximate"] is False
    assert findings["planned_methods"]["state0"] == "continuation"


def test_study2_end_to_end_and_exact(vllm_server, tmp_path):
    frame = run_probs(
        vllm_server, first_rows("study2", ROWS, tmp_path), tmp_path / "s2.csv", "--study", "chat/study2"
    )
    assert len(frame) == ROWS
    assessments = ["terrible", "bad", "good", "amazing"]  # the published four
    expected = ["prob_frame_was", "prob_frame_wasnt"]
    expected += ["entropy_frame", "entropy_assessment", "entropy_utterance"]
    expected += [f"prob_assessment_{a}" for a in assessments]
    expected += [f"prob_utterance_{f}_{a}" for f in ("was", "wasnt") for a in assessments]
    for column in [*expected, *(f"{q}_{s}" for q in STUDY2_QUESTIONS for s in DETAIL_SUFFIXES)]:
        assert column in frame.columns, column
        if not column.endswith("_absent"):
            assert (frame[column] != "").all(), column
    assert (frame["error"] == "").all()
    assert_distributions_sum_to_one(frame, ["prob_frame_", "prob_assessment_", "prob_utterance_"])
    # "wasn't" is several tokens ("terrible" too), so these are the multi-token exactness cases.
    assert assert_exact(frame, STUDY2_QUESTIONS, vllm_server, "study2") == {"continuation"}
    variants = json.loads(frame.loc[0, "frame_variants"])
    assert any(len(ids) > 1 for ids in variants["wasnt"].values())


def top_words(server: Any, prompt_ids: list[int], count: int) -> list[str]:
    """Words the model itself ranks in its top 20 at the answer position, each one token there.

    Random weights put yes/no/0-3 far down the ranking, so a first-token check on them would compare
    nothing (every option outside the top N). Options taken from the top 20 are certain to be read.
    """
    with httpx.Client(base_url=server.root_url, timeout=60) as http:
        body = {
            "model": server.served_name,
            "prompt": prompt_ids,
            "max_tokens": 1,
            "logprobs": 20,
            "return_tokens_as_token_ids": True,
        }
        top = http.post("/v1/completions", json=body).json()["choices"][0]["logprobs"]["top_logprobs"][0]
        words: list[str] = []
        for key, _ in sorted(top.items(), key=lambda item: -item[1]):
            token = int(key.removeprefix("token_id:"))
            text = http.post("/detokenize", json={"model": server.served_name, "tokens": [token]}).json()[
                "prompt"
            ]
            if text.isascii() and text.isalpha() and text.lower() not in {w.lower() for w in words}:
                words.append(text)
            if len(words) == count:
                return words
    pytest.fail(f"fewer than {count} plain words in the model's top 20: {top}")


def test_single_token_options_are_exact_with_both_methods_and_agree(vllm_server, tmp_path):
    # Two options the model ranks in its top 20 for the first row, and yes/no, which rank in the hundreds:
    # with no variants every option is one token, so both methods apply. vLLM 0.32 scores the options'
    # own ids (logprob_token_ids), so first-token reads all four at any rank. Each method must match the
    # forward pass, and they must match each other.
    source = first_rows("study1", ROWS, tmp_path)
    probe = run_probs(
        vllm_server, source, tmp_path / "probe.csv", "--study", "chat/study1", "--tokens", "yes,no"
    )
    words = top_words(vllm_server, json.loads(probe.loc[0, "answer_prompt_token_ids"]), 2)
    words += [w for w in ("yes", "no") if w not in {x.lower() for x in words}]
    common = ["--study", "chat/study1", "--tokens", ",".join(words), "--variants", "none"]
    first = run_probs(vllm_server, source, tmp_path / "ft.csv", *common, "--method", "first-token")
    cont = run_probs(vllm_server, source, tmp_path / "ct.csv", *common, "--method", "continuation")
    assert set(first["answer_method"]) == {"first-token"}
    assert set(cont["answer_method"]) == {"continuation"}
    assert (first["answer_absent"] == "").all()  # every option was read: the comparison compares them all
    findings = json.loads((tmp_path / "ft.csv.meta.json").read_text())["server"]["pipeline_findings"]
    assert findings["option_tokens"]["answer"]["first_token_exact"] is True
    assert findings["first_token_reads"].startswith("the options' own token ids")
    both = pd.concat([first, cont], ignore_index=True)
    methods = assert_exact(both, ["answer"], vllm_server, "study1", tokens=words, variants="none")
    assert methods == {"first-token", "continuation"}
    assert_distributions_sum_to_one(first, ["prob_"])
    assert_distributions_sum_to_one(cont, ["prob_"])
    compared = 0
    for (_, a), (_, b) in zip(first.iterrows(), cont.iterrows(), strict=True):
        assert a["answer_prompt_token_ids"] == b["answer_prompt_token_ids"]
        la, lb = json.loads(a["answer_logprobs"]), json.loads(b["answer_logprobs"])
        for label in set(la) - set(a["answer_absent"].split(";")):
            assert la[label] == pytest.approx(lb[label], abs=TOLERANCE), label
            compared += 1
    assert compared == len(words) * len(first)


def test_a_reasoning_format_the_model_does_not_speak_is_refused(vllm_server, tmp_path):
    # The tiny model has no harmony special tokens: "<|end|>" is several ordinary tokens for it.
    command = [
        sys.executable, "-m", "worker", "probs",
        "--input", str(first_rows("study2", ROWS, tmp_path)), "--output", str(tmp_path / "out.csv"),
        "--model-endpoint", vllm_server.base_url, "--model-name", vllm_server.served_name,
        "--study", "chat/study2", "--metrics-port", "0", "--reasoning-format", "harmony",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 2
    assert "--reasoning-format harmony: <|end|> is" in done.stderr
    assert "not one special token; the model does not speak harmony." in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.csv").exists()
