"""The edges of both command lines, run as a user runs them (`grace`, `grace-worker` as processes):
output piped into a reader that stops early, an unknown stack, an empty results folder, the usage line's
program name, and a cluster that does not answer.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.kube_api import CONTEXT, NOWHERE, KubeApi

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GRACE = [sys.executable, "-m", "grace_infra"]
# The console script pyproject.toml installs (scripts/setup.sh installs the project into .venv).
GRACE_WORKER = BIN / "grace-worker"
# What a shell reports for a command SIGPIPE ended (`yes | head -1`): 128 + 13.
CLOSED_PIPE_EXIT = 128 + signal.SIGPIPE
PIPE_CAPACITY = 4096  # the smallest a Linux pipe can be: one page


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=300, check=False, **kwargs  # type: ignore[call-overload]
    )


def _read_one_line_then_close(argv: list[str]) -> tuple[bytes, int, str]:
    """Run `argv` with stdout into a one-page pipe; read its first line byte by byte, close the pipe, and
    return (that line, the exit code, stderr).

    Deterministic when the command writes more than a page after its first line: the pipe is full, so
    the command is still blocked in a write when the reader goes away, and that write must fail.
    """
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_CAPACITY)
    with subprocess.Popen(argv, cwd=REPO, stdout=write_end, stderr=subprocess.PIPE) as process:
        os.close(write_end)
        line = b""
        while not line.endswith(b"\n"):
            byte = os.read(read_end, 1)
            if not byte:
                break
            line += byte
        os.close(read_end)
        _, stderr = process.communicate(timeout=300)
    return line, process.returncode, stderr.decode()


def _assert_output_outgrows_the_pipe(argv: list[str]) -> None:
    full = subprocess.run(argv, cwd=REPO, capture_output=True, timeout=300, check=False).stdout
    first_line = full.split(b"\n", 1)[0]
    assert len(full) > PIPE_CAPACITY + len(first_line) + 1, "too little output to fill the pipe"


@pytest.fixture(scope="module")
def many_outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of outputs with no meta files: `results check` writes one table line for each."""
    folder = tmp_path_factory.mktemp("outputs")
    for index in range(120):
        model = folder / "exp1" / f"model-{index:03d}"
        model.mkdir(parents=True)
        (model / "study1_responses.csv").write_text("a,b\n1,2\n")
    return folder


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([*GRACE, "render", "--stack", "nrp", "--out", "{tmp}/render"], id="grace render"),
        pytest.param([*GRACE, "results", "check", "{outputs}"], id="grace results check"),
    ],
)
def test_a_reader_that_stops_after_one_line_ends_the_command_quietly(
    command: list[str], tmp_path: Path, many_outputs: Path
) -> None:
    argv = [part.format(tmp=tmp_path, outputs=many_outputs) for part in command]
    _assert_output_outgrows_the_pipe(argv)
    line, code, stderr = _read_one_line_then_close(argv)
    assert line.strip(), "the command printed no first line"
    assert "Traceback" not in stderr
    assert "BrokenPipeError" not in stderr
    assert code == CLOSED_PIPE_EXIT


def _into_a_closed_pipe(argv: list[str]) -> tuple[int, str]:
    """Run `argv` with stdout into a pipe whose reader has already gone (`command | true`, with the
    reader first): every write the command makes fails. Its exit code and stderr.

    stdout is block-buffered, as in a user's shell: argparse's own write of the help goes into the buffer
    (unbuffered, argparse would swallow the failed write itself), so the failure comes at the flush.
    """
    read_end, write_end = os.pipe()
    os.close(read_end)
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    with subprocess.Popen(
        argv, cwd=REPO, stdout=write_end, stderr=subprocess.PIPE, env=environment
    ) as process:
        os.close(write_end)
        _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr.decode()


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([str(GRACE_WORKER), "--help"], id="grace-worker --help"),
        pytest.param([sys.executable, "-m", "worker", "query", "--help"], id="python -m worker query --help"),
        pytest.param([*GRACE, "--help"], id="grace --help"),
    ],
)
def test_help_into_a_pipe_whose_reader_is_gone_ends_quietly(argv: list[str]) -> None:
    # argparse writes the help into stdout's buffer and exits; the write to the pipe happens at the flush.
    code, stderr = _into_a_closed_pipe(argv)
    assert stderr == ""
    assert code == CLOSED_PIPE_EXIT


def test_an_unknown_stack_names_the_stacks_there_are() -> None:
    result = _run([*GRACE, "status", "--stack", "nope"])
    stacks = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in REPO.glob("Pulumi.*.yaml"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: --stack nope: Pulumi.nope.yaml does not exist")
    assert result.stderr.rstrip().endswith(f"the stacks are {', '.join(stacks)}.")


def test_tidy_on_a_folder_without_outputs_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = _run([*GRACE, "results", "tidy", str(tmp_path)])
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {tmp_path}: holds no finished worker output")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("subcommand", [[], ["query"]])
def test_the_worker_script_names_itself_in_its_usage(subcommand: list[str]) -> None:
    result = _run([str(GRACE_WORKER), *subcommand, "--help"])
    assert result.returncode == 0
    assert result.stdout.startswith(" ".join(["usage: grace-worker", *subcommand]) + " ")
    module = _run([sys.executable, "-m", "worker", *subcommand, "--help"])
    assert module.stdout.startswith(" ".join(["usage: python -m worker", *subcommand]) + " ")


def test_an_unreachable_api_server_names_the_context(tmp_path: Path) -> None:
    with KubeApi({}) as api:
        kubeconfig = api.write_kubeconfig(tmp_path, current=CONTEXT)
    # NOWHERE's server is a port nothing listens on: the context the researcher asked for is unreachable.
    result = _run([*GRACE, "status", "--stack", "nrp", "--kubeconfig", str(kubeconfig), "--context", NOWHERE])
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: cannot reach the API server of kubeconfig context {NOWHERE} (")
    assert result.stderr.count("\n") == 1
