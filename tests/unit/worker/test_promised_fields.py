"""A 2xx reply missing a field its request promised is retried, by every pipeline, the same way.

Each case runs the real CLI in-process against the fake server, whose normal reply for one kind of request
loses the promised field (the damaged body is otherwise what vLLM 0.32 sends): once, the row succeeds
after a retry; every time, the row fails after the retries as a transport failure that the next run sends
again. Replies that are complete but unusable for the row stay row-specific failures.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_openai import FakeOpenAI, Ok, Request, Status
from tests.support.toy_lm import ToyLM
from tests.unit.worker.support import (
    CHAT,
    COMPLETIONS,
    FIXTURES,
    TOKENIZE,
    Extractor,
    good,
    read_csv,
    read_meta,
    reasoning_handler,
    study1_row,
    worker_args,
    write_csv,
)
from worker import cli

MAX_RETRIES = 2
ROWS = 2


@dataclass
class Damage:
    """Wraps a path's handler: the replies to requests `matches` accepts lose a promised field.

    `times` replies are damaged (None: every one); `damaged` counts them and `sent` holds the text of
    every request it saw, to tell a resend (the same bytes) from a re-ask.
    """

    original: Callable[[Request], Any]
    damage: Callable[[dict[str, Any]], None]
    matches: Callable[[Request], bool]
    times: int | None = 1
    damaged: int = 0
    damaged_text: str = ""
    sent: list[str] | None = None

    def __call__(self, request: Request) -> Any:
        reply = self.original(request)
        if not self.matches(request):
            return reply
        self.sent = [*(self.sent or []), request.text]
        if not isinstance(reply, Ok) or self.times == 0:
            return reply
        if self.times is not None:
            self.times -= 1
        self.damaged += 1
        self.damaged_text = request.text
        body = copy.deepcopy(reply.body)
        self.damage(body)
        return Ok(body)


def damage(
    server: FakeOpenAI,
    path: str,
    what: Callable[[dict[str, Any]], None],
    matches: Callable[[Request], bool] = lambda _request: True,
    times: int | None = 1,
) -> Damage:
    wrapper = Damage(server.handlers[path], what, matches, times)
    server.handlers[path] = wrapper
    return wrapper


def heal(server: FakeOpenAI, path: str) -> None:
    handler = server.handlers[path]
    assert isinstance(handler, Damage)
    server.handlers[path] = handler.original


def args(command: str, server: FakeOpenAI, output: Path, **flags: object) -> list[str]:
    return worker_args(
        command, server.base_url, output, **flags,
        max_retries=MAX_RETRIES, backoff_base=0.01, wait_timeout=5,
        samples=1,  # one answer per row (the studies sample 5): these tests count rows
    )  # fmt: skip


def meta_rows(output: Path) -> dict[str, Any]:
    return read_meta(output)["rows"]


# ---- the three pipelines, each as a runnable case ------------------------------------------------------


@dataclass
class Case:
    """One pipeline run over ROWS rows, and the request whose reply loses a promised field."""

    path: str  # where the damaged reply comes from
    what: Callable[[dict[str, Any]], None]  # removes the promised field from a normal body
    matches: Callable[[Request], bool]  # the row's requests (not the probes before the first row)
    run: Callable[[FakeOpenAI, Path], tuple[int, Path]]
    serve: Callable[[FakeOpenAI], None]  # what the server answers with before the damage
    error_column: str = "error"


def no_content(body: dict[str, Any]) -> None:
    body["choices"][0]["message"]["content"] = None


def run_query(server: FakeOpenAI, tmp_path: Path) -> tuple[int, Path]:
    output = tmp_path / "out.csv"
    argv = args("query", server, output, input=FIXTURES / "study1_small.csv", study="chat/study1", limit=ROWS)
    return cli.main(argv), output


def probs_runner(*extra: str, study: str = "chat/study1") -> Callable[[FakeOpenAI, Path], tuple[int, Path]]:
    def run(server: FakeOpenAI, tmp_path: Path) -> tuple[int, Path]:
        output = tmp_path / "out.csv"
        argv = args(
            "probs", server, output, input=FIXTURES / f"{Path(study).name}_small.csv", study=study, limit=ROWS
        )
        return cli.main([*argv, *extra]), output

    return run


def run_extract(server: FakeOpenAI, tmp_path: Path) -> tuple[int, Path]:
    source = write_csv(tmp_path / "exp1.csv", [study1_row(key, f"ROW-{key} text") for key in ("a", "b")])
    output = tmp_path / "structured.csv"
    return cli.main(args("extract", server, output, input=source, study="chat/study1")), output


def is_row_first_token(request: Request) -> bool:
    # The probes before the first row score the short probe conversation; a row's prompt holds its story.
    payload = request.json() or {}
    prompt = payload.get("prompt")
    single = isinstance(prompt, list) and not isinstance(prompt[0], list)
    return "logprobs" in payload and single and len(prompt) > 60


def is_row_tokenize(request: Request) -> bool:
    messages = (request.json() or {}).get("messages") or []
    return sum(len(str(m.get("content", ""))) for m in messages) > 200


def no_logprobs(body: dict[str, Any]) -> None:
    body["choices"][0]["logprobs"] = None


def no_prompt_logprobs(body: dict[str, Any]) -> None:
    for choice in body["choices"]:
        choice["prompt_logprobs"] = None


def no_tokens(body: dict[str, Any]) -> None:
    del body["tokens"]


def no_token_ids(body: dict[str, Any]) -> None:
    del body["choices"][0]["token_ids"]


def tokenize_missing(_request: Request) -> Status:
    return Status(404, "Not Found")


# ---- what each case's server answers with ------------------------------------------------------------


def plain(_server: FakeOpenAI) -> None:
    """The fake's own chat answers."""


