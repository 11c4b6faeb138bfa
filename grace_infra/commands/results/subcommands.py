"""`grace results pull|check|tidy|report`: the campaign's files, from the output claim to a report.

Exit codes (every subcommand):
  0  done (`check`: the campaign is complete)
  1  `check` only: the campaign is incomplete (an output missing, short, or from a failed run)
  2  bad input: an unknown stack, a folder that does not exist, an unreadable file, no cluster access
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from grace_infra import constants as c
from grace_infra.commands.arguments import HelpFormatter, add_cluster_arguments, add_stack_argument
from grace_infra.commands.results.analysis import write_analysis_tables
from grace_infra.commands.results.campaign import load_campaign
from grace_infra.commands.results.check import check_outputs, discover_outputs, format_check
from grace_infra.commands.results.outputs import ResultsInputError, read_output
from grace_infra.commands.results.pull import pull
from grace_infra.commands.results.report import write_report
from grace_infra.commands.results.tidy import write_tidy
from grace_infra.errors import GraceError

__all__ = ["EXIT_INCOMPLETE", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_USAGE = 2
DEFAULT_RESULTS_DIR = Path("results")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse prints usage and exits 2 itself; keep its exit code, print one line.
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def _folder(value: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is not a folder")
    return path


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="grace results",
        description=__doc__.split("\n\n", 1)[0],
        epilog="exit codes: 0 done/complete, 1 campaign incomplete (check), 2 bad input",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    defaults = HelpFormatter

    pull = sub.add_parser(
        "pull",
        help="copy every output, checkpoint and meta file from the output claim",
        formatter_class=defaults,
    )
    add_stack_argument(pull)
    add_cluster_arguments(pull)
    pull.add_argument("--to", type=Path, default=DEFAULT_RESULTS_DIR, help="local folder (created)")

    check = sub.add_parser(
        "check", help="is every output present and complete? (offline)", formatter_class=defaults
    )
    check.add_argument("folder", type=_folder, help="a folder of outputs, e.g. what `pull` wrote")
    check.add_argument("--stack", help="expect every output this stack plans (default: the folder's own)")

    tidy = sub.add_parser(
        "tidy",
        help="write the researchers' tables (all models, and per item) and the long probability tables",
        formatter_class=defaults,
    )
    tidy.add_argument("folder", type=_folder)

    report = sub.add_parser("report", help="one self-contained HTML page of plots", formatter_class=defaults)
    report.add_argument("folder", type=_folder)
    report.add_argument("--out", type=Path, default=Path("report.html"), help="the HTML file to write")
    report.add_argument(
        "--min-coverage",
        type=float,
        default=c.RESULTS_MIN_COVERAGE,
        help="draw an Experiment 2 distribution only when its rows' median coverage reaches this",
    )
    return parser


def _check(args: argparse.Namespace) -> int:

    planned = None
    if args.stack:
        campaign = load_campaign(args.stack)
        planned = [(str(o.relative_path), o.model) for o in campaign.outputs]
    checks = check_outputs(args.folder, planned)
    if not checks:
        raise ResultsInputError(f"{args.folder}: holds no worker output (no CSV, checkpoint or meta file).")
    print(format_check(checks))
    return EXIT_OK if all(check.complete for check in checks) else EXIT_INCOMPLETE


def _tidy(args: argparse.Namespace) -> int:

    outputs = [read_output(path) for path in discover_outputs(args.folder)]
    if not any(output.frame is not None for output in outputs):
        raise ResultsInputError(
            f"{args.folder}: holds no finished worker output (no <name>.csv with its meta file) to reshape."
        )
    written = 0
    for output in outputs:
        if output.frame is not None and output.pipeline == "probs":
            print(f"wrote {write_tidy(output)}")
            written += 1
    print(f"{written} long-format table(s) written")
    tables = write_analysis_tables(args.folder, outputs)
    for path in tables:
        print(f"wrote {path}")
    print(f"{len(tables)} analysis table(s) written (all models, and one row per item)")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:

    figures = write_report(args.folder, args.out, min_coverage=args.min_coverage)
    print(f"wrote {args.out} ({figures} figures)")
    return EXIT_OK


def _pull(args: argparse.Namespace) -> int:

    return pull(stack=args.stack, context=args.context, kubeconfig=args.kubeconfig, destination=args.to)


COMMANDS = {"pull": _pull, "check": _check, "tidy": _tidy, "report": _report}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ResultsInputError, GraceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
