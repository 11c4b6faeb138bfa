"""The researchers' Experiment 2 (`probability.scoring: joint-completion`) on the real vLLM server, every
number compared with their ModelScorer rule computed by transformers (model_scorer_reference.py, run in
the server's venv, sharing no code with the worker).

For every question of every row: the prompt's token ids, each option's scored token ids (the joint
tokenization's tokens beyond the prompt's length), which options merged at the boundary, every option's
log-probability, the softmax and the statistics must be the reference's: probabilities and entropies
within 1e-5, log-probabilities within 1e-5 of their size (both run float32, with different kernels: an
option's log-probability sums several per-token values of 10-30 each, measured 1.4e-6 apart at most,
up to 6.6e-5 absolute), -100.0 exactly, means and standard deviations within 1e-3 percentage points.

The tiny model's tokenizer (byte-level BPE with GPT-2's pre-tokenizer) splits ":" from a following word
or number, so none of the researchers' 33,192 prompt/option pairs merges at the boundary on it (checked
over every record of ../shared/reference/researchers/study{1,2}_exp2.jsonl with its tokenizer). The merge
is therefore checked on a prompt built for it: ending in "Your answer is: " (a trailing space), the space
token "Ġ" merges with the option's first token, so "yes" and "no" add no token beyond the prompt (their
-100.0), "10%" is scored on its last two tokens only, and " maybe" adds its own tokens.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.support.study_inputs import first_rows
from worker.studies import probability_section as spec
from worker.studies.definition import load_study

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[2]
SHARED_REFERENCE = REPO.parent / "shared" / "reference" / "researchers"
STUDIES = REPO / "jobs" / "studies" / "researchers"
REFERENCE_SCRIPT = Path(__file__).with_name("model_scorer_reference.py")
TOLERANCE = 1e-5
ROWS = 2  # the first rows of each study: every question, cheap on a 2-core CI machine

MERGING_STUDY = r"""
name: joint_merge
required_columns:
  [participant_id, story_shortname, story_setup, priorQ, speach, speachQ, knowledgeQ, access, observe]
text_replacements: {"<br>": "\n"}
strip_values: true
prompt:
  user: "{knowledgeQ}"
probability:
  scoring: joint-completion
  questions:
    - name: knowledge
      user: "{story_setup}\n\n{speach}\n\n{knowledgeQ}\n\nYour answer is: "
      options:
        - {text: "yes", label: "yes"}
        - {text: "no", label: "no"}
        - {text: "10%", label: "ten"}
        - {text: " maybe", label: "maybe"}
      columns: {prob: "prob_knowledge_{label}", entropy: "entropy_knowledge"}
