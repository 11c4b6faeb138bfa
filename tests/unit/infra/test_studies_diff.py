"""`grace studies diff`: every difference between a design and the researchers' own, read from the files.

Run through the real command line on the stack's study CSVs (the real ones beside the checkout when
present, else the fixtures `grace render` also falls back to).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from grace_infra.commands import cli
from grace_infra.config.stack_files import PROJECT_ROOT

RESEARCHERS = PROJECT_ROOT / "jobs" / "studies" / "researchers"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["studies", "diff", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def aspects(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.startswith("  [")]


def test_the_researchers_design_against_itself_has_no_difference(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["researchers"], capsys)
    assert code == 0
    assert "study1: no differences between researchers and researchers." in out
    assert "study2: no differences between researchers and researchers." in out


def test_one_injected_change_is_the_one_difference_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    variant = tmp_path / "variant"
    shutil.copytree(RESEARCHERS, variant)
    study1 = variant / "study1.yaml"
    text = study1.read_text(encoding="utf-8")
    assert text.count("Answer directly with just a number") == 1
    study1.write_text(text.replace("Answer directly with just a number", "Answer with just a number"))
    code, out, _ = run([str(variant), "--study", "study1", "--rows", "0,1"], capsys)
    assert code == 0
    assert aspects(out) == ["[exp1] wording, row 0", "[exp1] wording, row 1"]
    assert "-Answer directly with just a number (0, 1, 2, or 3)." in out
    assert "+Answer with just a number (0, 1, 2, or 3)." in out


def test_a_changed_budget_is_listed_with_both_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    variant = tmp_path / "variant"
    shutil.copytree(RESEARCHERS, variant)
    study2 = variant / "study2.yaml"
    study2.write_text(study2.read_text(encoding="utf-8").replace("max_tokens: 50", "max_tokens: 64"))
    code, out, _ = run([str(variant), "--study", "study2"], capsys)
    assert code == 0
    assert aspects(out) == ["[exp1] max_tokens"]
    assert "      researchers: 50\n      " in out
    assert out.rstrip().endswith(": 64")


@pytest.mark.parametrize(
    ("study", "expected"),
    [
        (
            "study1",
            ["[exp1] form", "[exp1] requests", "[exp1] max_tokens", "[exp1] stop", "[exp1] seed rule"],
        ),
        ("study2", ["[exp1] form", "[exp1] system message", "[exp1] max_tokens", "[exp1] reply columns"]),
    ],
)
def test_the_chat_design_differs_where_the_audit_says(
    study: str, expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["chat", "--study", study], capsys)
    assert code == 0
    listed = aspects(out)
    assert set(expected) <= set(listed), listed
    assert "[exp1] wording, row 0" in listed


def test_the_chat_design_drops_directly_and_your_answer_is(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(["chat", "--study", "study1"], capsys)
    assert "-Answer directly with just a number (0, 1, 2, or 3)." in out
    assert '-Answer directly with just "yes" or "no".' in out
    assert "-Your answer is:" in out


def test_an_unknown_design_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["nope"], capsys)
    assert (code, out) == (2, "")
    assert err == "error: design 'nope' is neither one of researchers, chat nor a folder of study files.\n"


def test_a_row_past_the_end_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["chat", "--study", "study1", "--rows", "100000"], capsys)
    assert code == 2
    assert err.startswith("error: --rows 100000: ")
    assert err.count("\n") == 1


def test_the_chat_design_rewords_every_experiment_2_question(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(["chat"], capsys)
    # Study 1: their state prompt and its property (here "passing grades", the exams story of row 0).
    assert "-Given the scenario below, what percentage probability do you assign that exactly 0 of the" in out
    assert "-Respond with ONLY a percentage from this list:" in out
    # Study 2: their one prompt with eight sentences against three questions of our own.
    assert "-[question response, raw text]" in out
    assert "+[question frame, chat messages]" in out


def test_the_chat_design_scores_with_summed_variants_not_their_rule(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, _ = run(["chat", "--study", "study2"], capsys)
    assert "[exp2] scoring rule" in aspects(out)
    assert "researchers: joint-completion: the raw prompt with no chat template" in out
    assert "case and space variants summed" in out
    assert {"[exp2] marginal frame columns", "[exp2] marginal joint_frame columns"} <= set(aspects(out))
