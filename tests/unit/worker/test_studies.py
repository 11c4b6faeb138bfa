"""Study definitions: loading, validation, search path, and prompt rendering over real-shaped rows."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.unit.worker.support import FIXTURES, SHARED_DATA, STUDY1_CSV, read_csv
from worker.errors import InputError
from worker.studies.definition import (
    REPO_STUDIES_DIR,
    Study,
    load_study,
    resolve_study_path,
    sampling_settings,
    study_search_path,
)

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
    frame = read_csv(FIXTURES / fixture)
    assert list(study.required_columns) == list(frame.columns)
    for row in frame.to_dict("records"):
        prompt = study.render(row)
        assert len(prompt.users) == len(study.prompt.conversation)
        assert not any("{" in user for user in prompt.users)  # every placeholder filled


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize("name", ["study1", "study2"])
def test_every_real_row_renders(name: str) -> None:
    study = load_study(name)
    frame = read_csv(SHARED_DATA / f"{name}.csv")
    prompts = ["\n".join(study.render(row).users) for row in frame.to_dict("records")]
    assert len(prompts) == len(frame)
    assert not any("<br>" in prompt for prompt in prompts)


def test_study1_asks_one_question_per_turn_prior_first() -> None:
    row = read_csv(STUDY1_CSV).iloc[1].to_dict()
    study = load_study("chat/study1")
    prompt = study.render(row)
    assert prompt.system is None  # the researchers' executed prompts have none
    assert [turn.reply_column for turn in study.prompt.conversation] == [
        "response_story",
        "response_speech",
        "response_knowledge",
    ]
    story, speech, knowledge = prompt.users
    # The prior is asked before the model has seen the speaker's statement or the knowledge question.
    assert row["priorQ"] in story
    assert row["speach"] not in story
    assert row["speachQ"] not in story
    assert row["knowledgeQ"] not in story
    assert 'Boxes shipped by "QuickPost" almost always arrive sealed.\nBen ordered 3 boxes' in story
    assert story.endswith("Answer with just a number (0, 1, 2, or 3).")
    assert speech.startswith(row["speach"])
    assert row["speachQ"] in speech
    assert "add up to 100" in speech
    assert knowledge == f'{row["knowledgeQ"]}\n\nAnswer with just "yes" or "no".'
    assert not any("<br>" in user for user in prompt.users)


CONVERSATION = """
name: chat-study
required_columns: [a]
prompt:
  system: "Be brief."
  turns:
    - {name: one, user: "First {a}", reply_column: first_reply}
    - {name: two, user: "Second", reply_column: second_reply}
