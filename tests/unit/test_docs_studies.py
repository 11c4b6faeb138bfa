"""docs/studies.md's difference table is checked against what `grace studies diff chat` prints.

The command computes every difference between the chat design and the researchers' own from the study
files (grace_infra/commands/studies.py). The doc's table under "The chat design: every difference from
the researchers'" must list exactly the `[expN] aspect` labels the command prints for each study, and
each row must carry the short values the command prints for it (budgets, column lists). The mutation
tests show the check fails both ways: a difference added to the chat files without the doc, and a doc
row claiming a difference the files do not have.
"""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from grace_infra.commands import cli
from grace_infra.config.stack_files import PROJECT_ROOT

DOC = PROJECT_ROOT / "docs" / "studies.md"
SECTION = "## The chat design: every difference from the researchers'"
CHAT = PROJECT_ROOT / "jobs" / "studies" / "chat"
SCHEMAS = PROJECT_ROOT / "jobs" / "schemas"
REFERENCE = "researchers"
# A printed value this short (a budget, a column list, an option list) must appear in the doc's row
# verbatim; longer ones (the scoring rule's sentence, a system message) are paraphrased there.
SHORT_VALUE = 40
NOT_SET = "(not set)"
LABEL = re.compile(r"^  (\[exp[12]\] .+?)(?:, row \d+)?$")
STUDY_HEADER = re.compile(r"^(study\d): ")
DOC_ROW = re.compile(r"^\|\s*(?P<studies>[\d, ]+?)\s*\|\s*`(?P<label>\[exp[12]\] [^`]+)`\s*\|")

# (study, label) -> the values printed for it, reference and variant.
Printed = dict[tuple[str, str], list[str]]


def printed_differences(variant: str, capsys: pytest.CaptureFixture[str]) -> Printed:
    """Run `grace studies diff VARIANT` and read back every difference it prints, with its values."""
    code = cli.main(["studies", "diff", variant])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    found: Printed = {}
    study = ""
    for index, line in enumerate(lines):
        header = STUDY_HEADER.match(line)
        if header:
            study = header.group(1)
            continue
        label = LABEL.match(line)
        if not label:
            continue
        values = []
        for name, value_line in zip((REFERENCE, variant), lines[index + 1 : index + 3], strict=True):
            prefix = f"      {name}: "
            if value_line.startswith(prefix):
                values.append(value_line.removeprefix(prefix))
        found.setdefault((study, label.group(1)), []).extend(values)
    assert found, out
    return found


def documented_differences(text: str) -> dict[tuple[str, str], str]:
    """The doc table's rows, (study, label) -> the row's text; a row for "1, 2" stands for both studies."""
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    rows: dict[tuple[str, str], str] = {}
    for line in text[start : end if end != -1 else len(text)].splitlines():
        match = DOC_ROW.match(line)
        if not match:
            continue
        for number in match.group("studies").split(","):
            key = (f"study{number.strip()}", match.group("label"))
            assert key not in rows, f"{key} is listed twice"
            rows[key] = line
    return rows


def disagreements(printed: Printed, documented: dict[tuple[str, str], str]) -> list[str]:
    """Every way the doc's table and the command's output disagree, as sentences."""
    problems = [f"printed but not in the doc: {key}" for key in printed if key not in documented]
    problems += [f"in the doc but not printed: {key}" for key in documented if key not in printed]
    for key, values in printed.items():
        row = documented.get(key)
        if row is None:
            continue
        for value in values:
            if value != NOT_SET and len(value) <= SHORT_VALUE and value not in row:
                problems.append(f"{key}: the doc's row lacks the printed value {value!r}")
    return problems


def test_the_doc_lists_exactly_the_differences_the_command_prints(capsys: pytest.CaptureFixture[str]) -> None:
    printed = printed_differences("chat", capsys)
    documented = documented_differences(DOC.read_text(encoding="utf-8"))
    assert disagreements(printed, documented) == []


def _chat_copy(tmp_path: Path) -> Path:
    """The chat design copied with its schemas, so the study files' relative schema paths still resolve."""
    variant = tmp_path / "studies" / "chat-variant"
    shutil.copytree(CHAT, variant)
    shutil.copytree(SCHEMAS, tmp_path / "schemas")
    return variant


# One edit of a copy of the chat files, and the one disagreement the check must then report: a difference
# the doc does not list, and a listed difference whose printed value the doc no longer quotes.
MUTATIONS = {
    "a difference added to the files alone": (
        "study2", "  samples_per_row: 5\n", "  samples_per_row: 3\n",
        "printed but not in the doc: ('study2', '[exp1] samples per row')",
    ),
    "a changed value the doc still quotes": (
        "study1", "  max_tokens: 128\n", "  max_tokens: 256\n",
        "('study1', '[exp1] max_tokens'): the doc's row lacks the printed value '256'",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("study", "old", "new", "disagreement"), MUTATIONS.values(), ids=list(MUTATIONS))
def test_an_edit_of_the_chat_files_the_doc_does_not_follow_fails_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], study: str, old: str, new: str, disagreement: str
) -> None:
    variant = _chat_copy(tmp_path)
    path = variant / f"{study}.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1
    path.write_text(text.replace(old, new), encoding="utf-8")
    printed = printed_differences(str(variant), capsys)
    documented = documented_differences(DOC.read_text(encoding="utf-8"))
    assert disagreements(printed, documented) == [disagreement]


def test_a_difference_the_doc_claims_but_the_files_lack_fails_the_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    printed = printed_differences("chat", capsys)
    text = DOC.read_text(encoding="utf-8")
    claimed = "| 1 | `[exp1] temperature` | `0.3` | `0.7` | a difference the files do not have |\n"
    anchor = "| 1, 2 | `[exp1] form` |"
    assert text.count(anchor) == 1
    documented = documented_differences(text.replace(anchor, claimed + anchor))
    assert disagreements(printed, documented) == [
        "in the doc but not printed: ('study1', '[exp1] temperature')"
    ]


def test_every_printed_label_is_counted_once_per_study(capsys: pytest.CaptureFixture[str]) -> None:
    # The wording is printed once per compared row; the doc lists it once. Both studies print it.
    printed = printed_differences("chat", capsys)
    per_study: defaultdict[str, int] = defaultdict(int)
    for study, label in printed:
        per_study[study] += label.startswith("[exp1] wording")
    assert per_study == {"study1": 1, "study2": 1}
