"""Helpers the worker tests share: where the fixtures are, the worker's command lines, outputs read back,
the extraction server and the probability runs. conftest.py turns the stateful ones into fixtures
(`server`, `toy`, `extractor`, `clock`); modules import the rest by name from here.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from tests.support.fake_openai import FakeOpenAI, Ok, Request, Status, chat_completion_body
from tests.support.toy_lm import ToyLM
from tests.support.worker_process import meta
from worker import cli
from worker.pipelines.extraction.backend import PROBE_EXPECTED, PROBE_VALUE
from worker.server import logprobs as lp

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures"
RECORDED = FIXTURES / "vllm-0.32"  # real vLLM 0.32 bodies, committed
STUDY1_CSV = FIXTURES / "study1_small.csv"
STUDY2_CSV = FIXTURES / "study2_small.csv"
STUDIES_DIR = REPO / "jobs" / "studies"
# The chat design's study files and schemas, which most worker tests run.
CHAT_STUDIES = STUDIES_DIR / "chat"
SCHEMAS_DIR = REPO / "jobs" / "schemas" / "chat"
# The researchers' files and the fuller vLLM reference beside the checkout; tests that need them skip
# when they are absent.
SHARED_DATA = REPO.parent / "shared" / "data"
SHARED_REFERENCE = REPO.parent / "shared" / "reference" / "vllm-0.32"
# Every request the researchers' own scripts send, rendered by their code (its README says how).
RESEARCHERS_REFERENCE = REPO.parent / "shared" / "reference" / "researchers"
# The study files of the researchers' own design.
RESEARCHERS_STUDIES = STUDIES_DIR / "researchers"

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
TOKENIZE = "/tokenize"


# ---- command lines and what a run leaves behind ------------------------------------------------------


def worker_args(command: str, endpoint: str, output: Path, *extra: str, **flags: object) -> list[str]:
    """`worker COMMAND` against `endpoint` for the fake's model, writing `output`, serving no metrics:
    one `--flag value` per keyword (`max_retries=2` is `--max-retries 2`), then `extra` as given."""
    argv = [command, "--output", str(output), "--model-endpoint", endpoint, "--model-name", "tiny"]
    argv += ["--metrics-port", "0"]
    for name, value in flags.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return [*argv, *extra]


def read_csv(path: Path) -> pd.DataFrame:
    """An output or input table as the worker wrote it: every cell text, empty cells ""."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


read_meta = meta  # the meta file beside an output, as a dict


def checkpoint_of(output: Path) -> Path:
    return output.with_name(output.name + ".partial.jsonl")


def study_text(name: str) -> str:
    """A chat-design study file's text (jobs/studies/chat/NAME.yaml)."""
    return (CHAT_STUDIES / f"{name}.yaml").read_text(encoding="utf-8")


def load_schema(study: str) -> dict[str, Any]:
    """A chat-design study's extraction schema (jobs/schemas/chat/STUDY_schema.json)."""
    return json.loads((SCHEMAS_DIR / f"{study}_schema.json").read_text(encoding="utf-8"))


# ---- extraction: Experiment 1 rows and a server that plays the extractor --------------------------------

STUDY1_COLUMNS = [
    "participant_id", "story_shortname", "story_setup", "priorQ", "speach", "speachQ", "knowledgeQ", "access",
    "observe",
]  # fmt: skip
EXP1_COLUMNS = [
    "model_name", "model_response", "response_story", "response_speech", "response_knowledge",
    "finish_reason", "prompt_tokens", "completion_tokens",
    "response_timestamp", "processing_time_ms", "attempts", "error",
]  # fmt: skip
# The fields of Study 1's extraction schema, in order, and a reply that fills them all.
FIELDS1 = [
    "prior_answer",
    "probability_0",
    "probability_1",
    "probability_2",
    "probability_3",
    "knowledge_answer",
]
GOOD = {"prior_answer": 3, "probability_0": 0, "probability_1": 5, "probability_2": 25, "probability_3": 70,
        "knowledge_answer": "no"}  # fmt: skip