def toy_model(server: FakeOpenAI) -> None:
    ToyLM().install(server)


def toy_model_without_tokenize(server: FakeOpenAI) -> None:
    toy_model(server)
    server.handlers[TOKENIZE] = tokenize_missing  # probs falls back to the chat endpoint


def toy_reasoning_model(server: FakeOpenAI) -> None:
    toy = ToyLM()
    toy.install(server)
    server.handlers[COMPLETIONS] = reasoning_handler(toy)


def extractor_of_both_rows(server: FakeOpenAI) -> None:
    extractor = Extractor()
    for key in ("a", "b"):
        extractor.script(key, good())
    extractor.install(server)


CASES = {
    "query: a message with neither content nor reasoning": Case(
        CHAT, no_content, lambda _r: True, run_query, plain
    ),
    "probs first-token: no logprobs": Case(
        COMPLETIONS, no_logprobs, is_row_first_token, probs_runner(), toy_model
    ),
    "probs continuation: no prompt_logprobs": Case(
        COMPLETIONS,
        no_prompt_logprobs,
        lambda r: "prompt_logprobs" in (r.json() or {}),
        probs_runner("--method", "continuation"),
        toy_model,
    ),
    "probs: a /tokenize reply without tokens": Case(
        TOKENIZE, no_tokens, is_row_tokenize, probs_runner("--method", "continuation"), toy_model
    ),
    "probs chat fallback: no logprobs": Case(
        CHAT, no_logprobs, lambda _r: True, probs_runner(), toy_model_without_tokenize
    ),
    "probs after-reasoning: a reasoning completion without token_ids": Case(
        COMPLETIONS,
        no_token_ids,
        lambda r: "stop_token_ids" in r.text,
        probs_runner("--reasoning-format", "harmony", study="chat/study2"),
        toy_reasoning_model,
    ),
    "extract: a structured-output reply with no content": Case(
        CHAT,
        no_content,
        lambda r: "ROW-" in r.text,
        run_extract,
        extractor_of_both_rows,
        error_column="extraction_errors",
    ),
}


