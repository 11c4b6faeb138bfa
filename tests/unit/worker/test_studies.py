"""Study definitions: loading, validation, search path, and prompt rendering over real-shaped rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from worker.errors import InputError
from worker.studies import load_study, study_search_path

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures"
SHARED_DATA = REPO.parent / "shared" / "data"

MINIMAL = """
name: tiny-study
required_columns: [a, b]
prompt:
  user: "A is {a}; B is {b}; braces {{kept}}"
"""


def write(tmp_path: Path, text: str, name: str = "tiny-study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "fixture"), [("study1", "study1_small.csv"), ("study2", "study2_small.csv")]
)
def test_the_repository_studies_match_their_input_files(name: str, fixture: str) -> None:
    study = load_study(name)
    frame = pd.read_csv(FIXTURES / fixture, dtype=str, keep_default_na=False)
    assert list(study.required_columns) == list(frame.columns)
    for row in frame.to_dict("records"):
        messages = study.render(row)
        assert [m["role"] for m in messages] == ["system", "user"]
        assert "{" not in messages[1]["content"]  # every placeholder filled


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize("name", ["study1", "study2"])
def test_every_real_row_renders(name: str) -> None:
    study = load_study(name)
    frame = pd.read_csv(SHARED_DATA / f"{name}.csv", dtype=str, keep_default_na=False)
    prompts = [study.render(row)[1]["content"] for row in frame.to_dict("records")]
    assert len(prompts) == len(frame)
    assert not any("<br>" in prompt for prompt in prompts)


def test_study1_asks_all_three_questions_in_order() -> None:
    row = pd.read_csv(FIXTURES / "study1_small.csv", dtype=str, keep_default_na=False).iloc[1].to_dict()
    user = load_study("study1").render(row)[1]["content"]
    positions = [user.index(row[column]) for column in ("priorQ", "speach", "speachQ", "knowledgeQ")]
    assert positions == sorted(positions)  # the prior question comes before the speaker's statement
    assert "<br>" not in user
    assert 'Boxes shipped by "QuickPost" almost always arrive sealed.\nBen ordered 3 boxes' in user
    for expected in ("from 0 to 3", "add up to 100", "yes or no"):
        assert expected in user


def test_a_minimal_study_and_literal_braces(tmp_path: Path) -> None:
    study = load_study(str(write(tmp_path, MINIMAL)))
    assert study.generation.max_tokens == 256
    assert study.probability is None
    assert study.render({"a": "1", "b": "{x}"}) == [
        {"role": "user", "content": "A is 1; B is {x}; braces {kept}"}
    ]


def test_other_pipelines_sections_are_kept_as_given(tmp_path: Path) -> None:
    text = MINIMAL + "probability:\n  questions: [{name: q}]\nextraction:\n  schema: s.json\n"
    study = load_study(str(write(tmp_path, text)))
    assert study.probability == {"questions": [{"name": "q"}]}
    assert study.extraction == {"schema": "s.json"}


def test_names_resolve_through_the_search_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, MINIMAL.replace("tiny-study", "custom"), "custom.yaml")
    monkeypatch.setenv("GRACE_STUDIES_DIR", str(tmp_path))
    assert study_search_path()[0] == tmp_path
    assert load_study("custom").name == "custom"
    assert load_study("study1").name == "study1"  # still found in the repository


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL.replace("{b}", "{c}"), r"prompt uses c, which required_columns does not list"),
        (
            MINIMAL + "generation:\n  max_tokens: 0\n",
            r"generation.max_tokens: Input should be greater than 0",
        ),
        (
            MINIMAL + "generation:\n  temprature: 1\n",
            r"generation.temprature: Extra inputs are not permitted",
        ),
        (MINIMAL.replace("{a}", "{a.b}"), r"placeholder \{a.b\} is not a plain column name"),
        ("- just\n- a list\n", r"expected a mapping at the top level"),
        ("name: [unclosed\n", r"cannot be read as YAML"),
        (MINIMAL.replace("required_columns: [a, b]", "required_columns: []"), r"required_columns"),
    ],
)
def test_a_bad_study_file_is_one_clear_input_error(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError, match=rf"^study file {path}: .*{message}"):
        load_study(str(path))


def test_unknown_study_names_the_places_searched() -> None:
    with pytest.raises(InputError, match=r"--study nope: unknown study \(no nope.yaml in .*jobs/studies\)"):
        load_study("nope")
    with pytest.raises(InputError, match=r"--study missing/x.yaml: no such file"):
        load_study("missing/x.yaml")