ROW_MARK = re.compile(r"ROW-(\w+)")


def good(**overrides: Any) -> str:
    """GOOD with some fields replaced, as the JSON text an extractor replies with."""
    return json.dumps({**GOOD, **overrides})


def study1_row(key: str, response: str, *, error: str = "") -> dict[str, str]:
    """One row of a Study 1 Experiment 1 output whose reply is `response` (mark it `ROW-<key>` so the
    extractor below knows which row a request is for)."""
    return {
        "participant_id": "5",
        "story_shortname": f"story-{key}",
        "story_setup": 'Boxes from this shop almost always hold a toy.<br> Kim bought 3 boxes, "sealed".',
        "priorQ": "How many of the 3 boxes do you think hold a toy?",
        "speach": "Kim tells you on the phone: 'I have opened 2 of the 3 boxes. 2 of them hold a toy.'",
        "speachQ": "Now how many of the 3 boxes do you think hold a toy?",
        "knowledgeQ": "Do you think Kim knows exactly how many of the 3 boxes hold a toy?",
        "access": "2",
        "observe": "2",
        "model_name": "tiny",
        "model_response": response,
        # Study 1's Experiment 1 asks three questions in one conversation; the extraction shows all three.
        "response_story": response,
        "response_speech": response,
        "response_knowledge": response,
        "finish_reason": "stop" if response else "",
        "prompt_tokens": "120",
        "completion_tokens": "30",
        "response_timestamp": "2026-11-28T18:00:00.000+00:00",
        "processing_time_ms": "85",
        "attempts": "1",
        "error": error,
    }


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


class Extractor:
    """The fake server's /v1/chat/completions as an extractor: it answers the structured-output probe the
    way each kind of server does, and each row (found by its ROW-<key> marker) with scripted replies.

    vLLM enforces json_schema; DeepSeek refuses it with 400 and takes json_object only when the prompt says
    "json"; an old or foreign server accepts json_schema and ignores it; vLLM without
    disable_any_whitespace pads the probe with whitespace; a reasoning model spends the probe's tokens
    reasoning.
    """

    def __init__(self, kind: str = "vllm") -> None:
        self.kind = kind  # "vllm" | "deepseek" | "ignores_schema" | "pads_whitespace" | "reasoning"
        self.row_reasoning = "Let me think step by step"  # kind "reasoning": with an empty row reply
        self.replies: dict[str, list[tuple[str, str]]] = {}
        self.lock = threading.Lock()

    def install(self, server: FakeOpenAI) -> None:
        server.handlers[CHAT] = self

    def script(self, key: str, *replies: str | tuple[str, str]) -> None:
        """Replies for row ROW-<key>, in order (content, or (content, finish_reason)); the last repeats."""
        self.replies[key] = [reply if isinstance(reply, tuple) else (reply, "stop") for reply in replies]

    def __call__(self, request: Request) -> Ok | Status:
        payload = request.json()
        response_format = payload.get("response_format") or {}
        kind = response_format.get("type")
        if self.kind == "deepseek" and kind == "json_schema":
            return Status(400, "This response_format type is unavailable now")
        says_json = any("json" in str(m.get("content", "")).lower() for m in payload["messages"])
        if self.kind == "deepseek" and kind == "json_object" and not says_json:
            return Status(400, "Prompt must contain the word 'json' in some form")
        if kind == "json_schema" and "probe" in response_format["json_schema"]["schema"]["properties"]:
            return self._probe(request)
        if PROBE_VALUE in request.text:  # the json_object probe asks for the probe object in words
            return self._reply(request, PROBE_EXPECTED, "stop")
        first_user = next(m["content"] for m in payload["messages"] if m["role"] == "user")
        match = ROW_MARK.search(first_user)
        if match is None:
            return Status(400, "test server: no ROW- marker in the prompt")
        with self.lock:
            queue = self.replies[match.group(1)]
            content, finish_reason = queue.pop(0) if len(queue) > 1 else queue[0]
        reply = self._reply(request, content, finish_reason)
        if self.kind == "reasoning" and not content:
            reply.body["choices"][0]["message"].update(content=None, reasoning=self.row_reasoning)
        return reply

    def _probe(self, request: Request) -> Ok:
        if self.kind == "vllm":
            return self._reply(request, PROBE_EXPECTED, "stop")
        if self.kind == "pads_whitespace":  # vLLM without disable_any_whitespace
            return self._reply(request, '{"probe":' + "\t" * 40, "length")
        if self.kind == "reasoning":  # gpt-oss: the probe's budget goes to reasoning, content stays null
            reply = self._reply(request, "", "length")
            reply.body["choices"][0]["message"].update(content=None, reasoning="The user wants JSON. Let me")
            return reply
        return self._reply(request, "Sure! Here is some JSON for you.", "stop")  # accepted, not enforced

    @staticmethod
    def _reply(request: Request, content: str, finish_reason: str) -> Ok:
        body = chat_completion_body(request, content)
        body["choices"][0]["finish_reason"] = finish_reason
        return Ok(body)


