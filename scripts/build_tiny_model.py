"""Build the tiny random Llama model that the real vLLM CPU server loads in tests and the demo.

Usage (with the server environment's python, which has torch, transformers and tokenizers)::

    .venv-vllm/bin/python scripts/build_tiny_model.py OUT_DIR [--seed 1234]

Takes about 5 s and writes a Hugging Face model folder (config.json, model.safetensors,
generation_config.json, tokenizer.json, tokenizer_config.json, special_tokens_map.json). The
files are built, never committed: the same seed gives the same tokenizer and the same weights.

Why each choice:
- Llama with hidden size 64, 2 layers, 2 heads of head_dim 32: vLLM's CPU attention needs a head
  size of at least 32; anything smaller than this loads slower without testing more.
- float32 random weights with a fixed seed, drawn wider than Llama's usual init so that the
  next-token distribution is far from uniform: exactness checks then compare numbers that differ.
- A byte-level BPE tokenizer trained here on generated text, so that the properties the
  probability pipeline depends on hold by construction and are asserted before anything is
  written: the digits 0-3 and yes/no, with and without a leading space, are single tokens,
  while "terrible", "wasn't" and "100%" take several tokens.
- A chat template with an explicit generation prompt (``<|assistant|>`` + newline), set on the
  tokenizer and also written inline into tokenizer_config.json, where vLLM and transformers
  both read it.
- ``--template strict`` (the Gemma-2-like variant): the same tokenizer and weights, but a chat
  template that refuses what Gemma-2's own template refuses: a conversation that starts with a
  system message ("System role not supported") and any order other than user, assistant, user,
  ... ("Conversation roles must alternate user/assistant/user/assistant/..."). vLLM turns the
  template's exception into an HTTP 400, so the worker meets the same refusal it would meet on
  google/gemma-2-*-it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

# These exist only in .venv-vllm; main() turns their absence into one clear line instead of a
# traceback (the usual mistake is running this with the project's .venv python).
try:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
except ImportError as _exc:
    _MISSING: str | None = _exc.name
else:
    _MISSING = None

DEFAULT_SEED = 1234
VOCAB_SIZE = 1024
HIDDEN_SIZE = 64
INTERMEDIATE_SIZE = 128
NUM_LAYERS = 2
NUM_HEADS = 2
HEAD_DIM = 32  # vLLM's CPU attention backend refuses head sizes below 32
MAX_POSITIONS = 2048
# Llama's default init (0.02) gives logits within ~0.1 of each other: every token would be
# ~1/vocab likely and a wrong token id would go unnoticed in exactness tests.
INIT_STD = 0.5
CORPUS_SENTENCES = 6000

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = [BOS, EOS, PAD, *ROLE_TOKENS]

# Each message is "<|role|>\n{content}</s>\n"; the generation prompt is "<|assistant|>\n", so
# the answer's first token directly follows a newline (what the probability pipeline reads).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# Gemma-2's template (google/gemma-2-2b-it tokenizer_config.json) raises these two exceptions, with
# these words; the rendering of accepted conversations stays the tiny model's own.
SYSTEM_ROLE_REFUSAL = "System role not supported"
ALTERNATION_REFUSAL = "Conversation roles must alternate user/assistant/user/assistant/..."
STRICT_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('" + SYSTEM_ROLE_REFUSAL + "') }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('" + ALTERNATION_REFUSAL + "') }}"
    "{% endif %}"
    "{% endfor %}" + CHAT_TEMPLATE
)
TEMPLATES = {"plain": CHAT_TEMPLATE, "strict": STRICT_CHAT_TEMPLATE}

# Texts that must encode to exactly one token, and texts that must take several.
SINGLE_TOKEN_TEXTS = ("0", "1", "2", "3", " 0", " 1", " 2", " 3", "yes", " yes", "no", " no")
MULTI_TOKEN_TEXTS = ("terrible", " terrible", "wasn't", " wasn't", "100%", " 100%")

# Everyday English plus the words of the two studies' scenarios, so that a study prompt of
# ~800 characters stays well under the server's 512-token context.
_WORD_TEXT = (
    "the a an of to in on at for with from by about as into than that this these those it its "
    "is was were be been being has have had do does did will would can could should must may "
    "i you he she we they me him her us them my your his our their who what which how many "
    "much when where why if then now today yesterday ago always almost never often just only "
    "not no yes very rather both more most some all each every other another same new old "
    "good bad okay amazing great fine nice poor well better best worse feel make give take "
    "think know knows exactly looked look seen saw read heard tasted watched listened used "
    "tells told said says asked ask answer question imagine wanted want approached finished "
    "giving presentation cake dance painting poem solo app review performance song film "
    "recital cookie cookies picture movie concert book piano writing feedback informative "
    "accurate possible students class exam exams grades passing letters tickets fruits phones "
    "seeds company lottery water day days two three one zero person people friend friends "
    "phone story speaker listener state hearts heart probability percent likely chance "
    "exactly how many out of were are there here after before first last next time year "
    "Mark Emma Wendy Laura Oliver Sarah John Kevin Anna Tom"
)
_WORDS = _WORD_TEXT.split()
_ASSESSMENTS = ("terrible", "bad", "okay", "good", "amazing")


def _corpus(seed: int) -> list[str]:
    """Generated training text in which the answer tokens are frequent and the multi-token
    words are rare, so BPE merges the former and leaves the latter split."""
    rng = random.Random(seed)
    lines: list[str] = []
    for _ in range(CORPUS_SENTENCES):
        words = rng.choices(_WORDS, k=rng.randint(6, 16))
        lines.append(" ".join(words).capitalize() + rng.choice((".", "?", "!")))
        d = rng.choice("0123")
        lines.append(rng.choice((f"{d}", f"The answer is {d}.", f"{d} of the 3 were good.")))
        lines.append(rng.choice(("yes", "no", "Answer: yes", "Answer: no", "yes.", "no.")))
        if rng.random() < 0.2:
            lines.append(f"It {rng.choice(('was', 'was not'))} {rng.choice(_ASSESSMENTS[1:])}.")
        if rng.random() < 0.1:
            lines.append(f"{rng.choice('0123456789')}{rng.choice('0123456789')}%")
    return lines


def build_tokenizer(seed: int, chat_template: str = CHAT_TEMPLATE) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=MAX_POSITIONS,
    )
    fast.chat_template = chat_template
    _check_tokenizer(fast)
    return fast


def _check_tokenizer(tokenizer: PreTrainedTokenizerFast) -> None:
    """Refuse to write a model whose tokenizer breaks a property the tests rely on."""
    problems = []
    for text in SINGLE_TOKEN_TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            problems.append(f"{text!r} should be one token, got {ids}")
    for text in MULTI_TOKEN_TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) < 2:
            problems.append(f"{text!r} should take several tokens, got {ids}")
    if problems:
        raise SystemExit("build_tiny_model: tokenizer check failed: " + "; ".join(problems))


def build_model(vocab_size: int, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_HEADS,
        head_dim=HEAD_DIM,
        max_position_embeddings=MAX_POSITIONS,
        initializer_range=INIT_STD,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).to(torch.float32).eval()


def build(out_dir: Path, seed: int = DEFAULT_SEED, template: str = "plain") -> dict[str, object]:
    """Write the tokenizer and model into out_dir; return a short summary."""
    chat_template = TEMPLATES[template]
    tokenizer = build_tokenizer(seed, chat_template)
    model = build_model(len(tokenizer), tokenizer, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    # transformers may save the template as a separate chat_template.jinja; keep it in
    # tokenizer_config.json too, with the class name vLLM's tokenizer loader resolves without a
    # model-type map.
    config_path = out_dir / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text())
    tok_config["chat_template"] = chat_template
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(tok_config, indent=2) + "\n")
    return {
        "dir": str(out_dir),
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "seed": seed,
        "template": template,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the tiny random Llama model for the vLLM CPU tests.")
    parser.add_argument("out_dir", type=Path, help="folder to write the model into (created if missing)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed for the corpus and weights")
    parser.add_argument(
        "--template",
        choices=sorted(TEMPLATES),
        default="plain",
        help="plain (accepts any conversation) or strict (refuses a system role and demands alternation, "
        "like Gemma-2's template)",
    )
    args = parser.parse_args(argv)
    if _MISSING is not None:
        print(
            f"build_tiny_model: the module {_MISSING!r} is missing; run this with .venv-vllm/bin/python "
            "(scripts/setup-vllm-cpu.sh creates it).",
            file=sys.stderr,
        )
        return 2
    start = time.monotonic()
    summary = build(args.out_dir, args.seed, args.template)
    print(f"build_tiny_model: wrote {summary} in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
