#!/usr/bin/env bash
# Create the checkov environment in <repo>/.venv-checkov (the security scan of the rendered manifests).
#
# It lives apart from the project's .venv on purpose: checkov pins packaging<24 and a long list of
# exact versions (boto3, networkx, jsonschema...) that must never constrain the project's own pins.
#
# Idempotent: when a previous run completed (its stamp, written only after `checkov --version`
# printed CHECKOV_VERSION) it prints one line and exits 0 without touching pip.
#
# Environment:
#   PYTHON                  interpreter for the venv (default: python3.11, else python3)
#   GRACE_CHECKOV_VENV      where to create it (default: <repo>/.venv-checkov)
set -euo pipefail

readonly CHECKOV_VERSION="3.3.30"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${GRACE_CHECKOV_VENV:-$repo_root/.venv-checkov}"
stamp="$venv/.grace-checkov-ready"

if [[ -z "${PYTHON:-}" ]]; then
    if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi

if [[ -f "$stamp" && -x "$venv/bin/checkov" && "$(cat "$stamp")" == "checkov==$CHECKOV_VERSION" ]]; then
    echo "setup-checkov: $venv already has checkov==$CHECKOV_VERSION (delete it to reinstall)"
    exit 0
fi

start=$SECONDS
echo "setup-checkov: creating $venv with $("$PYTHON" --version 2>&1)"
rm -f "$stamp"
if [[ ! -x "$venv/bin/python" ]]; then
    "$PYTHON" -m venv "$venv"
fi
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"; then
    echo "setup-checkov: pip could not install checkov==$CHECKOV_VERSION (see above)." >&2
    exit 1
fi
found="$("$venv/bin/checkov" --version 2>/dev/null || true)"
if [[ "$found" != "$CHECKOV_VERSION" ]]; then
    echo "setup-checkov: $venv/bin/checkov --version printed '$found', expected $CHECKOV_VERSION." >&2
    exit 1
fi
echo "checkov==$CHECKOV_VERSION" >"$stamp"
echo "setup-checkov: ready in $((SECONDS - start)) s: $venv ($(du -sh "$venv" | cut -f1))"