"""


def test_a_conversation_study_renders_every_turn(tmp_path: Path) -> None:
    study = load_study(str(write(tmp_path, CONVERSATION)))
    prompt = study.render({"a": "x"})
    assert prompt.system == "Be brief."
    assert prompt.users == ("First x", "Second")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("  turns:", "  user: hi\n  turns:", "give either user .one question. or turns"),
        ("reply_column: second_reply", "reply_column: first_reply", "every turn needs its own reply_column"),
        ("reply_column: second_reply", "reply_column: second reply", "is not a plain column name"),
        ("{name: two, user: \"Second\", reply_column: second_reply}", "{name: two, user: \"{b}\", "
         "reply_column: second_reply}", "the prompt uses b, which required_columns does not list"),
    ],
)  # fmt: skip
def test_a_bad_conversation_is_one_sentence_naming_the_key(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in CONVERSATION
    with pytest.raises(InputError, match=message):
        load_study(str(write(tmp_path, CONVERSATION.replace(old, new))))


def test_a_minimal_study_and_literal_braces(tmp_path: Path) -> None:
    study = load_study(str(write(tmp_path, MINIMAL)))
    assert study.generation.max_tokens == 256
    assert study.probability is None
    prompt = study.render({"a": "1", "b": "{x}"})
    assert prompt.system is None
    assert prompt.users == ("A is 1; B is {x}; braces {kept}",)
    assert study.prompt.conversation[0].reply_column == "model_response"


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
    assert load_study("chat/study1").name == "study1"  # still found in the repository


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
    searched = r"no nope.yaml or researchers/nope.yaml in .*jobs/studies\)"
    with pytest.raises(
        InputError, match=rf"--study nope: unknown study \({searched}.*designs: researchers, chat"
    ):
        load_study("nope")


def test_a_bare_study_name_is_the_default_design_and_a_design_prefix_picks_another() -> None:
    assert resolve_study_path("study1") == REPO_STUDIES_DIR / "researchers" / "study1.yaml"
    assert resolve_study_path("chat/study1") == REPO_STUDIES_DIR / "chat" / "study1.yaml"
    assert load_study("study2").design == "researchers"
    assert load_study("chat/study2").design == "chat"
    with pytest.raises(InputError, match=r"--study chat/nope: unknown study \(no chat/nope.yaml in "):
        load_study("chat/nope")


def test_a_missing_study_file_is_named() -> None:
    with pytest.raises(InputError, match=r"--study missing/x.yaml: no such file"):
        load_study("missing/x.yaml")


def _study(**fields: Any) -> Study:
    return Study.model_validate(
        {"name": "s", "required_columns": ["story", "setup"], "prompt": {"user": "{setup}"}, **fields}
    )


def test_values_are_stripped_after_the_replacements_when_the_study_asks() -> None:
    row = {"story": "exams", "setup": " One.<br> Two. "}
    replacing = {"text_replacements": {"<br>": "\n"}}
    assert _study(**replacing).values(row)["setup"] == " One.\n Two. "
    assert _study(**replacing, strip_values=True).values(row)["setup"] == "One.\n Two."


def test_a_lookup_matches_its_column_lower_cased_and_falls_back_to_its_default() -> None:
    study = _study(
        lookups={
            "property": {"column": "story", "values": {"exams": "passing grades"}, "default": "the property"}
        },
        prompt={"user": "{setup} {property}"},
    )
    assert study.values({"story": "Exams", "setup": "x"})["property"] == "passing grades"
    assert study.values({"story": "tickets", "setup": "x"})["property"] == "the property"
    assert study.render({"story": "exams", "setup": "x"}).users == ("x passing grades",)


def test_a_lookup_of_a_column_the_study_does_not_require_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"lookups\.property reads kind, which required_columns"):
        _study(lookups={"property": {"column": "kind", "values": {}, "default": "?"}})


# ---- the completion form and the replication seed rule ----------------------------------------------------

RAW = """
name: raw
required_columns: [a, b]
prompt:
  form: completion
  requests:
    - {name: first, text: "A is {a}.\\n\\nYour answer is:", reply_column: first_reply}
    - {name: second, text: "B is {b}.", reply_column: second_reply}
"""


def test_a_completion_study_renders_each_request_on_its_own(tmp_path: Path) -> None:
    study = load_study(str(write(tmp_path, RAW)))
    prompt = study.render({"a": "1", "b": "2"})
    assert prompt.system is None
    assert prompt.users == ("A is 1.\n\nYour answer is:", "B is 2.")  # neither carries the other
    assert study.prompt.reply_columns == ("first_reply", "second_reply")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("  form: completion\n", "  form: completion\n  system: Be brief.\n",
         "the completion form sends raw text with no chat template, so it takes no system: give requests"),
        ("  requests:", "  user: hi\n  requests:", "takes no user: give requests"),
        ("  form: completion\n", "", "requests are raw text prompts: set form: completion"),
        ("reply_column: second_reply", "reply_column: first_reply",
         "every request needs its own reply_column"),
        ('"B is {b}."', '"B is {c}."', "the prompt uses c, which required_columns does not list"),
        ("prompt:\n", "generation: {top_p: 0.9}\nprompt:\n",
         "generation.top_p is not sent by the completion form"),
        ("prompt:\n", "sampling: {seed_offset: 3}\nprompt:\n",
         "seed_offset applies only to seed_rule: replication"),
        ("prompt:\n", "sampling: {seed_rule: replication, base_seed: 2147483600, samples_per_row: 5, "
         "seed_offset: 100}\nprompt:\n",
         "the last sample's seed, .* = 2147483704, must stay below 2147483647"),
    ],
)  # fmt: skip
def test_a_bad_completion_study_is_one_sentence_naming_the_key(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in RAW
    with pytest.raises(InputError, match=message):
        load_study(str(write(tmp_path, RAW.replace(old, new))))


def test_reply_stripping_belongs_to_the_completion_form() -> None:
    with pytest.raises(ValidationError, match="strip_replies is a setting of the completion form"):
        _study(prompt={"user": "{setup}", "strip_replies": True})


def test_a_seed_flag_that_pushes_the_replication_seeds_out_of_range_names_the_flags() -> None:
    study = _study(sampling={"seed_rule": "replication", "seed_offset": 1000, "samples_per_row": 5})
    args = argparse.Namespace(temperature=None, samples=None, seed=2**31 - 1000)
    with pytest.raises(InputError, match=r"^--seed/--samples: the last sample's seed"):
        sampling_settings(study, args)
