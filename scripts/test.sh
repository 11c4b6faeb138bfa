#!/usr/bin/env bash
# THE test command (README, CI): lint, type check, then every test: unit tests and the integration
# tests against the real vLLM CPU server (tests/integration, marker `vllm`).
#
# Exit code: 0 only when ruff is clean AND mypy is clean AND pytest passed. pytest's "no tests
# collected" (5) is a failure here, not a quiet success. Extra arguments go to pytest, e.g.
#   bash scripts/test.sh -m "not vllm"      # unit tests only
#   bash scripts/test.sh -k probs -x
# Locally, a missing .venv-vllm skips the `vllm` tests with the reason; with CI set they fail.
set -uo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

python=.venv/bin/python
if [[ ! -x "$python" ]]; then
    echo "test.sh: $repo_root/.venv is missing: run 'bash scripts/setup.sh' first." >&2
    exit 2
fi

start=$SECONDS
echo "== ruff check ."
"$python" -m ruff check .
ruff_rc=$?

echo "== mypy (pyproject.toml [tool.mypy]: grace_infra, worker)"
"$python" -m mypy
mypy_rc=$?

echo "== pytest tests/"
# -m pytest (not the pytest script) puts the repo root on sys.path, so grace_infra and worker
# import from the working tree.
"$python" -m pytest tests/ --durations=10 "$@"
pytest_rc=$?

echo "== summary ($((SECONDS - start)) s): ruff exit $ruff_rc, mypy exit $mypy_rc, pytest exit $pytest_rc"
if [[ $pytest_rc -eq 5 ]]; then
    echo "test.sh: pytest collected no tests: that is a failure, not a pass." >&2
fi
if [[ $ruff_rc -ne 0 || $mypy_rc -ne 0 || $pytest_rc -ne 0 ]]; then
    exit 1
fi
exit 0
