"""`python -m worker query` as a real child process, and inputs whose rows a server can tell apart."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STUDY1_COLUMNS = (
    "participant_id",
    "story_shortname",
    "story_setup",
    "priorQ",
    "speach",
    "speachQ",
    "knowledgeQ",
    "access",
    "observe",
)
ROW_MARK = re.compile(r"ROW-(\d{5})")
# One request per row (Study 1's own conversation sends three): these tests count requests per row.
ONE_TURN_STUDY = REPO / "tests" / "fixtures" / "studies" / "study1_one_turn.yaml"


def write_study1(path: Path, rows: int) -> Path:
    """A study-1 input of `rows` rows; row i's prompt carries `ROW-0000i` so requests name their row."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(STUDY1_COLUMNS)
        for row in range(rows):
            writer.writerow([
                f"{row:03d}", "jars", f"ROW-{row:05d} Jars almost always hold jam.",
                "How many of the 3 jars hold jam?", "Ana says: 'I looked at 3 jars.'",
                "Now how many?", "Does Ana know?", "3", "0",
            ])  # fmt: skip
    return path


def row_of(text: str) -> int | None:
    found = ROW_MARK.search(text)
    return int(found.group(1)) if found else None


def rows_requested(texts: Iterable[str]) -> Counter[int]:
    """How often each row was sent."""
    return Counter(row for row in map(row_of, texts) if row is not None)


def worker_command(endpoint: str, source: Path, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "worker", "query",
        "--input", str(source),
        "--output", str(output),
        "--model-endpoint", endpoint,
        "--model-name", "tiny",
        "--study", str(ONE_TURN_STUDY),
        "--metrics-port", "0",
        "--timeout", "5",
        "--max-retries", "2",
        "--backoff-base", "0.05",
        "--wait-timeout", "5",
        *extra,
    ]  # fmt: skip


def start_worker(command: Sequence[str], log: Path, *, prefix: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """Start the worker with stderr (its log and its one-line errors) going to `log`."""
    with log.open("wb") as stderr:  # the child has its own copy of the descriptor
        return subprocess.Popen([*prefix, *command], cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)


def checkpoint_rows(checkpoint: Path) -> int:
    """Finished items in a checkpoint (its lines minus the header), 0 when there is none yet."""
    try:
        return max(0, checkpoint.read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def error_lines(log: Path) -> list[str]:
    """The lines a user reads as the outcome: everything that is not a timestamped log line."""
    return [line for line in log.read_text().splitlines() if not re.match(r"\d{4}-\d\d-\d\d ", line)]


def meta(output: Path) -> dict:
    return json.loads(output.with_name(output.name + ".meta.json").read_text())
