"""`python -m worker query|probs|extract|run`: argument parsing, logging, and the exit code.

A pipeline joins the CLI with one entry in SUBCOMMANDS (a `Subcommand`): its help line, whether the
endpoint flags are required, and the module that provides
    add_arguments(parser) -> None                its own flags (the common ones are already added)
    build(args) -> worker.run.pipeline.Pipeline  may raise InputError (e.g. unknown study)
    resolve_arguments(args) -> None              only when the entry says `resolves_arguments`: fill
                                                 common flags from the pipeline's own before they are
                                                 validated (extract's --deepseek-endpoint)
Modules are imported only when their subcommand runs, so one pipeline's import error cannot break another.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from pydantic import ValidationError

from worker import __version__, contract
from worker import constants as c
from worker.errors import InputError, validation_problem
from worker.run.pipeline import Pipeline
from worker.run.run_options import RunOptions
from worker.run.runner import report_fatal, run_pipeline
from worker.server.client_options import ClientOptions, api_key_from_env

__all__ = [
    "SUBCOMMANDS",
    "Subcommand",
    "add_common_arguments",
    "build_parser",
    "main",
    "parse_subcommand",
    "read_tasks",
    "run_options",
    "subcommand_parser",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subcommand:
    """One pipeline subcommand: what the command line knows of it without importing it, and its hooks,
    which import its module when first used (so one pipeline's import error cannot break another)."""

    name: str  # what follows `python -m worker`
    help: str  # one line for `python -m worker -h`, and the subcommand's description
    module: str  # provides add_arguments(parser), build(args) and, if resolves_arguments, resolve_arguments
    endpoint_required: bool = True  # False when resolve_arguments supplies --model-endpoint/--model-name
    resolves_arguments: bool = False

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The pipeline's own flags."""
        self._loaded().add_arguments(parser)

    def resolve_arguments(self, args: argparse.Namespace) -> None:
        """Fill common flags from the pipeline's own before they are validated (nothing by default)."""
        if self.resolves_arguments:
            self._loaded().resolve_arguments(args)

    def build(self, args: argparse.Namespace) -> Pipeline:
        """The pipeline for parsed flags; InputError (one sentence) for unusable ones."""
        pipeline = self._loaded().build(args)
        if not isinstance(pipeline, Pipeline):
            raise TypeError(f"{self.module}.build() returned {type(pipeline).__name__}, not a Pipeline")
        return pipeline

    def _loaded(self) -> ModuleType:
        try:
            return importlib.import_module(self.module)
        except ModuleNotFoundError as err:
            if err.name != self.module:
                raise  # the module exists but one of its imports is missing: a bug, show the traceback
            raise InputError(f"subcommand {self.name!r} is not implemented in this worker build.") from err


# Add a pipeline here, nowhere else.
SUBCOMMANDS: dict[str, Subcommand] = {
    subcommand.name: subcommand
    for subcommand in (
        Subcommand(
            name="query",
            help="Experiment 1: ask each row's question and record the model's raw answer.",
            module="worker.pipelines.query",
        ),
        Subcommand(
            name="probs",
            help="Experiment 2: the probability of every allowed answer, from the model's log-probabilities.",
            module="worker.pipelines.probs.probs_pipeline",
        ),
        Subcommand(
            name="extract",
            help="Extraction: turn Experiment 1 free text into schema-valid columns, or an explicit error.",
            module="worker.pipelines.extraction.extraction_pipeline",
            # --deepseek-endpoint can stand in for --model-endpoint/--model-name, so the parser must not
            # require them; extract's resolve_arguments names whatever is still missing.
            endpoint_required=False,
            resolves_arguments=True,
        ),
    )
}
CHECK_OUTPUTS_MODULE = "worker.commands.check_outputs"  # imports this module, so it is loaded when used
WAIT_FOR_INPUTS_MODULE = "worker.commands.wait_for_inputs"  # likewise
# SIGINT outside a run (while parsing); runs handle it themselves.
EXIT_INTERRUPTED = contract.EXIT_SIGNAL_BASE + 2
CLEAR_LINE = "\r\x1b[K"  # carriage return + ANSI "erase to end of line"

# For `run --tasks`: the worst result wins; exit 2 (nothing done, retrying cannot help) is the worst.
_SEVERITY = {
    contract.EXIT_OK: 0,
    contract.EXIT_ROWS_FAILED: 1,
    contract.EXIT_SERVER_UNAVAILABLE: 2,
    contract.EXIT_STORAGE: 3,
    contract.EXIT_INPUT: 4,
}


class UsageError(Exception):
    """A command line argparse rejected; printed as one line, exit 2."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every optional flag's help ends with its default (pipelines add flags without repeating it); a flag
    whose help already says "(default ...", or whose default is unset (None), is left as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if action.required or not action.option_strings or "(default" in help_text:
            return action.help
        if action.default is None or action.default is argparse.SUPPRESS:
            return action.help
        shown = "empty" if action.default == "" else "%(default)s"
        return f"{help_text} (default: {shown})"


# The epilog of every subcommand's help: where its files go and what its exit code means.
FILES_AND_EXIT_CODES = f"""\
files (beside --output; a rerun of the same command resumes from them):
  OUTPUT                       the result; written to OUTPUT.<pid>{c.TEMP_SUFFIX} and renamed only when
                               every row is done, so it exists only complete
  OUTPUT{contract.CHECKPOINT_SUFFIX:<22} checkpoint: one line per finished row (success or failure)
  OUTPUT{contract.META_SUFFIX:<22} provenance: command line, versions, input digest, parameters,
                               server, counts, duration and the exit code
  OUTPUT{c.LOCK_SUFFIX:<22} held while a worker writes OUTPUT: a second worker refuses it
  OUTPUT{contract.CHECKPOINT_SUFFIX}{c.REJECTED_SUFFIX}
                               damaged checkpoint lines, moved aside; their rows are redone
  ${contract.LOG_FILE_ENV:<27} when set, the log is also appended to this file
environment:
  ${contract.LOG_LEVEL_ENV:<27} DEBUG, INFO (default), WARNING or ERROR
exit codes:
  {contract.EXIT_OK:<28} every row succeeded
  {contract.EXIT_ROWS_FAILED:<28} output complete; some rows carry an error in their error column
  {contract.EXIT_INPUT:<28} bad input or arguments, an unknown model, or OUTPUT locked by another
                               worker: one line on stderr, nothing written; a rerun cannot help
  {contract.EXIT_STORAGE:<28} the output's filesystem is full or read-only; rerun when there is room
  {contract.EXIT_SERVER_UNAVAILABLE:<28} no healthy server within --wait-timeout (at start or in an outage);
                               a rerun resumes
  {contract.EXIT_SERVER_START_FAILED:<28} job mode: the vLLM sidecar spent its start budget (the file in
                               ${contract.SERVER_START_FAILED_ENV} says why); nothing was run
  {contract.EXIT_SIGNAL_BASE + signal.SIGTERM:<28} stopped by SIGTERM (e.g. Kubernetes); a rerun resumes
  {contract.EXIT_SIGNAL_BASE + signal.SIGINT:<28} interrupted (Ctrl-C); a rerun resumes
  1                            a bug (traceback); the checkpoint keeps every finished row
"""

_WORST_FIRST = sorted(_SEVERITY, key=_SEVERITY.__getitem__, reverse=True)
RUN_DESCRIPTION = f"""\
Run several subcommands in order from one JSON task list: what a job-mode Job runs (every
experiment of one model against its vLLM sidecar). Each task is the argv of one subcommand, e.g.
  [["query", "--input", "/input/study1.csv", "--output", "/output/exp1/m/study1_responses.csv", ...],
   ["probs", ...]]
Every task runs even when an earlier one fails; each keeps its own output, checkpoint and meta file.
The exit code is the worst of the tasks' (worst first: {", ".join(map(str, _WORST_FIRST))}); a task
stopped by a signal stops the run with its code."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so the CLI can print one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def add_common_arguments(parser: argparse.ArgumentParser, *, endpoint_required: bool = True) -> None:
    """The flags every pipeline shares (the Job passes all of them)."""
    group = parser.add_argument_group("common options")
    group.add_argument(
        "--input", type=Path, required=True, help="Input CSV (a study file, or a query output)."
    )
    group.add_argument(
        "--output",
        type=Path,
        required=True,
        help="Output CSV; exists only once complete. Its checkpoint and meta file go beside it (below).",
    )
    group.add_argument(
        "--model-endpoint", required=endpoint_required, help="OpenAI base URL, e.g. http://vllm-x:8000/v1."
    )
    group.add_argument("--model-name", required=endpoint_required, help="Served model name.")
    group.add_argument("--study", required=True, help=(
            f"Study name, looked up as NAME.yaml in ${contract.STUDIES_DIR_ENV}, "
            f"{contract.CONTAINER_STUDIES_DIR}, then jobs/studies/; or a YAML path."
        ),
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=c.DEFAULT_BATCH_SIZE,
        help="Requests in flight.",
    )
    group.add_argument(
        "--timeout", type=float, default=c.DEFAULT_TIMEOUT_S, help="Deadline per attempt, in seconds."
    )
    group.add_argument(
        "--max-retries",
        type=int,
        default=c.DEFAULT_MAX_RETRIES,
        help="Retries per request after the first attempt.",
    )
    group.add_argument(
        "--backoff-base",
        type=float,
        default=c.BACKOFF_BASE_S,
        help="First retry delay in seconds; doubles per retry, jittered.",
    )
    group.add_argument(
        "--api-key-env", help=f"Environment variable holding the API key (default ${c.DEFAULT_API_KEY_ENV})."
    )
    group.add_argument(
        "--limit", type=int, help="Process only the first N rows, for smoke runs (default: every row)."
    )
    group.add_argument(
        "--wait-timeout",
        type=float,
        default=c.DEFAULT_WAIT_TIMEOUT_S,
        help="Seconds to wait for /health, at the start and in an outage, before giving up (exit 5).",
    )
    group.add_argument(
        "--retry-failed",
        action="store_true",
        help="Send rows again that failed for their own reason (a 400, an unparseable answer); rows that "
        "failed because the server was unreachable are always sent again.",
    )
    group.add_argument(
        "--wait-for-lock",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="Wait this long for another worker writing the same --output instead of exiting 2 (0).",
    )
    group.add_argument(
        "--temperature",
        type=float,
        help="Sampling temperature (default: the study's sampling.temperature; probs: 1.0, see its help).",
    )
    group.add_argument(
        "--samples",
        type=int,
        help="Answers per input row, one output row each (default: the study's sampling.samples_per_row).",
    )
    group.add_argument(
        "--seed",
        type=int,
        help="Base seed; each sample's request seed derives from it, the row and the sample index "
        "(default: the study's sampling.base_seed).",
    )
    group.add_argument(
        "--metrics-port",
        type=int,
        default=contract.METRICS_PORT,
        help="Prometheus metrics port; 0 disables.",
    )
    group.add_argument(
        "--plan-digest",
        help="Digest of the planned run (the deployment computes it); recorded in the meta file.",
    )
    group.add_argument(
        "--supersede",
        action="store_true",
        help="If the output, checkpoint or meta were made with other input or parameters, move them into "
        "<output dir>/superseded/<UTC time>/ and run (never deletes); default: refuse, exit 2.",
    )


def run_options(args: argparse.Namespace, argv: Sequence[str]) -> RunOptions:
    """The validated RunOptions of parsed common flags; InputError naming the flag otherwise."""
    try:
        client = ClientOptions(
            endpoint=args.model_endpoint,
            model_name=args.model_name,
            batch_size=args.batch_size,
            timeout_s=args.timeout,
            max_retries=args.max_retries,
            backoff_base_s=args.backoff_base,
            api_key=api_key_from_env(args.api_key_env),
        )
        return RunOptions(
            input=args.input,
            output=args.output,
            client=client,
            limit=args.limit,
            wait_timeout_s=args.wait_timeout,
            metrics_port=args.metrics_port,
            retry_failed=args.retry_failed,
            wait_for_lock_s=args.wait_for_lock,
            command_line=("python -m worker", *argv),
            plan_digest=args.plan_digest,
            supersede=args.supersede,
        )
    except ValidationError as err:
        raise InputError(_validation_sentence(err)) from err
    except ValueError as err:
        raise InputError(str(err)) from err


# pydantic field -> the flag a user typed
_FLAGS = {
    "batch_size": "--batch-size",
    "timeout_s": "--timeout",
    "max_retries": "--max-retries",
    "backoff_base_s": "--backoff-base",
    "model_name": "--model-name",
    "endpoint": "--model-endpoint",
    "limit": "--limit",
    "wait_timeout_s": "--wait-timeout",
    "metrics_port": "--metrics-port",
    "wait_for_lock_s": "--wait-for-lock",
}


def _validation_sentence(err: ValidationError) -> str:
    problem = validation_problem(err)
    flag = _FLAGS.get(problem.field, problem.field)
    return problem.for_flag(flag) if flag else problem.sentence


def build_parser() -> _Parser:
    parser = _Parser(
        prog="python -m worker",
        description=(
            "Run a Grace study against an OpenAI-compatible model server (vLLM).\n"
            "`python -m worker <subcommand> --help` shows each subcommand's flags."
        ),
        epilog=FILES_AND_EXIT_CODES,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"grace-worker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, subcommand in SUBCOMMANDS.items():
        sub.add_parser(name, help=subcommand.help, add_help=False)
    run = sub.add_parser(
        contract.RUN_COMMAND,
        help="Run several subcommands in order from a JSON task list (what a job-mode Job runs).",
        description=RUN_DESCRIPTION,
        epilog=FILES_AND_EXIT_CODES,
        formatter_class=_HelpFormatter,
    )
    run.add_argument(
        "--tasks", type=Path, required=True, help='JSON list of argv lists: [["query", ...], ...]'
    )
    sub.add_parser(
        contract.CHECK_OUTPUTS_COMMAND, add_help=False,
        help="Whether every task of a --tasks list is already complete (writes --marker if so).",
    )  # fmt: skip
    sub.add_parser(
        contract.WAIT_FOR_INPUTS_COMMAND, add_help=False,
        help="Wait until every task's --input is complete for its --wait-for-digest (the extraction gate).",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 (one return per command)
    """Entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _configure_logging()
    except InputError as err:
        report_fatal("", err)
        return contract.EXIT_INPUT
    try:
        failed_start = _server_start_failure()
        if failed_start is not None and argv and argv[0] in {contract.RUN_COMMAND, *SUBCOMMANDS}:
            report_fatal(argv[0], InputError(failed_start))
            return contract.EXIT_SERVER_START_FAILED
        if argv and argv[0] == contract.RUN_COMMAND:
            return _run_tasks(argv)
        if argv and argv[0] == contract.CHECK_OUTPUTS_COMMAND:  # commands/check_outputs.py (job-mode init)
            return importlib.import_module(CHECK_OUTPUTS_MODULE).main(argv[1:])
        if argv and argv[0] == contract.WAIT_FOR_INPUTS_COMMAND:  # commands/wait_for_inputs.py (the gate)
            return importlib.import_module(WAIT_FOR_INPUTS_MODULE).main(argv[1:])
        return _run_one(argv)
    except KeyboardInterrupt:
        # Every finished row is already in the checkpoint; the same command resumes.
        report_fatal(argv[0] if argv else "", InputError("interrupted; rerun the same command to resume."))
        return EXIT_INTERRUPTED


def _server_start_failure() -> str | None:
    """Job mode: the sidecar wrapper's one line when it gave up starting vLLM (contract
    SERVER_START_FAILED_ENV names the file); None when the variable is unset or the file absent."""
    path = os.environ.get(contract.SERVER_START_FAILED_ENV)
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip() or "the vLLM sidecar failed to start"
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"the vLLM sidecar's failure marker {path} exists but cannot be read ({err.strerror})"


def parse_subcommand(argv: Sequence[str]) -> tuple[Subcommand, argparse.Namespace]:
    """Parse `<subcommand> <flags>` exactly as `python -m worker` does (the Job tests use it too); the
    subcommand and its parsed flags.

    Raises UsageError or InputError with one sentence on a bad command line.
    """
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else ""
    if not command:
        _top_level(list(argv))
    subcommand = SUBCOMMANDS[command]
    args = subcommand_parser(command).parse_args(argv[1:])
    subcommand.resolve_arguments(args)
    return subcommand, args


def subcommand_parser(command: str) -> argparse.ArgumentParser:
    """The parser of one pipeline subcommand: the common flags, then the pipeline's own."""
    subcommand = SUBCOMMANDS[command]
    parser = _Parser(
        prog=f"python -m worker {command}",
        description=subcommand.help,
        epilog=FILES_AND_EXIT_CODES,
        formatter_class=_HelpFormatter,
    )
    add_common_arguments(parser, endpoint_required=subcommand.endpoint_required)
    subcommand.add_arguments(parser)
    return parser


def _run_one(argv: list[str]) -> int:
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else ""
    try:
        subcommand, args = parse_subcommand(argv)
        options = run_options(args, argv)
        pipeline = subcommand.build(args)
    except (UsageError, InputError) as err:
        report_fatal(command, err)
        return contract.EXIT_INPUT
    return run_pipeline(pipeline, options)


def _top_level(argv: list[str]) -> NoReturn:
    """No known subcommand: argparse prints help or --version and exits, or names the problem."""
    build_parser().parse_args(argv)
    raise UsageError("choose a subcommand: " + ", ".join([*SUBCOMMANDS, contract.RUN_COMMAND]))


def _run_tasks(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
        tasks = read_tasks(args.tasks)
    except (UsageError, InputError) as err:
        report_fatal(contract.RUN_COMMAND, err)
        return contract.EXIT_INPUT
    worst = contract.EXIT_OK
    for number, task in enumerate(tasks, start=1):
        log.info("task %d/%d: %s", number, len(tasks), " ".join(task))
        code = _run_one(task)
        log.info("task %d/%d finished with exit code %d", number, len(tasks), code)
        if code > contract.EXIT_SIGNAL_BASE:
            return code  # stopped by a signal: the pod is going away, start nothing new
        worst = max(worst, code, key=lambda value: _SEVERITY.get(value, len(_SEVERITY)))
    return worst


def read_tasks(path: Path) -> list[list[str]]:
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"--tasks {path}: cannot be read ({err.strerror}).") from err
    except (UnicodeDecodeError, ValueError) as err:
        raise InputError(f"--tasks {path}: not JSON ({err}).") from err
    valid = isinstance(tasks, list) and all(
        isinstance(task, list) and task and all(isinstance(arg, str) for arg in task) for task in tasks
    )
    if not valid or not tasks:
        raise InputError(
            f'--tasks {path}: expected a non-empty JSON list of argv lists, e.g. [["query", ...]].'
        )
    for task in tasks:
        if task[0] not in SUBCOMMANDS:
            raise InputError(
                f"--tasks {path}: unknown subcommand {task[0]!r} (known: {', '.join(SUBCOMMANDS)})."
            )
    return tasks


def _configure_logging() -> None:
    level_name = os.environ.get(contract.LOG_LEVEL_ENV, "INFO").upper()
    level = logging.getLevelNamesMapping().get(level_name)
    if level is None:
        raise InputError(
            f"{contract.LOG_LEVEL_ENV}={level_name!r} is not a log level (DEBUG, INFO, WARNING, ERROR)."
        )
    log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if sys.stderr.isatty():
        # On a terminal the progress bar owns the last line: clear it first so a log line starts clean.
        log_format = CLEAR_LINE + log_format
    logging.basicConfig(level=level, format=log_format, stream=sys.stderr, force=True)
    log_file = os.environ.get(contract.LOG_FILE_ENV)
    if log_file:
        # The Job's log outlives the pod on the logs claim; kubectl logs keeps only the last container run.
        try:
            handler = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        except OSError as err:
            raise InputError(
                f"{contract.LOG_FILE_ENV}={log_file!r} cannot be opened for appending ({err.strerror})."
            ) from err
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
