"""Prefix reuse in the researchers' Experiment 2 on the real vLLM CPU server: what the prefix cache saves.

Every option of a question shares the question's prompt, so a server that reused the prompt's computed
state would compute each prompt once per question instead of once per option. This script runs
`python -m worker probs` with the researchers' study files (jobs/studies/researchers/, joint-completion
scoring: one request per question carrying every option) on the first rows of both studies, then sends the
same token sequences one request per option (how their ModelScorer loops), and reads vLLM's /metrics
around each: prefix-cache queries and hits (`vllm:prefix_cache_queries_total`, `..._hits_total`) and prompt
tokens computed vs taken from the cache (`vllm:prompt_tokens_total`, `vllm:prompt_tokens_cached_total`).
A control sends the same sequences once more without prompt log-probabilities, to show what the cache
would give a request allowed to read it.

    .venv/bin/python benchmarks/prefix_reuse.py              # builds and starts the tiny server (~1-4 min)
    .venv/bin/python benchmarks/prefix_reuse.py --endpoint http://127.0.0.1:8000/v1 --rows 5

The rows come from ../shared/data when it is there, else the project's fixtures. Nothing is written
outside a temporary directory.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from worker.studies.definition import load_study  # noqa: E402
from worker.studies.probability_section import questions_for  # noqa: E402

STUDIES = REPO / "jobs" / "studies" / "researchers"
SHARED_DATA = REPO.parent / "shared" / "data"
FIXTURES = REPO / "tests" / "fixtures"
SERVED_NAME = "tiny"
COUNTERS = {
    "queries": "vllm:prefix_cache_queries_total",
    "hits": "vllm:prefix_cache_hits_total",
    "prompt_tokens": "vllm:prompt_tokens_total",
    "cached_tokens": "vllm:prompt_tokens_cached_total",
    "requests": "vllm:request_success_total",
}


def load_tiny_vllm() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tiny_vllm", REPO / "scripts" / "tiny_vllm.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["tiny_vllm"] = module
    spec.loader.exec_module(module)
    return module


def counters(http: httpx.Client) -> dict[str, float]:
    """The counters above, each summed over its label sets."""
    totals = dict.fromkeys(COUNTERS, 0.0)
    for line in http.get("/metrics").text.splitlines():
        for key, name in COUNTERS.items():
            if line.startswith((name + "{", name + " ")):
                totals[key] += float(line.rsplit(" ", 1)[1])
    return totals


@dataclass
class Measure:
    """What one approach cost the server, from the counters' differences."""

    approach: str
    options: int  # options scored (sequences sent)
    counts: dict[str, float]
    http_requests: int = 0  # /v1/completions requests sent

    def row(self) -> list[str]:
        c = self.counts
        computed = c["prompt_tokens"] - c["cached_tokens"]
        rate = f"{c['hits'] / c['queries']:.1%}" if c["queries"] else "n/a (not queried)"
        return [
            self.approach,
            f"{self.http_requests}",
            f"{c['requests']:.0f}",
            f"{self.options}",
            f"{c['prompt_tokens']:.0f}",
            f"{c['cached_tokens']:.0f}",
            f"{c['queries']:.0f}",
            f"{c['hits']:.0f}",
            rate,
            f"{computed / self.options:.1f}",
        ]


def measured(http: httpx.Client, approach: str, options: int, requests: int, send: Any) -> Measure:
    before = counters(http)
    send()
    after = counters(http)
    return Measure(approach, options, {k: after[k] - before[k] for k in COUNTERS}, requests)


def first_rows(study: str, rows: int, workdir: Path) -> Path:
    source = SHARED_DATA / f"{study}.csv"
    if not source.exists():
        source = FIXTURES / f"{study}_small.csv"
    path = workdir / f"{study}_input.csv"
    pd.read_csv(source, dtype=str, keep_default_na=False).head(rows).to_csv(path, index=False)
    return path


