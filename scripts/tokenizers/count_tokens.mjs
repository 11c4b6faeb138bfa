// Count tokens with the studied models' real tokenizers.
//
// stdin:  JSON lines {"text": "..."}
// stdout: one JSON line per input, {"gemma": n, "llama3": n, "o200k": n}: the tokens of the plain text,
//         no special token added. With --ids, the token id lists instead of their lengths.
// A line that is not {"text": <string>} stops the run with exit code 2 and one sentence naming the line.

import { createInterface } from "node:readline";
import { loadTokenizers } from "./studied.mjs";

const withIds = process.argv.includes("--ids");
const tokenizers = loadTokenizers();
const names = Object.keys(tokenizers);
const out = [];
let number = 0;
for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  number += 1;
  if (line.trim() === "") continue;
  let text;
  try {
    text = JSON.parse(line).text;
  } catch {
    text = undefined;
  }
  if (typeof text !== "string") {
    process.stderr.write(`count_tokens: stdin line ${number} is not a JSON object with a "text" string.\n`);
    process.exit(2);
  }
  const counts = {};
  for (const name of names) {
    const ids = tokenizers[name].encode(text);
    counts[name] = withIds ? ids : ids.length;
  }
  out.push(JSON.stringify(counts));
}
process.stdout.write(out.length ? out.join("\n") + "\n" : "");
