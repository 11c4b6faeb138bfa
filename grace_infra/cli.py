"""`grace` (also `python -m grace_infra`): one command line for the stack's tools.

Each command lives in its own module with a `main(argv) -> int` that parses only the arguments after
the command's name; the module is imported only when its command runs, so `grace render` never imports
the Kubernetes client (`status` and `results` import the planning code, and with it Pulumi's types).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from grace_infra import constants as c

__all__ = [
    "COMMANDS",
    "HelpFormatter",
    "add_cluster_arguments",
    "add_config_file_argument",
    "add_stack_argument",
    "main",
]

EXIT_USAGE = 2

# command -> (module, one-line summary). The order is the order of a researcher's campaign.
COMMANDS: dict[str, tuple[str, str]] = {
    "render": ("grace_infra.render", "render the stack offline: every manifest, resources.json, plan.json"),
    "preflight": ("grace_infra.preflight", "check the live cluster against the stack before pulumi up"),
    "status": ("grace_infra.status", "one line per planned Job and model server on the live cluster"),
    "results": ("grace_infra.results.cli", "pull, check and report the campaign's output files"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its --help line, except options whose default is "not given"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def add_stack_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", default=c.DEFAULT_STACK, help="reads Pulumi.<stack>.yaml")


def add_config_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-file", action="append", type=Path, default=[], metavar="EXTRA.yaml",
        help="extra grace:* settings replacing the stack's top-level keys; may be repeated",
    )


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Which cluster a live command reads: the kubeconfig file as kubectl picks it, and the context
    `pulumi up` deploys to (the stack's kubernetes:context) unless --context names another."""
    parser.add_argument(
        "--context", help="kubeconfig context (default: the stack's kubernetes:context, else the current one)"
    )
    parser.add_argument(
        "--kubeconfig", type=Path, help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)"
    )


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: grace <command> [options]   (grace <command> --help for each)", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", f"exit codes: each command's own (see its --help); {EXIT_USAGE} for an unknown command."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(_usage())
        return 0 if args else EXIT_USAGE
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"error: unknown command '{command}'; the commands are {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_USAGE
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest))