"""



def run_probs(server: Any, input_csv: Path, output: Path, study: Path) -> pd.DataFrame:
    command = [
        sys.executable, "-m", "worker", "probs",
        "--input", str(input_csv), "--output", str(output), "--study", str(study),
        "--model-endpoint", server.base_url, "--model-name", server.served_name,
        "--metrics-port", "0", "--wait-timeout", "30",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-3000:]}"
    return pd.read_csv(output, dtype=str, keep_default_na=False)


def reference(server: Any, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    payload = json.dumps({"model_dir": str(server.model_dir), "cases": cases})
    done = subprocess.run(
        [str(server.server_python), str(REFERENCE_SCRIPT)],
        input=payload,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer: list[dict[str, Any]] = json.loads(done.stdout)["cases"]
    return answer


def researchers_prompts(study: str) -> dict[tuple[int, str], str]:
    """(row, question) -> the prompt their code builds, when ../shared has the reference."""
    path = SHARED_REFERENCE / f"{study}_exp2.jsonl"
    if not path.exists():
        return {}
    records = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
    return {(r["row"], r["question"]): r["prompt"] for r in records if r["row"] < ROWS}


def assert_matches_the_rule(frame: pd.DataFrame, study: Path, server: Any) -> dict[str, Any]:
    """Every number of every question against the reference; what was seen (largest difference, merges)."""
    questions = spec.questions_for(load_study(str(study)), None)
    rows = frame.to_dict("records")
    cases = [
        {"row": i, "question": q, "prompt": row[f"{q.name}_prompt"], "options": [o.text for o in q.options]}
        for i, row in enumerate(rows)
        for q in questions
    ]
    expected = reference(server, [{"prompt": c["prompt"], "options": c["options"]} for c in cases])
    # kind -> [largest absolute, largest relative difference]
    seen: dict[str, Any] = {"largest": {}, "merged": set(), "no_tokens": set(), "numbers": 0}

    def close(got: float, want: float, where: tuple[Any, ...], kind: str) -> None:
        # A log-probability is a sum of float32 values of 10-90 in size from two different kernels: 1e-5 of
        # it (measured: 1.4e-6 at most). Probabilities and entropies: 1e-5 absolute (measured: 3.5e-6).
        tolerance = {"rel": TOLERANCE, "abs": 0.0} if kind == "logprob" else {"abs": TOLERANCE}
        assert got == pytest.approx(want, **tolerance), (*where, kind)
        largest = seen["largest"].setdefault(kind, [0.0, 0.0])
        largest[0] = max(largest[0], abs(got - want))
        largest[1] = max(largest[1], abs(got - want) / abs(want) if want else 0.0)
        seen["numbers"] += 1

    for case, ref in zip(cases, expected, strict=True):
        row, question = rows[case["row"]], case["question"]
        where: tuple[Any, ...] = (case["row"], question.name)
        prompt_ids = ref["prompt_ids"]
        assert json.loads(row[f"{question.name}_prompt_token_ids"]) == prompt_ids, where
        scored = json.loads(row[f"{question.name}_option_token_ids"])
        logprobs = json.loads(row[f"{question.name}_logprobs"])
        merged = set(filter(None, row[f"{question.name}_boundary_merged"].split(";")))
        for option, joint, logprob in zip(question.options, ref["joint_ids"], ref["logprobs"], strict=True):
            at = (*where, option.label)
            assert scored[option.label] == joint[len(prompt_ids) :], at
            assert (option.label in merged) == (joint[: len(prompt_ids)] != prompt_ids), at
            if option.label in merged:
                seen["merged"].add(option.text)
            if logprob == -100.0:
                assert logprobs[option.label] == -100.0, at  # their constant, exactly
                seen["no_tokens"].add(option.text)
            else:
                close(logprobs[option.label], logprob, at, "logprob")
        probs = dict(zip((o.label for o in question.options), ref["probs"], strict=True))
        for label, column in question.prob_columns.items():
            close(float(row[column]), probs[label], (*where, label), "probability")
        shares = [probs[o.label] for o in question.options]
        entropy = -sum(p * math.log2(p) for p in shares if p > 1e-10)
        close(float(row[question.entropy_column]), entropy, where, "entropy")
        if question.mean_column and question.std_column:
            values = [float(o.value or 0) for o in question.options]
            mean = sum(p * v for p, v in zip(shares, values, strict=True))
            std = math.sqrt(sum(p * (v - mean) ** 2 for p, v in zip(shares, values, strict=True)))
            # In percentage points: the probabilities' tolerance times the values' scale (100).
            assert float(row[question.mean_column]) == pytest.approx(mean, abs=100 * TOLERANCE), where
            assert float(row[question.std_column]) == pytest.approx(std, abs=100 * TOLERANCE), where
        assert row[f"{question.name}_method"] == "joint-completion"
    return seen


def test_researchers_study1_matches_their_rule(vllm_server, tmp_path):
    study = STUDIES / "study1.yaml"
    frame = run_probs(vllm_server, first_rows("study1", ROWS, tmp_path), tmp_path / "s1.csv", study)
    assert (frame["error"] == "").all()
    for (row, question), prompt in researchers_prompts("study1").items():
        assert frame.loc[row, f"{question}_prompt"] == prompt
    seen = assert_matches_the_rule(frame, study, vllm_server)
    assert seen["numbers"] >= ROWS * (4 * (11 + 11 + 1) + 2 + 2 + 1)
    print(f"study1: {seen['numbers']} numbers, largest differences (abs, rel) {seen['largest']}")


def test_researchers_study2_matches_their_rule(vllm_server, tmp_path):
    study = STUDIES / "study2.yaml"
    frame = run_probs(vllm_server, first_rows("study2", ROWS, tmp_path), tmp_path / "s2.csv", study)
    assert (frame["error"] == "").all()
    for (row, question), prompt in researchers_prompts("study2").items():
        assert frame.loc[row, f"{question}_prompt"] == prompt
    seen = assert_matches_the_rule(frame, study, vllm_server)
    for _, row in frame.iterrows():
        was = sum(float(row[f"prob_was_{q}"]) for q in ("terrible", "bad", "good", "amazing"))
        assert float(row["prob_was"]) == pytest.approx(was, abs=1e-12)
    print(f"study2: {seen['numbers']} numbers, largest differences (abs, rel) {seen['largest']}")


def test_an_option_merging_with_the_prompt_is_scored_as_theirs(vllm_server, tmp_path):
    study = tmp_path / "joint_merge.yaml"
    study.write_text(MERGING_STUDY, encoding="utf-8")
    frame = run_probs(vllm_server, first_rows("study1", ROWS, tmp_path), tmp_path / "merge.csv", study)
    assert (frame["error"] == "").all()
    assert frame.loc[0, "knowledge_prompt"].endswith("Your answer is: ")
    seen = assert_matches_the_rule(frame, study, vllm_server)
    # The cases the prompt was built for, confirmed by the reference's own tokenization.
    assert seen["merged"] == {"yes", "no", "10%"}
    assert seen["no_tokens"] == {"yes", "no"}
    scored = json.loads(frame.loc[0, "knowledge_option_token_ids"])
    assert len(scored["ten"]) == 2  # "Ġ1" replaced the prompt's "Ġ"; "0" and "%" are scored
    print(f"merge: {seen['numbers']} numbers, largest differences (abs, rel) {seen['largest']}")
