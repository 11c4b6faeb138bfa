"""Independent log-probabilities for the exactness test of `worker probs`.

Runs under the vLLM server's own interpreter (.venv-vllm: torch + transformers), NOT the project's venv,
and shares no code with the worker: it loads the tiny model with transformers and does a plain forward
pass over the token ids it is given.

stdin: {"model_dir": "...", "queries": [{"ids": [...], "start": n, "next": [t, ...]}], "decode": [[...]]}
stdout: {"results": [{"token_logprobs": [log P(ids[j] | ids[:j]) for j >= start],
                      "next": {"t": log P(t | ids)}}],
         "decoded": ["text of each id list in decode", ...]}
"""

from __future__ import annotations

import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

BATCH = 32


def main() -> None:
    request = json.load(sys.stdin)
    torch.set_num_threads(1)  # CI shares 2 cores with the server; more threads only contend
    model = AutoModelForCausalLM.from_pretrained(request["model_dir"], dtype=torch.float32)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(request["model_dir"])
    queries = request["queries"]
    results: list[dict[str, object]] = [{} for _ in queries]
    # Queries of equal length go through one batched forward pass: no padding, so no mask to get wrong.
    by_length: dict[int, list[int]] = {}
    for index, query in enumerate(queries):
        by_length.setdefault(len(query["ids"]), []).append(index)
    with torch.no_grad():
        for indices in by_length.values():
            for start in range(0, len(indices), BATCH):
                chunk = indices[start : start + BATCH]
                batch = torch.tensor([queries[i]["ids"] for i in chunk])
                logprobs = torch.log_softmax(model(batch).logits.to(torch.float64), dim=-1)
                for row, i in enumerate(chunk):
                    results[i] = score(queries[i], logprobs[row])
    decoded = [tokenizer.decode(ids) for ids in request.get("decode", [])]
    json.dump({"results": results, "decoded": decoded}, sys.stdout)


def score(query: dict, logprobs: torch.Tensor) -> dict[str, object]:
    ids = query["ids"]
    token_logprobs = [float(logprobs[j - 1, ids[j]]) for j in range(query["start"], len(ids))]
    following = {str(t): float(logprobs[len(ids) - 1, t]) for t in query.get("next", [])}
    return {"token_logprobs": token_logprobs, "next": following}


if __name__ == "__main__":
    main()
