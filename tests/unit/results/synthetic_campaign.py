"""A synthetic campaign of two models, written by the REAL worker (query and probs, the researchers' study
files) against the fake OpenAI server, laid out as on the output claim:

    exp1/<model>/study{1,2}_responses.csv      replies chosen per request (see `_reply`)
    exp2/<model>/study{1,2}_probabilities.csv  the toy language model's joint-completion scores

Inputs: the fixtures' rows repeated over every access x observe cell (Study 1) and every State x goal kind
(Study 2), a few items each, so that each of Study1.R's comparisons and Study2.R's tests has items.
Replies are a function of the request's prompt and seed (hash), one model answering in the format asked,
the other sometimes not (an uncodable reply) and sometimes with an error, so the tables hold partial,
uncoded and failed rows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from tests.support.fake_openai import FakeOpenAI, Ok, Request, Status, text_completion_body
from tests.support.toy_lm import ToyLM
from worker.cli import main as worker_main

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures"
RESEARCHERS = REPO / "jobs" / "studies" / "researchers"
MODELS = ("model-a", "model-b")
SAMPLES = 3
CELLS = ((1, 1), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3))
ITEMS_PER_CELL = 4
GOALS = (
    "If {sp} wanted to give as accurate and informative feedback as possible",
    "If {sp} wanted to make {ls} feel good, rather than give informative feedback",
    "If {sp} wanted to BOTH make {ls} feel good AND give accurate and informative feedback",
)
STATES = ("0 hearts", "1 heart", "2 hearts", "3 hearts")
ITEMS_PER_STATE_GOAL = 3
QUANTITY_CUE = "just a number"
SENTENCES = [f"It {f} {q}" for f in ("was", "wasn't") for q in ("terrible", "bad", "good", "amazing")]


def study1_input() -> pd.DataFrame:
    base = pd.read_csv(FIXTURES / "study1_small.csv", dtype=str, keep_default_na=False)
    rows = []
    for index in range(len(CELLS) * ITEMS_PER_CELL):
        access, observe = CELLS[index % len(CELLS)]
        row = base.iloc[index % len(base)].to_dict()
        row.update(participant_id=str(index // len(CELLS) + 1), access=str(access), observe=str(observe))
        row["story_setup"] += f" Case {index}."  # every prompt differs, and so do the replies drawn for it
        rows.append(row)
    return pd.DataFrame(rows)


def study2_input() -> pd.DataFrame:
    base = pd.read_csv(FIXTURES / "study2_small.csv", dtype=str, keep_default_na=False)
    rows = []
    index = 0
    for state in STATES:
        for goal in GOALS:
            for _ in range(ITEMS_PER_STATE_GOAL):
                row = base.iloc[index % len(base)].to_dict()
                row.update(
                    Participant_ID=str(index + 1), State=state,
                    Goal=goal.format(sp=row["SP_Name"], ls=row["LS_Name"]),
                )  # fmt: skip
                row["Precontext"] += f" Case {index}."
                rows.append(row)
                index += 1
    return pd.DataFrame(rows)


def _draw(text: str, seed: object, choices: int) -> int:
    digest = hashlib.sha256(f"{seed}|{text}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % choices


def _reply(model: str, request: Request) -> Ok | Status:
    body = request.json()
    prompt, seed = str(body["prompt"]), body.get("seed")
    sloppy = model == MODELS[1]
    if sloppy and _draw(prompt, seed, 17) == 0:
        return Status(400, message="prompt too long")  # a failed row
    if QUANTITY_CUE in prompt:
        options = ["3", "3", "2", "1", "0", "3."] + (["I think three", "2 or 3"] if sloppy else [])
    elif '"yes" or "no"' in prompt:
        options = ["yes", "no", "No."] + (["maybe"] if sloppy else [])
    else:
        options = [*SENTENCES, '"It wasn\u2019t amazing."'] + (["It was fine."] if sloppy else [])
    return Ok(text_completion_body(request, f" {options[_draw(prompt, seed, len(options))]}\n"))


def _run(argv: list[str]) -> None:
    code = worker_main(argv)
    assert code in (0, 3), argv


def write_campaign(root: Path, inputs: Path) -> Path:
    """Write both models' Experiment 1 and 2 outputs under `root`; `root`."""
    inputs.mkdir(parents=True, exist_ok=True)
    sources = {"study1": inputs / "study1.csv", "study2": inputs / "study2.csv"}
    study1_input().to_csv(sources["study1"], index=False)
    study2_input().to_csv(sources["study2"], index=False)
    for model in MODELS:
        with FakeOpenAI(model=model) as server:
            server.handlers["/v1/completions"] = lambda request, model=model: _reply(model, request)
            common = ["--model-endpoint", server.base_url, "--model-name", model, "--metrics-port", "0"]
            common += ["--max-retries", "0"]
            for study, source in sources.items():
                _run([
                    "query", "--study", str(RESEARCHERS / f"{study}.yaml"), "--input", str(source),
                    "--output", str(root / "exp1" / model / f"{study}_responses.csv"),
                    "--samples", str(SAMPLES), *common,
                ])  # fmt: skip
        toy = ToyLM()
        with FakeOpenAI(model=model) as server:
            toy.install(server)
            common = ["--model-endpoint", server.base_url, "--model-name", model, "--metrics-port", "0"]
            for study, source in sources.items():
                _run([
                    "probs", "--study", str(RESEARCHERS / f"{study}.yaml"), "--input", str(source),
                    "--output", str(root / "exp2" / model / f"{study}_probabilities.csv"), *common,
                ])  # fmt: skip
    return root
