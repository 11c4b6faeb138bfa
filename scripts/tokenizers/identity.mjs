// Facts that identify the installed tokenizers, printed as one JSON object, for
// tests/integration/test_prompt_tokens.py to compare with what the models' publishers ship:
// SHA-256 of each bundled tokenizer.json; each vocabulary rebuilt into the publisher's own rank file
// (Meta's original/tokenizer.model, OpenAI's o200k_base.tiktoken: "<base64 token bytes> <rank>" lines) and
// hashed; the ids of special tokens; the ids of a few published example strings.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { HF_PACKAGES, installDir, loadTokenizers, modelFile, require } from "./studied.mjs";

// Not every package exports its package.json: read it from the install folder.
const version = (name) => JSON.parse(readFileSync(join(installDir, "node_modules", name, "package.json"), "utf8")).version;
const sha256 = (data) => createHash("sha256").update(data).digest("hex");
const rankFile = (tokens) => tokens.map((bytes, rank) => `${Buffer.from(bytes).toString("base64")} ${rank}\n`).join("");

// GPT-2's byte <-> printable character table, which byte-level BPE vocabularies (Llama-3's) are written in.
function byteLevelDecoder() {
  const bytes = [];
  for (let b = 33; b <= 126; b++) bytes.push(b);
  for (let b = 161; b <= 172; b++) bytes.push(b);
  for (let b = 174; b <= 255; b++) bytes.push(b);
  const chars = [...bytes];
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    if (!bytes.includes(b)) {
      bytes.push(b);
      chars.push(256 + extra++);
    }
  }
  return new Map(bytes.map((b, i) => [String.fromCodePoint(chars[i]), b]));
}

function llama3RankFile(tokenizerJson) {
  const decoder = byteLevelDecoder();
  const entries = Object.entries(tokenizerJson.model.vocab).sort((a, b) => a[1] - b[1]);
  entries.forEach(([, id], index) => {
    if (id !== index) throw new Error(`llama3 vocabulary: rank ${index} is missing`);
  });
  return rankFile(entries.map(([token]) => [...token].map((ch) => decoder.get(ch))));
}

function o200kRankFile() {
  // The very array the o200k encoders read their ranks from (one module instance per process).
  const ranks = require("gpt-tokenizer/bpeRanks/o200k_base");
  const list = ranks.default ?? ranks;
  return rankFile(list.map((token) => (typeof token === "string" ? Buffer.from(token, "utf8") : token)));
}

const tokenizers = loadTokenizers();
const examples = ["Hello world!", "This is a test sentence.", "This is a response.", "system", "user", "assistant", "\n\n", "hello world"];
const encodeAll = (encode) => Object.fromEntries(examples.map((text) => [text, encode(text)]));
const hfIds = (tokenizer, tokens) => Object.fromEntries(tokens.map((t) => [t, tokenizer.model.tokens_to_ids.get(t) ?? null]));
// A special token's text encodes to its one id; anything else (a list) means it is not special there.
const oneId = (ids) => (ids.length === 1 ? ids[0] : ids);
const SPECIAL = {
  gemma: ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"],
  llama3: ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
  o200k: ["<|endoftext|>", "<|return|>", "<|constrain|>", "<|channel|>", "<|start|>", "<|end|>", "<|message|>", "<|call|>"],
};

const facts = {};
for (const key of Object.keys(HF_PACKAGES)) {
  const raw = readFileSync(modelFile(key, "tokenizer.json"));
  const { tokenizer, encode } = tokenizers[key];
  facts[key] = {
    package: `${HF_PACKAGES[key]}@${version(HF_PACKAGES[key])}`,
    tokenizer_json_sha256: sha256(raw),
    tokenizer_json_bytes: raw.length,
    vocabulary_size: tokenizer.model.vocab.length,
    special_ids: hfIds(tokenizer, SPECIAL[key]),
    encode: encodeAll(encode),
  };
}
facts.llama3.rank_file_sha256 = sha256(llama3RankFile(JSON.parse(readFileSync(modelFile("llama3", "tokenizer.json"), "utf8"))));

const harmony = tokenizers.o200k.encoding;
facts.o200k = {
  package: `gpt-tokenizer@${version("gpt-tokenizer")}`,
  rank_file_sha256: sha256(o200kRankFile()),
  vocabulary_size: harmony.vocabularySize,
  special_ids: Object.fromEntries(SPECIAL.o200k.map((t) => [t, oneId(harmony.encode(t, { allowedSpecial: "all" }))])),
  encode: encodeAll(tokenizers.o200k.encode),
};
process.stdout.write(JSON.stringify(facts, null, 1) + "\n");
