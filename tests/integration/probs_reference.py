"""An independent reference for the exactness test of `worker probs`: prompts, options and log-probabilities.

Runs under the vLLM server's own interpreter (.venv-vllm: torch + transformers + pyyaml), NOT the project's
venv, and shares no code with the worker. From the study file and the CSV rows alone it:
- renders every question's prompt with the model's OWN tokenizer (`apply_chat_template`, generation
  prompt added), so a bug in the worker's rendering, in its choice of template or a doubled BOS differs;
- tokenizes every option and its surface variants itself, right after that prompt;
- scores them with a plain transformers forward pass.

The rules it re-implements from their description (README "Experiment 2"): a row value gets the study's
text replacements; `expand: {k: [...]}` substitutes {k} before the row's columns; an option's probability
is the sum over its distinct variant token sequences of P(sequence | prompt), where a sequence that is a
proper prefix of another option's counts only when the answer does not continue into it.

stdin: {"model_dir", "study_file", "rows": [{column: value}], "variants": "case-and-space" | "none",
        "tokens": null | ["yes", "no", ...], "cases": [{"row": i, "question": name, "method": m}]}
stdout: {"cases": [{"prompt_ids": [...], "prompt_text": "...", "sequences": {label: [[ids], ...]},
                    "logprobs": {label: value}}], "bos_id": the tokenizer's BOS id}
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    request = json.load(sys.stdin)
    torch.set_num_threads(1)  # CI shares 2 cores with the server; more threads only contend
    tokenizer = AutoTokenizer.from_pretrained(request["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(request["model_dir"], dtype=torch.float32).eval()
    study = yaml.safe_load(Path(request["study_file"]).read_text(encoding="utf-8"))
    questions = study_questions(study, request.get("tokens"))
    out = []
    for case in request["cases"]:
        row = {k: clean(study, v) for k, v in request["rows"][case["row"]].items()}
        question = questions[case["question"]]
        messages = [{"role": "system", "content": question["system"]}] if question["system"] else []
        messages.append({"role": "user", "content": question["user"].format_map(row)})
        prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        options = question["options"]
        sequences = option_sequences(tokenizer, prompt_text, prompt_ids, options, request["variants"])
        out.append(
            {
                "prompt_ids": prompt_ids,
                "prompt_text": prompt_text,
                "sequences": {label: [list(s) for s in seqs] for label, seqs in sequences.items()},
                "logprobs": option_logprobs(model, prompt_ids, sequences, case["method"]),
            }
        )
    json.dump({"cases": out, "bos_id": tokenizer.bos_token_id}, sys.stdout)


def clean(study: dict[str, Any], value: str) -> str:
    for old, new in (study.get("text_replacements") or {}).items():
        value = value.replace(old, new)
    return value


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text.replace("'", "")).strip("_").lower() or "option"


def study_questions(study: dict[str, Any], tokens: list[str] | None) -> dict[str, dict[str, Any]]:
    """name -> {system, user (row placeholders left), options [(label, text)]}."""
    if tokens:
        # The generic question: the study's Experiment 1 prompt, its turns' questions in one message.
        prompt = study["prompt"]
        user = prompt.get("user") or "\n\n".join(turn["user"] for turn in prompt["turns"])
        options = [(slug(t), t) for t in tokens]
        return {"answer": {"system": prompt.get("system"), "user": user, "options": options}}
    section = study["probability"]
    out = {}
    for spec in section["questions"]:
        options = [(o.get("label") or slug(o["text"]), o["text"]) for o in spec["options"]]
        system = spec.get("system", section.get("system"))
        for variable, values in (spec.get("expand") or {"": [None]}).items():
            for value in values:
                name, user = spec["name"], spec["user"]
                if variable:
                    name = name.replace("{" + variable + "}", str(value))
                    user = user.replace("{" + variable + "}", str(value))
                out[name] = {"system": system, "user": user, "options": options}
    return out


def variants(text: str, policy: str) -> list[str]:
    forms = [text]
    if policy == "case-and-space":
        forms += [text[:1].upper() + text[1:], text[:1].lower() + text[1:]]
    if policy != "none":
        forms += [" " + form for form in forms]
    return list(dict.fromkeys(forms))


def option_sequences(
    tokenizer: Any, prompt_text: str, prompt_ids: list[int], options: list[tuple[str, str]], policy: str
) -> dict[str, set[tuple[int, ...]]]:
    """Each option's distinct token sequences as the model would write them right after the prompt."""
    out: dict[str, set[tuple[int, ...]]] = {}
    for label, text in options:
        out[label] = set()
        for form in variants(text, policy):
            full = tokenizer(prompt_text + form, add_special_tokens=False)["input_ids"]
            if full[: len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids):
                out[label].add(tuple(full[len(prompt_ids) :]))
            else:  # the form merges with the prompt's last token: its own tokens
                out[label].add(tuple(tokenizer(form, add_special_tokens=False)["input_ids"]))
    return out


def option_logprobs(
    model: Any, prompt_ids: list[int], sequences: dict[str, set[tuple[int, ...]]], method: str
) -> dict[str, float]:
    every = [(label, seq) for label, seqs in sequences.items() for seq in seqs]
    out = {}
    with torch.no_grad():
        for label, seqs in sequences.items():
            terms = []
            for seq in sorted(seqs) if method != "first-token" else sorted({s[:1] for s in seqs}):
                ids = [*prompt_ids, *seq]
                logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].to(torch.float64), dim=-1)
                value = sum(float(logprobs[j - 1, ids[j]]) for j in range(len(prompt_ids), len(ids)))
                if method != "first-token":
                    onward = {
                        o[len(seq)]
                        for other, o in every
                        if other != label and o[: len(seq)] == seq and len(o) > len(seq)
                    }
                    leak = sum(math.exp(float(logprobs[len(ids) - 1, t])) for t in onward)
                    value += math.log1p(-leak)
                terms.append(value)
            top = max(terms)
            out[label] = top + math.log(sum(math.exp(t - top) for t in terms))
    return out


if __name__ == "__main__":
    main()
