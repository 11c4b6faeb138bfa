"""`grace` (also `python -m grace_infra`): one command line for the stack's tools.

Each command lives in its own module with a `main(argv) -> int` that parses only the arguments after
the command's name; the module is imported only when its command runs, so `grace render` never imports
the Kubernetes client, and `grace status` and `grace results` never import Pulumi.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from worker.contract import EXIT_CLOSED_PIPE, exit_code_when_piped

__all__ = ["COMMANDS", "main"]

EXIT_USAGE = 2

# command -> (module, one-line summary). The order is the order of a researcher's campaign.
COMMANDS: dict[str, tuple[str, str]] = {
    "render": (
        "grace_infra.commands.render", "render the stack offline: every manifest, resources.json, plan.json"
    ),
    "preflight": (
        "grace_infra.commands.preflight", "check the live cluster against the stack before pulumi up"
    ),
    "status": (
        "grace_infra.commands.status", "one line per planned Job and model server on the live cluster"
    ),
    "results": (
        "grace_infra.commands.results.subcommands", "pull, check and report the campaign's output files"
    ),
    "studies": (
        "grace_infra.commands.studies", "check the study CSVs; diff a design against the researchers' own"
    ),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: grace <command> [options]   (grace <command> --help for each)", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += [
        "",
        f"exit codes: each command's own (see its --help); {EXIT_USAGE} for an unknown command; "
        f"{EXIT_CLOSED_PIPE} when stdout's reader closes the pipe early (e.g. `| head -1`).",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """The exit code of the command `argv` names; a reader closing the pipe early ends it quietly."""
    args = list(sys.argv[1:] if argv is None else argv)
    return exit_code_when_piped(lambda: _dispatch(args))


def _dispatch(args: list[str]) -> int:
    if not args or args[0] in {"-h", "--help"}:
        print(_usage())
        return 0 if args else EXIT_USAGE
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"error: unknown command '{command}'; the commands are {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_USAGE
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest))
