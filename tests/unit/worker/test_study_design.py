"""The study files measure the researchers' design: answer sets, sampling, budgets, and the deviations list.

The data checks read the real study CSV from ../shared/data when it is there (it is never committed).
"""

from __future__ import annotations

import argparse
import re

import pandas as pd
import pytest

from tests.unit.worker.support import SHARED_DATA, load_schema
from worker.errors import InputError
from worker.studies import probability_section as spec
from worker.studies.definition import Study, load_study, resolve_study_path, sampling_settings
from worker.studies.extraction_section import load_extraction

STUDY2_CSV = SHARED_DATA / "study2.csv"
# Analysis/output/procedures_section.tex: "assessment level (terrible, bad, good, or amazing) and
# positivity frame ("It was ~" or "It wasn't ~")": eight utterances, chance 1/8.
PUBLISHED_WORDS = ("terrible", "bad", "good", "amazing")
PUBLISHED_FRAMES = ("was", "wasn't")
PUBLISHED_UTTERANCES = [f"It {frame} {word}" for frame in PUBLISHED_FRAMES for word in PUBLISHED_WORDS]
# Chi-square critical value at the 5 % level with (6 - 1) x (4 - 1) = 15 degrees of freedom.
CHI2_CRITICAL_15_DF = 24.996


def test_study2_experiment1_asks_for_the_researchers_four_words() -> None:
    user = load_study("chat/study2").prompt.user
    listed = user.rsplit("where <word> is one of:", 1)[1]
    assert re.findall(r"[a-z]+", listed) == list(PUBLISHED_WORDS)
    assert "okay" not in user


def test_study2_experiment2_scores_the_researchers_eight_utterances() -> None:
    study = load_study("chat/study2")
    questions = {q.name: q for q in spec.questions_for(study, None)}
    assert [o.text for o in questions["utterance"].options] == PUBLISHED_UTTERANCES
    assert [o.text for o in questions["assessment"].options] == list(PUBLISHED_WORDS)
    assert [o.text for o in questions["frame"].options] == list(PUBLISHED_FRAMES)
    assert "okay" not in questions["utterance"].user
    assert "okay" not in questions["assessment"].user


def test_study2_schema_and_parser_allow_only_the_researchers_words() -> None:
    schema = load_schema("study2")
    enum = schema["properties"]["assessment"]["anyOf"][0]["enum"]
    assert enum == list(PUBLISHED_WORDS)
    path = resolve_study_path("chat/study2")
    parser = load_extraction(load_study(str(path)), path).parser
    assert parser.code({"model_response": "It was okay."}) is None
    for utterance in PUBLISHED_UTTERANCES:
        assert parser.code({"model_response": f'"{utterance}."'})["response_cleaned"] == utterance


def test_study2_experiment1_budget_leaves_room_for_a_preamble() -> None:
    assert load_study("chat/study2").generation.max_tokens >= 64


@pytest.mark.skipif(not STUDY2_CSV.exists(), reason="the real study 2 CSV is not on this machine")
def test_utterance_is_a_stimulus_column_balanced_over_state() -> None:
    """Were Utterance the participant's answer, it would move with State (a kind speaker says "It was
    amazing" less often about 0 hearts). It does not: its distribution is the same at every State."""
    data = pd.read_csv(STUDY2_CSV)
    table = pd.crosstab(data["Utterance"], data["State"])
    total = table.to_numpy().sum()
    expected = table.sum(axis=1).to_numpy()[:, None] * table.sum(axis=0).to_numpy()[None, :] / total
    chi2 = float((((table.to_numpy() - expected) ** 2) / expected).sum())
    assert table.shape == (6, 4)
    assert chi2 < CHI2_CRITICAL_15_DF
    shares = table / table.sum(axis=0)
    assert shares.to_numpy().min() > 0.12
    assert shares.to_numpy().max() < 0.22


@pytest.mark.parametrize("name", ["study1", "study2"])
def test_study_files_sample_at_the_researchers_temperature_with_our_samples_and_seed(name: str) -> None:
    # src/utils/model_config.py: temperature_text=0.3 for every studied model. 5 samples and base seed 42
    # are ours: their --replications has no default and their base seed defaults to a timestamp.
    sampling = load_study(name).sampling
    assert (sampling.temperature, sampling.samples_per_row, sampling.base_seed) == (0.3, 5, 42)


@pytest.mark.parametrize("name", ["chat/study1", "chat/study2"])
def test_each_chat_deviation_gives_theirs_ours_and_why(name: str) -> None:
    # Which differences there are is computed by `grace studies diff` (tests/unit/infra/test_studies_diff.py);
    # this only checks that each listed one is explained.
    deviations = load_study(name).deviations
    assert deviations
    assert all(d.researchers.strip() and d.ours.strip() and d.why.strip() for d in deviations)
    assert any("system message" in d.what.lower() for d in deviations)


def test_study2_lists_the_third_person_deviation() -> None:
    point_of_view = [d for d in load_study("chat/study2").deviations if d.what == "Point of view"]
    assert point_of_view
    assert "third person" in point_of_view[0].ours


def test_sampling_is_set_in_one_place_only() -> None:
    raw = {
        "name": "x",
        "required_columns": ["a"],
        "prompt": {"user": "{a}"},
        "generation": {"max_tokens": 8, "temperature": 0.7},
    }
    with pytest.raises(ValueError, match=r"generation.temperature is a sampling setting"):
        Study.model_validate(raw)


def test_worker_flags_override_the_study_sampling() -> None:
    study = load_study("chat/study1")
    args = argparse.Namespace(temperature=0.0, samples=1, seed=7)
    assert sampling_settings(study, args).model_dump() == {
        "temperature": 0.0,
        "samples_per_row": 1,
        "base_seed": 7,
        "seed_rule": "derived",  # the study's own rule: no flag overrides it
        "seed_offset": 0,
    }
    unset = argparse.Namespace(temperature=None, samples=None, seed=None)
    assert sampling_settings(study, unset) == study.sampling
    with pytest.raises(InputError, match=r"^--samples 0: Input should be greater than or equal to 1\.$"):
        sampling_settings(study, argparse.Namespace(temperature=None, samples=0, seed=None))


def test_consistency_groups_must_cover_the_joint_exactly_once() -> None:
    study = load_study("chat/study2")
    questions = spec.questions_for(study, None)
    section = spec.probability_section(study)
    broken = section.consistency[0].model_copy(
        update={"groups": {"was": ("was_bad",), "wasnt": ("wasnt_bad",)}}
    )
    with pytest.raises(InputError, match="must list every option of 'utterance' exactly once"):
        spec.marginals_for(section.model_copy(update={"consistency": (broken,)}), questions)


def test_marginals_are_sums_of_the_joint() -> None:
    study = load_study("chat/study2")
    questions = spec.questions_for(study, None)
    frame, assessment = spec.consistency_for(study, questions, None)
    joint = dict.fromkeys(questions[2].prob_columns, 0.0)
    joint |= {"was_good": 0.5, "wasnt_bad": 0.25, "wasnt_terrible": 0.125, "was_amazing": 0.125}
    assert frame.values(joint) == {"prob_joint_frame_was": 0.625, "prob_joint_frame_wasnt": 0.375}
    assert assessment.values(joint) == {
        "prob_joint_assessment_terrible": 0.125,
        "prob_joint_assessment_bad": 0.25,
        "prob_joint_assessment_good": 0.5,
        "prob_joint_assessment_amazing": 0.125,
    }
