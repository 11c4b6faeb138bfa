"""The package as scripts/setup.sh installs it: console scripts `grace` and `grace-worker`, and
`python -m grace_infra` / `python -m worker` from any directory.

The subprocess checks need the project installed into the running venv (`pip install -e .`, done by
setup.sh); locally without it they are skipped with the reason, under CI they fail.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SCRIPTS = {"grace": "grace_infra.commands.cli:main", "grace-worker": "worker.cli:main"}


def _bin(name: str) -> Path:
    return Path(sys.executable).with_name(name)


installed = pytest.mark.skipif(
    not _bin("grace").exists() and not os.environ.get("CI"),
    reason="the project is not installed editable from this checkout (bash scripts/setup.sh does it)",
)


def test_the_build_backend_and_console_scripts_are_declared() -> None:
    assert PYPROJECT["build-system"]["build-backend"] == "setuptools.build_meta"
    assert PYPROJECT["project"]["scripts"] == SCRIPTS


@pytest.mark.parametrize("target", sorted(SCRIPTS.values()))
def test_each_console_script_names_a_main_that_takes_argv_and_exits_0_on_help(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module_name, _, function = target.partition(":")
    main = getattr(importlib.import_module(module_name), function)
    try:
        code = main(["--help"])
    except SystemExit as exited:  # argparse's own --help
        code = exited.code
    assert code == 0
    assert "usage:" in capsys.readouterr().out


def test_setup_installs_the_project_editable() -> None:
    setup = (REPO_ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    assert "pip install --quiet --disable-pip-version-check --no-deps -e ." in setup
    assert "pyproject.toml" in setup.split("wanted=", 1)[1].splitlines()[0], "a changed pyproject reinstalls"


@installed
@pytest.mark.parametrize(
    "command",
    [
        ["grace", "--help"],
        ["grace-worker", "--version"],
        [sys.executable, "-m", "grace_infra", "render", "--help"],
        [sys.executable, "-m", "worker", "query", "--help"],
    ],
    ids=lambda c: " ".join(Path(c[0]).name if i == 0 else part for i, part in enumerate(c)),
)
def test_the_commands_run_from_any_directory(command: list[str], tmp_path: Path) -> None:
    if not command[0].startswith("/"):
        command = [str(_bin(command[0])), *command[1:]]
    result = _run(command, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


@installed
def test_the_installed_package_is_this_checkout(tmp_path: Path) -> None:
    # Editable: the commands run the working tree's code, so an edit needs no reinstall.
    code = "import grace_infra, worker; print(grace_infra.__file__); print(worker.__file__)"
    result = _run([sys.executable, "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    assert [Path(line).parent.parent for line in result.stdout.split()] == [REPO_ROOT, REPO_ROOT]


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=60, check=False
    )
