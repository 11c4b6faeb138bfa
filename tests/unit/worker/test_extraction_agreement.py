"""benchmarks/extraction_agreement.py: its statistics by hand, and the parser against the human coding."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from benchmarks import extraction_agreement as bench

VALIDATION = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "validation"


def test_kappa_matches_a_hand_computed_table() -> None:
    # 50 items: both yes 20, coder yes / human no 5, coder no / human yes 10, both no 15.
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    # p_o = 35/50 = 0.7; p_e = (25/50)(30/50) + (25/50)(20/50) = 0.3 + 0.2 = 0.5; kappa = 0.2/0.5 = 0.4
    assert bench.exact_match(pairs) == pytest.approx(0.7)
    assert bench.cohens_kappa(pairs) == pytest.approx(0.4)


def test_kappa_is_undefined_when_both_raters_use_one_value_and_negative_below_chance() -> None:
    assert math.isnan(bench.cohens_kappa([("a", "a")] * 4))
    assert math.isnan(bench.cohens_kappa([]))
    assert bench.cohens_kappa([("a", "b"), ("b", "a")]) == pytest.approx(-1.0)


def test_the_parser_codes_exact_replies_and_leaves_the_rest_uncoded() -> None:
    frame = pd.DataFrame(
        {
            "Domain": ["cake"] * 4,
            "SP_Name": ["Ann"] * 4,
            "LS_Name": ["Bo"] * 4,
            "response": [
                '"It was good."',
                "It wasn't terrible, it was good.",
                '"It wasn\'t bad".',
                "It was okay",
            ],
            "Was/Wasn't": ["was", "wasn't", "wasn't", "was"],
            "Assessment": ["good", "terrible", "good", ""],
        }
    )
    spec = bench.load_spec("study2")
    coded = bench.code_with_parser(spec, bench.study_rows(frame, spec, "study2"))
    assert coded.methods == ["parser", "", "parser", ""]
    was, assessment = bench.agreement("study2", frame, coded, "parser")
    assert (was.field, was.compared, was.exact) == ("was_wasnt", 2, 1.0)
    # The third reply says "bad" where the human wrote "good": one of two agree.
    assert (assessment.compared, assessment.exact) == (2, 0.5)


@pytest.mark.skipif(not VALIDATION.is_dir(), reason="the validation set is not on this machine")
def test_the_parser_on_the_researchers_study2_coding() -> None:
    """The figures docs/extraction-and-coding.md quotes: the parser alone, on GPT-4's 1,939 replies."""
    frame = pd.read_csv(VALIDATION / "study2_gpt4_coded.csv", dtype=str, keep_default_na=False)
    spec = bench.load_spec("study2")
    coded = bench.code_with_parser(spec, bench.study_rows(frame, spec, "study2"))
    assert coded.methods.count("parser") == 1937
    for field in bench.agreement("study2", frame, coded, "parser"):
        assert (field.compared, field.exact, field.kappa) == (1937, 1.0, 1.0), field.field