# ---- probabilities: runs against the toy model, and the toy model's own answer ---------------------------


def run_probs(
    server: FakeOpenAI, tmp_path: Path, *extra: str, study: str = "chat/study1"
) -> tuple[int, Path]:
    """`worker probs` over two rows of the study's fixture, no retries; the exit code and the output."""
    output = tmp_path / "out.csv"
    argv = worker_args(
        "probs", server.base_url, output, *extra,
        input=FIXTURES / f"{Path(study).name}_small.csv", study=study, limit=2, max_retries=0,
    )  # fmt: skip
    return cli.main(argv), output


def expected_logprobs(toy: ToyLM, row: pd.Series, question: str) -> dict[str, float]:
    """The toy model's own P(option | prompt) from the recorded ids, with the documented prefix rule."""
    prompt = json.loads(row[f"{question}_prompt_token_ids"])
    variants = json.loads(row[f"{question}_variants"])
    sequences = [(label, ids) for label, forms in variants.items() for ids in forms.values()]
    out = {}
    for label, forms in variants.items():
        terms = []
        for ids in forms.values():
            value = toy.sequence_logprob(prompt, ids)
            onward = {
                o[len(ids)]
                for other, o in sequences
                if other != label and o[: len(ids)] == ids and len(o) > len(ids)
            }
            following = toy.next_logprobs([*prompt, *ids])
            value += math.log1p(-sum(math.exp(following[t]) for t in onward))
            terms.append(value)
        out[label] = lp.logsumexp(terms)
    return out


# The analysis the reasoning handler's model writes before it answers.
ANALYSIS = " They looked at all of them so yes"


def reasoning_handler(toy: ToyLM, *, finished: bool = True) -> Callable[[Request], Any]:
    """/v1/completions of a harmony reasoning model: a generation request (it carries stop_token_ids) gets
    the recorded completion (completions_stop_token_ids.json: a seeded completion that stopped at a
    requested stop token, which vLLM returns as the last of `token_ids`) with the toy's ANALYSIS as its
    choice; `finished=False` cuts it at the token limit instead. Every other request the toy scores."""
    scoring = toy._completions  # the toy's own scoring, for every request that is not a generation
    recorded = json.loads((RECORDED / "completions_stop_token_ids.json").read_text())

    def handle(request: Request) -> Any:
        body = request.json()
        if "stop_token_ids" not in body:
            return scoring(request)
        reply = copy.deepcopy(recorded)
        ids = toy.encode(ANALYSIS)
        choice = reply["choices"][0]
        if finished:
            choice.update(text=ANALYSIS, token_ids=[*ids, *body["stop_token_ids"]], finish_reason="stop")
            choice["stop_reason"] = body["stop_token_ids"][0]
        else:
            choice.update(text=ANALYSIS, token_ids=ids, finish_reason="length", stop_reason=None)
        choice["prompt_token_ids"] = body["prompt"]
        return Ok(reply)

    return handle
