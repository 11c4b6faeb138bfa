"""Independent log-probabilities for the exactness test of `worker probs` (issue 6).

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


def main() -> None:
    request = json.load(sys.stdin)
    model = AutoModelForCausalLM.from_pretrained(request["model_dir"], torch_dtype=torch.float32)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(request["model_dir"])
    results = []
    with torch.no_grad():
        for query in request["queries"]:
            ids = query["ids"]
            logits = model(torch.tensor([ids])).logits[0].to(torch.float64)
            logprobs = torch.log_softmax(logits, dim=-1)
            token_logprobs = [float(logprobs[j - 1, ids[j]]) for j in range(query["start"], len(ids))]
            following = {str(t): float(logprobs[len(ids) - 1, t]) for t in query.get("next", [])}
            results.append({"token_logprobs": token_logprobs, "next": following})
    decoded = [tokenizer.decode(ids) for ids in request.get("decode", [])]
    json.dump({"results": results, "decoded": decoded}, sys.stdout)


if __name__ == "__main__":
    main()
