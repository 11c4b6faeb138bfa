"""The researchers' Experiment 2, every row: what `worker probs` scores with the study files in
jobs/studies/researchers/ is, byte for byte, what their code scores.

../shared/reference/researchers/study{1,2}_exp2.jsonl hold every prompt and option list their code
(tgmorton/knowledge-politeness-llms, src/query_study{1,2}_exp2.py with ModelScorer) produces from
../shared/data/study{1,2}.csv. The real command line (`worker.cli.main`, the code `python -m worker probs`
runs) scores every row of both CSVs against a recording fake server, and the test compares:

- the prompt each question tokenized (`/tokenize`) and recorded (`<q>_prompt`) with the reference prompt;
- every text tokenized with the reference's prompt + option, each option once, and nothing else;
- every scoring request's prompts, in order, with the reference's options in their order (the fake's
  tokenizer is lossless, so its ids decode back to exactly the text that was tokenized);
- every probability column with the rule computed here from the fake model's numbers.

The fake model's log-probability of a token is a cheap function of its id, its predecessor's and its
position, and its tokenizer gives every distinct word, space run and sign its own id (no merges), with
one BOS when asked with the default special tokens. To keep ~4,000 rows fast, a scoring reply carries
`prompt_logprobs` only from where the scored part starts (after the longest prefix that was itself
tokenized, the prompt), `null` before it: vLLM fills those positions too, and the worker must not need
them. The data files are never committed: without them the test is skipped locally and fails under CI.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections import Counter
from typing import Any

import pytest

from tests.support.ci import unavailable
from tests.support.fake_openai import FakeOpenAI, Ok, Request
from tests.unit.worker.support import COMPLETIONS, RECORDED, SHARED_DATA, TOKENIZE, read_csv, worker_args
from worker import cli, contract
from worker.studies import probability_section as spec
from worker.studies.definition import REPO_STUDIES_DIR, load_study

REFERENCE = SHARED_DATA.parent / "reference" / "researchers"
STUDIES = REPO_STUDIES_DIR / "researchers"
PIECES = re.compile(r"\s+|\w+|[^\w\s]")
BOS_TEXT = "<s>"


class RecordingScorer:
    """/tokenize and /v1/completions of a lossless toy tokenizer and a cheap deterministic model."""

    def __init__(self) -> None:
        self.pieces: list[str] = [BOS_TEXT]
        self.ids: dict[str, int] = {BOS_TEXT: 0}
        self.tokenized: set[tuple[int, ...]] = set()  # every /tokenize answer, to find a request's prompt
        reply = json.loads((RECORDED / "completions_echo_prompt_logprobs_batch.json").read_text())
        self.reply = {key: value for key, value in reply.items() if key != "choices"}
        self.choice = reply["choices"][0]

    def install(self, server: FakeOpenAI) -> None:
        server.handlers[TOKENIZE] = self.tokenize
        server.handlers[COMPLETIONS] = self.complete

    def encode(self, text: str, *, bos: bool = True) -> list[int]:
        ids = [0] if bos else []
        for piece in PIECES.findall(text):
            if piece not in self.ids:
                self.ids[piece] = len(self.pieces)
                self.pieces.append(piece)
            ids.append(self.ids[piece])
        return ids

    def decode(self, ids: list[int]) -> str:
        return "".join(self.pieces[i] for i in ids)

    @staticmethod
    def logprob(previous: int, token: int, position: int) -> float:
        return -(((token * 31 + previous * 17 + position) % 97) + 1) / 8.0

    def tokenize(self, request: Request) -> Ok:
        body = request.json()
        tokens = self.encode(body["prompt"], bos=body.get("add_special_tokens", True))
        self.tokenized.add(tuple(tokens))
        return Ok({"count": len(tokens), "max_model_len": 4096, "tokens": tokens, "token_strs": None})

    def complete(self, request: Request) -> Ok:
        body = request.json()
        prompts = body["prompt"]
        start = self._scored_from(prompts)
        choices = []
        for index, prompt in enumerate(prompts):
            choice = copy.copy(self.choice)
            entries: list[Any] = [None] * start
            entries += [self._entry(prompt, j) for j in range(start, len(prompt))]
            choice.update(index=index, text=self.decode(prompt), prompt_logprobs=entries)
            choices.append(choice)
        return Ok({**self.reply, "choices": choices})

    def _entry(self, prompt: list[int], j: int) -> dict[str, Any]:
        logprob = self.logprob(prompt[j - 1], prompt[j], j)
        return {str(prompt[j]): {"logprob": logprob, "rank": 1, "decoded_token": "x"}}

    def _scored_from(self, prompts: list[list[int]]) -> int:
        """The length of the longest prefix all prompts share that was tokenized on its own (1 if none)."""
        shared = min(len(prompt) for prompt in prompts)
        for j in range(shared):
            if any(prompt[j] != prompts[0][j] for prompt in prompts):
                shared = j
                break
        return next((k for k in range(shared, 1, -1) if tuple(prompts[0][:k]) in self.tokenized), 1)

    def rule(self, prompt: str, options: list[str]) -> list[float]:
        """ModelScorer's log P of each option, on this model."""
        p = self.encode(prompt)
        out = []
        for option in options:
            f = self.encode(prompt + option)
            if len(f) <= len(p):
                out.append(-100.0)
                continue
            total = 0.0
            for i in range(len(p), len(f)):
                total += self.logprob(f[i - 1], f[i], i)
            out.append(total)
        return out


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    weights = [math.exp(v - top) for v in values]
    return [w / sum(weights) for w in weights]


