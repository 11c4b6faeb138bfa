"""`python -m worker ... --help`: each subcommand shows its defaults, its files and its exit codes."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from worker import contract
from worker.cli import SUBCOMMANDS, build_parser, main, subcommand_parser
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
    parser = subcommand_parser(command)
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


def test_the_help_names_every_subcommand_without_importing_any_pipeline() -> None:
    program = (
        "import sys\n"
        "from worker.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('worker.pipelines.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name, subcommand in SUBCOMMANDS.items():
        assert name in done.stdout
        assert subcommand.help.split(":")[0] in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_pipeline_missing_from_the_build_fails_only_its_own_subcommand(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = replace(SUBCOMMANDS["probs"], module="worker.pipelines.not_built")
    monkeypatch.setitem(SUBCOMMANDS, "probs", missing)
    assert "probs" in build_parser().format_help()
    argv = ["--output", str(tmp_path / "o.csv"), "--input", str(tmp_path / "i.csv"), "--study", "chat/study1"]
    endpoint = ["--model-endpoint", "http://x/v1", "--model-name", "m"]
    assert main(["probs", *argv, *endpoint]) == contract.EXIT_INPUT
    assert "subcommand 'probs' is not implemented in this worker build" in capsys.readouterr().err
    assert subcommand_parser("query").parse_args([*argv, *endpoint]).study == "chat/study1"


def test_only_the_subcommands_that_resolve_their_flags_may_leave_the_endpoint_out() -> None:
    optional = {name for name, subcommand in SUBCOMMANDS.items() if not subcommand.endpoint_required}
    assert optional == {"extract"}
    assert all(SUBCOMMANDS[name].resolves_arguments for name in optional)