def run_worker(base_url: str, study: Path, input_csv: Path, output: Path) -> None:
    command = [
        sys.executable, "-m", "worker", "probs", "--input", str(input_csv), "--output", str(output),
        "--study", str(study), "--model-endpoint", base_url, "--model-name", SERVED_NAME,
        "--metrics-port", "0", "--wait-timeout", "30",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker probs failed (exit {done.returncode}):\n{done.stderr[-2000:]}")


def joint_sequences(http: httpx.Client, study: Path, output: Path) -> list[list[int]]:
    """Every option's prompt+option tokens the worker scored, from its recorded prompts."""
    questions = questions_for(load_study(str(study)), None)
    frame = pd.read_csv(output, dtype=str, keep_default_na=False)
    sequences = []
    for _, row in frame.iterrows():
        for question in questions:
            prompt = row[f"{question.name}_prompt"]
            for option in question.options:
                body = {"model": SERVED_NAME, "prompt": prompt + option.text}
                sequences.append(http.post("/tokenize", json=body).json()["tokens"])
    return sequences


def one_per_option(http: httpx.Client, sequences: list[list[int]], *, prompt_logprobs: bool) -> None:
    for ids in sequences:
        body: dict[str, Any] = {"model": SERVED_NAME, "prompt": ids, "temperature": 1.0}
        if prompt_logprobs:
            body.update(echo=True, max_tokens=0, prompt_logprobs=0)
        else:
            body.update(max_tokens=1)
        http.post("/v1/completions", json=body).raise_for_status()


def benchmark(base_url: str, rows: int, workdir: Path) -> list[Measure]:
    root = base_url.removesuffix("/v1")
    results = []
    with httpx.Client(base_url=root, timeout=600) as http:
        for study in ("study1", "study2"):
            path = STUDIES / f"{study}.yaml"
            input_csv, output = first_rows(study, rows, workdir), workdir / f"{study}_probs.csv"
            questions = questions_for(load_study(str(path)), None)
            options = sum(len(q.options) for q in questions) * rows
            results.append(
                measured(http, f"{study}: worker, one request per question", options, len(questions) * rows,
                         lambda p=path, i=input_csv, o=output: run_worker(base_url, p, i, o))
            )  # fmt: skip
            sequences = joint_sequences(http, path, output)
            assert len(sequences) == options
            results.append(
                measured(http, f"{study}: one request per option", options, options,
                         lambda s=sequences: one_per_option(http, s, prompt_logprobs=True))
            )  # fmt: skip
            results.append(
                measured(http, f"{study}: control, no prompt_logprobs", options, options,
                         lambda s=sequences: one_per_option(http, s, prompt_logprobs=False))
            )  # fmt: skip
    return results


HEADER = [
    "approach", "HTTP requests", "engine requests", "options", "prompt tokens", "cached", "cache queries",
    "cache hits", "hit rate", "computed per option",
]  # fmt: skip


def print_table(results: list[Measure]) -> None:
    rows = [HEADER, *(m.row() for m in results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    for r in rows:
        print("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                        for i, (cell, width) in enumerate(zip(r, widths, strict=True))))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoint", help="A running tiny server's /v1 URL (default: start one).")
    parser.add_argument("--rows", type=int, default=3, help="First rows of each study (default 3).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prefix-reuse-") as scratch:
        workdir = Path(scratch)
        server = None
        base_url = args.endpoint
        if base_url is None:
            tiny_vllm = load_tiny_vllm()
            model_dir = tiny_vllm.build_model(tiny_vllm.server_python(), workdir / "model")
            server = tiny_vllm.start_server(model_dir, workdir / "server")
            base_url = server.base_url
        try:
            with httpx.Client(base_url=base_url.removesuffix("/v1"), timeout=60) as http:
                info = next(
                    line for line in http.get("/metrics").text.splitlines()
                    if line.startswith("vllm:cache_config_info")
                )  # fmt: skip
            block = info.split('block_size="', 1)[1].split('"', 1)[0]
            caching = info.split('enable_prefix_caching="', 1)[1].split('"', 1)[0]
            print(f"server {base_url}: enable_prefix_caching={caching}, block_size={block}; rows {args.rows}")
            print_table(benchmark(base_url, args.rows, workdir))
        finally:
            if server is not None:
                tiny_vllm.stop_server(server)


if __name__ == "__main__":
    main()
