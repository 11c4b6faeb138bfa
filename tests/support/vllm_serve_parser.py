"""Parse `vllm serve` argument lists with vLLM's OWN command-line parser (run under .venv-vllm's python).

Builds the parser exactly as `vllm serve` does (vllm.entrypoints.cli.main: a FlexibleArgumentParser with
the serve subcommand's `make_arg_parser`), parses each list, runs the subcommand's own validation and
turns the namespace into engine arguments. Nothing is loaded and no server starts, so it checks every
rendered server's flags in one import of vLLM.

stdin: a JSON object {label: [arg, ...]}; stdout: a JSON object {label: null | "error message"}.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys


def main() -> int:
    from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: PLC0415 (vLLM imports are slow; only here)
    from vllm.entrypoints.cli.serve import ServeSubcommand  # noqa: PLC0415
    from vllm.utils.argparse_utils import FlexibleArgumentParser  # noqa: PLC0415

    arg_lists: dict[str, list[str]] = json.load(sys.stdin)
    results: dict[str, str | None] = {}
    for label, args in arg_lists.items():
        parser = FlexibleArgumentParser(prog="vllm")
        subparsers = parser.add_subparsers(dest="subparser")
        serve = ServeSubcommand()
        serve.subparser_init(subparsers)
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                namespace = parser.parse_args(["serve", *args])
            if namespace.model_tag is not None:
                namespace.model = namespace.model_tag
            serve.validate(namespace)
            AsyncEngineArgs.from_cli_args(namespace)
        except SystemExit as exc:  # argparse reports unknown flags and bad values by exiting
            message = errors.getvalue().strip().splitlines()
            results[label] = message[-1] if message else f"argparse exited {exc.code}"
        except (argparse.ArgumentError, ValueError, TypeError) as exc:
            results[label] = f"{type(exc).__name__}: {exc}"
        else:
            results[label] = None
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
