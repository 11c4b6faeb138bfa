"""`grace studies check`, run as a process: the stack's study CSVs where `pulumi up` reads them, their
rows, and the columns the study files' `required_columns` list (read here from the study file the
command names, never typed)."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from worker.studies.definition import load_study

from .support import PROJECT_ROOT

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
FIXTURES = PROJECT_ROOT / "tests" / "fixtures"
STUDIES = ("study1", "study2")
OK_LINE = re.compile(r"^ok +(study\d) +(.+): ([\d,]+) rows.*; all (\d+) columns required by (.+)$")


def _check(tmp_path: Path, files: dict[str, Path] | None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "grace_infra", "studies", "check", "--stack", "nrp"]
    if files is not None:
        extra = tmp_path / "inputs.yaml"
        experiments = {"studies": list(files), "inputFiles": {s: str(p) for s, p in files.items()}}
        extra.write_text(yaml.safe_dump({"grace:experiments": experiments}))
        argv += ["--config-file", str(extra)]
    return subprocess.run(argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False)


def _rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return sum(1 for row in csv.reader(handle) if row) - 1


def _ok_lines(stdout: str) -> dict[str, tuple[str, int, int, str]]:
    found = {}
    for line in stdout.splitlines():
        match = OK_LINE.match(line)
        if match:
            study, path, rows, columns, study_file = match.groups()
            found[study] = (path, int(rows.replace(",", "")), int(columns), study_file)
    return found


def test_the_study_files_the_readme_names_pass_with_their_row_counts(tmp_path: Path) -> None:
    if not all((SHARED_DATA / f"{study}.csv").is_file() for study in STUDIES):
        pytest.skip(f"the study CSVs are not in {SHARED_DATA}")
    files = {study: SHARED_DATA / f"{study}.csv" for study in STUDIES}
    result = _check(tmp_path, files)
    assert result.returncode == 0, result.stdout + result.stderr
    ok = _ok_lines(result.stdout)
    assert set(ok) == set(STUDIES)
    for study, (path, rows, columns, study_file) in ok.items():
        assert path == str(files[study])
        assert rows == _rows(files[study])
        studies = [load_study(str(PROJECT_ROOT / path)) for path in study_file.split(", ")]
        assert columns == len({column for s in studies for column in s.required_columns})
    assert result.stdout.splitlines()[-1] == "study files: 2 of 2 ready for pulumi up"


def test_a_checkout_without_data_is_told_where_the_files_go(tmp_path: Path) -> None:
    # The committed stack names data/<study>.csv, which git never holds; a fresh clone lacks them.
    stack = yaml.safe_load((PROJECT_ROOT / "Pulumi.nrp.yaml").read_text())["config"]
    configured = stack["grace:experiments"]["inputFiles"]
    if any((PROJECT_ROOT / path).exists() for path in configured.values()):
        pytest.skip("this checkout has the study CSVs in place")
    result = _check(tmp_path, None)
    assert result.returncode == 2
    for study, path in configured.items():
        assert f"FAIL  {study}  {path} does not exist: copy the researchers' {Path(path).name} there" in (
            result.stdout
        )
    assert result.stdout.splitlines()[-1] == "study files: 0 of 2 not ready for pulumi up"


def test_a_missing_required_column_is_named(tmp_path: Path) -> None:
    fixtures = {study: FIXTURES / f"{study}_small.csv" for study in STUDIES}
    passing = _check(tmp_path, fixtures)
    assert passing.returncode == 0, passing.stdout + passing.stderr
    _, _, _, study_file = _ok_lines(passing.stdout)["study1"]
    dropped = load_study(str(PROJECT_ROOT / study_file.split(", ")[0])).required_columns[0]
    with fixtures["study1"].open(newline="", encoding="utf-8-sig") as handle:
        rows = [dict(row) for row in csv.DictReader(handle)]
    short = tmp_path / "study1.csv"
    with short.open("w", newline="", encoding="utf-8") as handle:
        columns = [column for column in rows[0] if column != dropped]
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    result = _check(tmp_path, {**fixtures, "study1": short})
    assert result.returncode == 2
    (failed,) = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert failed.startswith(f"FAIL  study1  {short}: missing column(s) {dropped} that this study needs")
    assert "study2" in _ok_lines(result.stdout)
