"""A full disk for real: the output directory is a tiny tmpfs (needs root to mount; skipped otherwise)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.support.fake_openai import FakeOpenAI
from tests.support.worker_process import (
    error_lines,
    rows_requested,
    start_worker,
    worker_command,
    write_study1,
)
from tests.unit.worker.support import CHAT

ANSWER_CHARS = 2000  # each checkpoint line is then ~5 KB (the answer, and the conversation that repeats it)
# Rows whose checkpoint (~60 KB) fits the 96 KB disk while the output written beside it does not.
FULL_OUTPUT_ROWS = 12


class SmallDisk:
    def __init__(self, path: Path) -> None:
        self.path = path

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "disk"
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def server_setup() -> Callable[[FakeOpenAI], None]:
    def long_answers(fake: FakeOpenAI) -> None:
        fake.chat_content = lambda request: request.text[-40:] + "x" * ANSWER_CHARS

    return long_answers


def checkpoint_items(path: Path) -> set[int]:
    lines = path.read_bytes().splitlines()[1:]
    return {json.loads(line)["row"] for line in lines}


def run(server: FakeOpenAI, source: Path, output: Path, log: Path) -> int:
    return start_worker(worker_command(server.base_url, source, output, "--batch-size", "4"), log).wait(60)


def test_a_disk_filling_while_checkpointing_exits_4_and_the_rerun_resends_nothing_answered(
    server: FakeOpenAI, small_disk: SmallDisk, tmp_path: Path
) -> None:
    source, output = write_study1(tmp_path / "in.csv", 200), small_disk.path / "out.csv"
    checkpoint = small_disk.path / "out.csv.partial.jsonl"

    assert run(server, source, output, tmp_path / "log1") == 4

    [line] = error_lines(tmp_path / "log1")
    assert line.startswith(f"worker query: error: cannot write {checkpoint}: No space left on device (")
    assert " free there); make room or move --output, then rerun" in line
    assert not output.exists()
    assert not list(small_disk.path.glob("*.tmp"))
    meta = small_disk.path / "out.csv.meta.json"
    assert not meta.exists() or json.loads(meta.read_text())["status"] == "storage_error"
    assert checkpoint.read_bytes().endswith(b"\n")  # the refused line was taken back whole
    kept = checkpoint_items(checkpoint)
    assert 10 < len(kept) < 200
    sent_before = len(server.requests_to(CHAT))

    small_disk.resize("8m")
    assert run(server, source, output, tmp_path / "log2") == 0

    resent = rows_requested(request.text for request in server.requests_to(CHAT)[sent_before:])
    assert set(resent) == set(range(200)) - kept  # nothing the checkpoint held was asked again
    assert "damaged" not in (tmp_path / "log2").read_text()
    assert len(pd.read_csv(output)) == 200
    assert json.loads(meta.read_text())["status"] == "complete"


def test_a_disk_too_full_for_the_output_keeps_the_checkpoint_and_writes_no_meta_claiming_success(
    server: FakeOpenAI, small_disk: SmallDisk, tmp_path: Path
) -> None:
    source, output = write_study1(tmp_path / "in.csv", FULL_OUTPUT_ROWS), small_disk.path / "out.csv"
    checkpoint = small_disk.path / "out.csv.partial.jsonl"

    assert run(server, source, output, tmp_path / "log1") == 4

    [line] = error_lines(tmp_path / "log1")
    assert line.startswith(f"worker query: error: cannot write {output}: No space left on device (")
    assert not output.exists()
    assert not list(small_disk.path.glob("*.tmp"))
    assert not (small_disk.path / "out.csv.meta.json").exists()
    assert checkpoint_items(checkpoint) == set(range(FULL_OUTPUT_ROWS))
    sent_before = len(server.requests_to(CHAT))

    small_disk.resize("8m")
    assert run(server, source, output, tmp_path / "log2") == 0
    assert len(server.requests_to(CHAT)) == sent_before  # the output came from the checkpoint alone
    assert len(pd.read_csv(output)) == FULL_OUTPUT_ROWS


def test_a_read_only_disk_is_one_line_exit_4(
    server: FakeOpenAI, small_disk: SmallDisk, tmp_path: Path
) -> None:
    source, output = write_study1(tmp_path / "in.csv", 5), small_disk.path / "out.csv"
    small_disk.read_only()
    assert run(server, source, output, tmp_path / "log") == 4
    [line] = error_lines(tmp_path / "log")
    assert line.startswith(f"worker query: error: cannot create the output's lock file {output}.lock: ")
    assert "Read-only file system" in line
