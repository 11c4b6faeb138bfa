"""`grace` / `python -m grace_infra`: the dispatcher lists every command and refuses an unknown one."""

from __future__ import annotations

import pytest

from grace_infra.commands.cli import COMMANDS, EXIT_USAGE, main


def test_help_lists_every_command_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (_, summary) in COMMANDS.items():
        assert f"  {name}" in out
        assert summary in out
    assert "exit codes:" in out


def test_no_command_prints_the_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USAGE
    assert capsys.readouterr().out.startswith("usage: grace <command>")


def test_an_unknown_command_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy"]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"error: unknown command 'deploy'; the commands are {', '.join(COMMANDS)}"
    ]
    assert captured.out == ""
