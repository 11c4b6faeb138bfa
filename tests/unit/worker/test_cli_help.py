"""`python -m worker ... --help`: each subcommand shows its defaults, its files and its exit codes."""

from __future__ import annotations

import argparse
import importlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from worker import contract
from worker.cli import SUBCOMMANDS, build_parser, subcommand_parser
from worker.contract import RUN_COMMAND

PROJECT_ROOT = Path(__file__).resolve().parents[3]
# Every exit code the worker defines, and the signal exits a Job sees (SIGTERM from Kubernetes, Ctrl-C).
DOCUMENTED_EXIT_CODES = [
    *(
        code
        for name, code in vars(contract).items()
        if name.startswith("EXIT_") and name != "EXIT_SIGNAL_BASE"
    ),
    contract.EXIT_SIGNAL_BASE + signal.SIGTERM,
    contract.EXIT_SIGNAL_BASE + signal.SIGINT,
]
EVERY_HELP = [[], *[[name] for name in [*SUBCOMMANDS, RUN_COMMAND]]]


def _help(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args, "--help"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("args", EVERY_HELP, ids=lambda a: " ".join(a) or "worker")
def test_help_names_the_files_and_every_exit_code(args: list[str]) -> None:
    result = _help(*args)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert f"OUTPUT{contract.CHECKPOINT_SUFFIX}" in text
    assert f"OUTPUT{contract.META_SUFFIX}" in text
    exit_codes = text.split("exit codes:", 1)[1]
    for code in DOCUMENTED_EXIT_CODES:
        assert f"\n  {code} " in exit_codes, code


def _optional_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not a.required and a.help is not None]


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_every_flag_with_a_default_shows_it(command: str) -> None:
    parser = subcommand_parser(command, importlib.import_module(SUBCOMMANDS[command]))
    formatter = parser._get_formatter()
    missing = [
        action.option_strings[0]
        for action in _optional_actions(parser)
        if action.default not in (None, argparse.SUPPRESS)
        and "(default" not in (formatter._get_help_string(action) or "")
    ]
    assert missing == []


def test_run_has_a_description_naming_the_task_list_and_its_exit_code() -> None:
    text = _help(RUN_COMMAND).stdout
    description = text.split("options:", 1)[0]
    assert "JSON task list" in description
    assert "worst" in description


def test_the_top_level_help_lists_every_subcommand() -> None:
    text = build_parser().format_help()
    for name in [*SUBCOMMANDS, RUN_COMMAND]:
        assert name in text