def first_difference(expected: str, actual: str) -> str:
    at = next((i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b), None)
    at = min(len(expected), len(actual)) if at is None else at
    shown = slice(at, at + 40)
    return f"first difference at character {at}: expected {expected[shown]!r}, got {actual[shown]!r}"


@pytest.fixture
def scorer() -> RecordingScorer:
    return RecordingScorer()


@pytest.fixture
def server_setup(scorer: RecordingScorer) -> Any:
    return scorer.install


@pytest.mark.parametrize("study", ["study1", "study2"])
def test_every_prompt_and_option_list_is_the_researchers(server, scorer, tmp_path, study):
    data, reference = SHARED_DATA / f"{study}.csv", REFERENCE / f"{study}_exp2.jsonl"
    for needed in (data, reference):
        if not needed.exists():
            unavailable(f"{needed} is not here: the researchers' data are never committed")
    records = [json.loads(line) for line in reference.read_text(encoding="utf-8").splitlines()]
    study_path = STUDIES / f"{study}.yaml"
    output = tmp_path / "out.csv"
    argv = worker_args("probs", server.base_url, output, input=data, study=study_path, max_retries=0)
    assert cli.main(argv) == contract.EXIT_OK

    frame = read_csv(output)
    questions = {q.name: q for q in spec.questions_for(load_study(str(study_path)), None)}
    assert len(frame) == 1 + max(r["row"] for r in records)
    assert (frame["error"] == "").all()
    rows = frame.to_dict("records")
    expected_tokenized: Counter[str] = Counter()
    expected_scored: Counter[tuple[str, ...]] = Counter()
    for record in records:
        question, prompt, options = questions[record["question"]], record["prompt"], record["options"]
        where = f"row {record['row']} question {record['question']}"
        # The options, in order, are theirs.
        assert [o.text for o in question.options] == options, where
        recorded = rows[record["row"]][f"{question.name}_prompt"]
        assert recorded == prompt, f"{where}: {first_difference(prompt, recorded)}"
        expected_tokenized.update([prompt, *(prompt + option for option in options)])
        expected_scored[tuple(BOS_TEXT + prompt + option for option in options)] += 1

    # What was sent: every text tokenized, and every scoring request's prompts in order.
    tokenized = Counter(r.json()["prompt"] for r in server.requests_to(TOKENIZE))
    tokenized[""] -= 1  # the probe before the first row: what the tokenizer adds on its own
    assert +tokenized == expected_tokenized, unmatched(expected_tokenized, +tokenized)
    scored = Counter(
        tuple(scorer.decode(prompt) for prompt in r.json()["prompt"]) for r in server.requests_to(COMPLETIONS)
    )
    assert scored == expected_scored, unmatched(expected_scored, scored)

    # The numbers: their rule and softmax on the fake model, in their columns.
    for record in records:
        question, row = questions[record["question"]], rows[record["row"]]
        shares = softmax(scorer.rule(record["prompt"], record["options"]))
        got = [float(row[question.prob_columns[o.label]]) for o in question.options]
        assert got == pytest.approx(shares, rel=1e-12, abs=1e-300), (record["row"], question.name)


def unmatched(expected: Counter[Any], sent: Counter[Any]) -> str:
    missing, extra = sorted((expected - sent).elements()), sorted((sent - expected).elements())
    return f"expected but not sent: {missing[:1]!r}; sent but not expected: {extra[:1]!r}"


def test_study2_writes_their_marginals(server, scorer, tmp_path):
    data = SHARED_DATA / "study2.csv"
    if not data.exists():
        unavailable(f"{data} is not here: the researchers' data are never committed")
    rows = tmp_path / "in.csv"
    read_csv(data).head(3).to_csv(rows, index=False)
    output = tmp_path / "out.csv"
    argv = worker_args("probs", server.base_url, output, input=rows, study=STUDIES / "study2.yaml")
    assert cli.main(argv) == contract.EXIT_OK
    frame = read_csv(output)
    qualities = ["terrible", "bad", "good", "amazing"]
    for _, row in frame.iterrows():
        joint = {(pol, q): float(row[f"prob_{pol}_{q}"]) for pol in ("was", "wasn't") for q in qualities}
        assert float(row["prob_was"]) == pytest.approx(sum(joint["was", q] for q in qualities), abs=1e-15)
        wasnt = sum(joint["wasn't", q] for q in qualities)
        assert float(row["prob_wasnt"]) == pytest.approx(wasnt, abs=1e-15)
        for q in qualities:
            assert float(row[f"prob_{q}"]) == pytest.approx(joint["was", q] + joint["wasn't", q], abs=1e-15)
        entropy = -sum(p * math.log2(p) for p in joint.values() if p > 1e-10)
        assert float(row["entropy_response"]) == pytest.approx(entropy, abs=1e-12)