@pytest.fixture
def server_setup(request: pytest.FixtureRequest) -> Callable[[FakeOpenAI], None]:
    """The case's server; a test without a case gets the plain fake."""
    callspec = getattr(request.node, "callspec", None)
    return CASES[callspec.params["name"]].serve if callspec is not None else plain


@pytest.mark.parametrize("name", CASES)
def test_a_reply_missing_its_promised_field_once_is_retried_and_the_row_succeeds(
    server: FakeOpenAI, tmp_path: Path, name: str
) -> None:
    case = CASES[name]
    damaged = damage(server, case.path, case.what, case.matches, times=1)

    code, output = case.run(server, tmp_path)

    assert damaged.damaged == 1
    assert (damaged.sent or []).count(damaged.damaged_text) == 2  # the same request, sent again
    assert code == 0
    assert meta_rows(output)["ok"] == ROWS
    assert set(read_csv(output)[case.error_column]) == {""}


@pytest.mark.parametrize("name", CASES)
def test_a_reply_always_missing_its_promised_field_fails_as_transport_and_the_rerun_resends_it(
    server: FakeOpenAI, tmp_path: Path, name: str
) -> None:
    case = CASES[name]
    damaged = damage(server, case.path, case.what, case.matches, times=None)

    code, output = case.run(server, tmp_path)

    assert code == 3
    rows = meta_rows(output)
    assert (rows["failed_transport"], rows["failed_row_specific"]) == (ROWS, 0)
    # Every row's request was sent 1 + MAX_RETRIES times (probs asks several questions per row).
    assert damaged.damaged >= ROWS * (1 + MAX_RETRIES)
    assert damaged.damaged % (1 + MAX_RETRIES) == 0
    errors = read_csv(output)[case.error_column]
    assert errors.str.contains(f"gave up after {1 + MAX_RETRIES} attempts").all()

    heal(server, case.path)
    code, output = case.run(server, tmp_path)

    assert code == 0
    assert meta_rows(output)["ok"] == ROWS
    assert set(read_csv(output)[case.error_column]) == {""}


# ---- complete replies the row cannot use stay the row's own failure -------------------------------------


def reasoned_out_of_tokens(body: dict[str, Any]) -> None:
    body["choices"][0]["message"].update(content=None, reasoning="Let me count the boxes first")
    body["choices"][0]["finish_reason"] = "length"


def test_an_empty_answer_after_reasoning_hit_max_tokens_is_not_resent(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    damaged = damage(server, CHAT, reasoned_out_of_tokens, times=None)

    code, output = run_query(server, tmp_path)

    assert code == 3
    assert damaged.damaged == ROWS  # no retry: the same request would reason out of tokens again
    rows = meta_rows(output)
    assert (rows["failed_transport"], rows["failed_row_specific"]) == (0, ROWS)
    assert read_csv(output)["error"].str.contains("finish_reason=length").all()

    code, _ = run_query(server, tmp_path)
    assert code == 3
    assert damaged.damaged == ROWS  # kept as the rows' result: the rerun sends nothing


def test_a_reasoning_that_never_closed_is_not_resent(server: FakeOpenAI, toy: ToyLM, tmp_path: Path) -> None:
    toy.install(server)
    server.handlers[COMPLETIONS] = reasoning_handler(toy, finished=False)
    run = probs_runner("--reasoning-format", "harmony", study="chat/study2")

    code, output = run(server, tmp_path)
    generations = [r for r in server.requests_to(COMPLETIONS) if "stop_token_ids" in r.text]

    assert code == 3
    assert len(generations) == len({r.text for r in generations})  # none sent twice
    rows = meta_rows(output)
    assert (rows["failed_transport"], rows["failed_row_specific"]) == (0, ROWS)
    assert read_csv(output)["error"].str.contains("the reasoning ran out of tokens").all()
