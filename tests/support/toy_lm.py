"""A toy language model behind vLLM's log-probability endpoints, for unit tests of `worker probs`.

It plugs into `FakeOpenAI` as handlers for /tokenize, /detokenize, /v1/completions and
/v1/chat/completions. Its next-token distribution is a fixed, cheap function of the context, so a test
can compute the true probability of any token sequence directly (`ToyLM.sequence_logprob`) and compare it
with what the worker reports. Response bodies are the real vLLM 0.32 bodies from
tests/fixtures/vllm-0.32 with only the choices replaced, so every other field stays real.

The tokenizer is word-level with vLLM-like traps: a leading space belongs to the word (" yes" and "yes"
are different tokens), digits are single tokens (so "10%" and "100%" share the first token "1", as with
Gemma), and "wasn't" is "wasn" + "'t".
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from tests.support.fake_openai import FakeOpenAI, Ok, Request, Status

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vllm-0.32"
SPECIALS = ("<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>")
TOKEN_PATTERN = re.compile(r"<s>|</s>|<\|[a-z]+\|>|\n| ?[A-Za-z]+|'[a-z]+| ?[0-9]|.", re.DOTALL)
VOCAB_SIZE = 400


def _fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


@cache
def _raw_logits(length: int, last: int) -> tuple[float, ...]:
    # Depends on the context only through its length and last token: cheap, deterministic, far from uniform.
    return tuple(4.0 * math.sin(0.37 * t + 1.3 * length + 0.11 * last) for t in range(VOCAB_SIZE))


@dataclass
class ToyLM:
    boost: dict[str, float] = field(default_factory=dict)  # piece -> added logit (to put it in the top N)
    temperature_scales_logprobs: bool = False  # like vLLM started with logprobs_mode=processed_logprobs
    reject_system_role: bool = False  # like Gemma 2's chat template
    scores_requested_ids: bool = True  # honours logprob_token_ids like vLLM 0.32 (older ones ignore it)
    pieces: list[str] = field(default_factory=lambda: list(SPECIALS))
    _memo: dict[tuple[Any, ...], list[float]] = field(default_factory=dict, repr=False)

    # ---- tokenizer ---------------------------------------------------------------------------------------
    def token_id(self, piece: str) -> int:
        if piece not in self.pieces:
            self.pieces.append(piece)
            if len(self.pieces) > VOCAB_SIZE:
                raise RuntimeError("toy vocabulary exhausted")
        return self.pieces.index(piece)

    def encode(self, text: str) -> list[int]:
        return [self.token_id(piece) for piece in TOKEN_PATTERN.findall(text)]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.pieces[i] if i < len(self.pieces) else f"<unused{i}>" for i in ids)

    @staticmethod
    def render(messages: list[dict[str, str]]) -> str:
        turns = "".join(f"<|{m['role']}|>\n{m['content']}</s>\n" for m in messages)
        return f"<s>{turns}<|assistant|>\n"

    # ---- model -------------------------------------------------------------------------------------------
    def next_logprobs(self, context: list[int], temperature: float = 1.0) -> list[float]:
        # Greedy (temperature 0) does no division, in vLLM too.
        scale = temperature if self.temperature_scales_logprobs and temperature > 0 else 1.0
        key = (len(context), context[-1] if context else 0, scale, tuple(sorted(self.boost.items())))
        if key not in self._memo:
            self._memo[key] = self._next_logprobs(key[0], key[1], scale)
        return self._memo[key]

    def _next_logprobs(self, length: int, last: int, temperature: float) -> list[float]:
        logits = list(_raw_logits(length, last))
        for piece, bonus in self.boost.items():
            logits[self.token_id(piece)] += bonus
        logits = [x / temperature for x in logits]
        top = max(logits)
        log_z = top + math.log(math.fsum(math.exp(x - top) for x in logits))
        return [x - log_z for x in logits]

    def sequence_logprob(self, prompt: list[int], continuation: list[int]) -> float:
        """log P(continuation | prompt): the ground truth the worker's numbers are compared with."""
        context, total = list(prompt), 0.0
        for token in continuation:
            total += self.next_logprobs(context)[token]
            context.append(token)
        return total

    # ---- endpoints ---------------------------------------------------------------------------------------
    def install(self, server: FakeOpenAI) -> None:
        server.handlers["/tokenize"] = self._tokenize
        server.handlers["/detokenize"] = self._detokenize
        server.handlers["/v1/completions"] = self._completions
        server.handlers["/v1/chat/completions"] = self._chat

    def _tokenize(self, request: Request) -> Ok | Status:
        body = request.json()
        if "messages" in body:
            if self.reject_system_role and any(m["role"] == "system" for m in body["messages"]):
                return Status(400, "System role not supported")
            tokens = self.encode(self.render(body["messages"]))
        else:
            tokens = self.encode(body["prompt"])
            if body.get("add_special_tokens", True):
                tokens.insert(0, 0)
        reply = _fixture("tokenize")
        reply.update(count=len(tokens), tokens=tokens)
        return Ok(reply)

    def _detokenize(self, request: Request) -> Ok:
        return Ok({"prompt": self.decode(request.json()["tokens"])})

    def _completions(self, request: Request) -> Ok:
        body = request.json()
        prompts = body["prompt"] if isinstance(body["prompt"][0], list) else [body["prompt"]]
        temperature = float(body.get("temperature", 1.0))
        reply = _fixture("completions_logprobs5")
        template = reply["choices"][0]
        choices = []
        for index, prompt in enumerate(prompts):
            choice = copy.deepcopy(template)
            choice["index"] = index
            if body.get("prompt_logprobs") is not None:
                entries: list[Any] = [None]
                for j in range(1, len(prompt)):
                    value = self.next_logprobs(prompt[:j], temperature)[prompt[j]]
                    entries.append({str(prompt[j]): {"logprob": value, "rank": 1, "decoded_token": "x"}})
                choice["prompt_logprobs"] = entries
                choice["logprobs"] = None
                if body.get("echo") and body.get("max_tokens") == 0:
                    choice["text"] = self.decode(prompt)  # the prompt alone, as vLLM echoes it
            else:
                choice["logprobs"] = self._top(prompt, int(body["logprobs"]), temperature, body)
            choices.append(choice)
        reply["choices"] = choices
        return Ok(reply)

    def _top(self, prompt: list[int], n: int, temperature: float, body: dict[str, Any]) -> dict[str, Any]:
        logprobs = self.next_logprobs(prompt, temperature)
        ranked = sorted(range(VOCAB_SIZE), key=lambda t: -logprobs[t])
        # Sampled below the top N (the reply then holds N+1 entries, as vLLM's can); greedy takes the argmax.
        sampled = ranked[0] if temperature == 0 else ranked[n + 3]
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        requested = body.get("logprob_token_ids")
        chosen = requested if requested and self.scores_requested_ids else ranked[:n]

        def key(t: int) -> str:
            return f"token_id:{t}" if as_ids else self.decode([t])

        top = {key(t): max(logprobs[t], -9999.0) for t in [sampled, *chosen]}
        return {
            "text_offset": [0],
            "token_logprobs": [logprobs[sampled]],
            "tokens": [key(sampled)],
            "top_logprobs": [top],
        }

    def _chat(self, request: Request) -> Ok:
        body = request.json()
        prompt = self.encode(self.render(body["messages"]))
        logprobs = self.next_logprobs(prompt, float(body.get("temperature", 1.0)))
        ranked = sorted(range(VOCAB_SIZE), key=lambda t: -logprobs[t])[: int(body["top_logprobs"])]
        reply = _fixture("chat_logprobs_top5")
        entries = [
            {"token": self.decode([t]), "logprob": logprobs[t], "bytes": list(self.decode([t]).encode())}
            for t in ranked
        ]
        reply["choices"][0]["logprobs"]["content"] = [{**entries[0], "top_logprobs": entries}]
        reply["choices"][0]["message"]["content"] = entries[0]["token"]
        return Ok(reply)
