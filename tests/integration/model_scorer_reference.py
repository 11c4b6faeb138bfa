"""The researchers' ModelScorer rule, written again from their code with transformers: the reference
the joint-completion integration test compares the worker's numbers with.

Runs under the vLLM server's own interpreter (.venv-vllm: torch + transformers + numpy), NOT the project's
venv, and shares no code with the worker. It follows tgmorton/knowledge-politeness-llms
src/utils/model_scorer.py: `score_completion` (tokenizer(prompt) and tokenizer(prompt + completion) with the
tokenizer's defaults; the tokens of the second beyond the first's length scored with log_softmax of the
logits one position earlier, summed left to right; -100.0 when there are none) and `_normalize_logprobs`
(numpy, max subtracted). They ran float16 on CUDA; this runs float32 on CPU, as the tiny test server does.

stdin:  {"model_dir": ..., "cases": [{"prompt": "...", "options": ["...", ...]}]}
stdout: {"cases": [{"prompt_ids": [...], "joint_ids": [[...], ...], "logprobs": [...], "probs": [...]}]}
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def score_completion(model: Any, tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], float]:
    prompt_ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    full_ids = tokenizer(prompt + completion, return_tensors="pt")["input_ids"]
    prompt_len = prompt_ids.shape[1]
    completion_ids = full_ids[0, prompt_len:]
    if len(completion_ids) == 0:
        return full_ids[0].tolist(), -100.0
    with torch.no_grad():
        logits = model(input_ids=full_ids).logits
    total = 0.0
    for i, token_id in enumerate(completion_ids):
        log_probs = torch.nn.functional.log_softmax(logits[0, prompt_len + i - 1, :], dim=-1)
        total += log_probs[token_id].item()
    return full_ids[0].tolist(), total


def normalise(logprobs: list[float]) -> list[float]:
    values = np.array(logprobs)
    exp_values = np.exp(values - np.max(values))
    return [float(p) for p in exp_values / np.sum(exp_values)]


def main() -> None:
    request = json.load(sys.stdin)
    torch.set_num_threads(1)  # CI shares 2 cores with the server; more threads only contend
    tokenizer = AutoTokenizer.from_pretrained(request["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(request["model_dir"], dtype=torch.float32).eval()
    out = []
    for case in request["cases"]:
        scored = [score_completion(model, tokenizer, case["prompt"], option) for option in case["options"]]
        logprobs = [value for _, value in scored]
        out.append(
            {
                "prompt_ids": tokenizer(case["prompt"])["input_ids"],
                "joint_ids": [ids for ids, _ in scored],
                "logprobs": logprobs,
                "probs": normalise(logprobs),
            }
        )
    json.dump({"cases": out}, sys.stdout)


if __name__ == "__main__":
    main()
