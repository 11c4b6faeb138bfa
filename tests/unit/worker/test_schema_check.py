"""The pure rules of extraction: schemas, recovery, validation, cross-field checks, re-ask turns.

Reply shapes come from real vLLM 0.32 bodies in ../shared/reference/vllm-0.32 when that folder exists.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.worker.support import GOOD, load_schema
from tests.unit.worker.support import SHARED_REFERENCE as REFERENCE
from worker.studies.schema_check import (
    AttemptFailure,
    Backend,
    FailureKind,
    Parsed,
    SumCheck,
    check_schema,
    correction_messages,
    cross_field_warnings,
    find_json_object,
    format_instructions,
    judge_reply,
    make_validator,
    response_format_for,
    schema_fields,
    schema_name,
)

PROBABILITIES = ("probability_0", "probability_1", "probability_2", "probability_3")


def study1_reply(**overrides: Any) -> dict[str, Any]:
    """A Study 1 extraction that fills every field (support.GOOD), with some replaced."""
    return {**GOOD, **overrides}


def judge1(content: str, finish_reason: str = "stop") -> Parsed | AttemptFailure:
    schema = load_schema("study1")
    return judge_reply(content, finish_reason, schema, make_validator(schema))


def reference_reply(name: str) -> tuple[str, str]:
    path = REFERENCE / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"{path} is not present (shared reference bodies)")
    choice = json.loads(path.read_text(encoding="utf-8"))["choices"][0]
    return choice["message"]["content"], choice["finish_reason"]


def reference_schema(name: str) -> dict[str, Any]:
    request = json.loads((REFERENCE / f"{name}.request.json").read_text(encoding="utf-8"))
    if "response_format" in request:
        return request["response_format"]["json_schema"]["schema"]
    return request["structured_outputs"]["json"]


# ---------------------------------------------------------------------------------------------------------
# The study schemas (data in jobs/schemas)


@pytest.mark.parametrize("study", ["study1", "study2"])
def test_study_schema_is_usable_for_strict_extraction(study: str) -> None:
    assert check_schema(load_schema(study)) == []


def test_study1_schema_fields_and_ranges() -> None:
    schema = load_schema("study1")
    assert schema_fields(schema) == ("prior_answer", *PROBABILITIES, "knowledge_answer")
    validator = make_validator(schema)
    assert validator.is_valid(study1_reply())
    assert validator.is_valid(dict.fromkeys(schema_fields(schema)))  # nothing stated: all null


@pytest.mark.parametrize(
    "bad",
    [
        {"prior_answer": 4},
        {"prior_answer": -1},
        {"probability_2": 101},
        {"probability_2": 12.5},
        {"probability_2": "50"},
        {"probability_2": True},
        {"knowledge_answer": "maybe"},
        {"knowledge_answer": "Yes"},
        {"confidence": 3},  # a field the schema does not have
    ],
    ids=lambda bad: "-".join(f"{key}={value!r}" for key, value in bad.items()),
)
def test_study1_schema_refuses_a_value_out_of_range(bad: dict[str, Any]) -> None:
    assert not make_validator(load_schema("study1")).is_valid(study1_reply(**bad))


def test_study1_schema_refuses_a_missing_field() -> None:
    without = study1_reply()
    del without["knowledge_answer"]
    assert not make_validator(load_schema("study1")).is_valid(without)


def test_study2_schema_fields_and_vocabulary() -> None:
    schema = load_schema("study2")
    assert schema_fields(schema) == ("was_wasnt", "assessment", "response_cleaned")
    validator = make_validator(schema)
    for polarity in ("was", "wasn't"):
        for word in ("terrible", "bad", "good", "amazing"):  # the published four
            reply = {"was_wasnt": polarity, "assessment": word, "response_cleaned": f"It {polarity} {word}"}
            assert validator.is_valid(reply)
    assert validator.is_valid({"was_wasnt": None, "assessment": None, "response_cleaned": None})
    assert not validator.is_valid({"was_wasnt": "is", "assessment": "good", "response_cleaned": "x"})
    assert not validator.is_valid({"was_wasnt": "was", "assessment": "great", "response_cleaned": "x"})
    assert not validator.is_valid({"was_wasnt": "was", "assessment": "okay", "response_cleaned": "x"})
    assert not validator.is_valid({"was_wasnt": "was", "assessment": "good", "response_cleaned": ""})


@pytest.mark.parametrize(
    ("schema", "phrase"),
    [
        ([], "not a JSON object"),
        ({"type": "object", "properties": {"a": {"type": "nonsense"}}}, "not a valid JSON Schema"),
        ({"type": "array", "items": {}}, '"type": "object"'),
        ({"type": "object", "properties": {"a": {}}, "required": ["a"]}, "additionalProperties"),
        (
            {
                "type": "object",
                "properties": {"a": {}, "b": {}},
                "required": ["a"],
                "additionalProperties": False,
            },
            "not required: b",
        ),
    ],
)
def test_check_schema_names_what_extraction_cannot_use(schema: Any, phrase: str) -> None:
    problems = check_schema(schema)
    assert problems
    assert any(phrase in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("schema", "name"),
    [
        ({"title": "study1_extraction"}, "study1_extraction"),
        ({"title": "Study 1: answers!"}, "Study_1__answers_"),
        ({}, "fallback"),
        ({"title": "a" * 200}, "a" * 64),
    ],
    ids=["title", "title-with-other-characters", "no-title", "long-title"],
)
def test_schema_name_fits_the_api_rule(schema: dict[str, Any], name: str) -> None:
    assert schema_name(schema, "fallback") == name


# ---------------------------------------------------------------------------------------------------------
# Finding the JSON object in a reply


def test_find_json_object_whole_reply_is_not_recovered() -> None:
    assert find_json_object('  {"a": 1}\n') == ({"a": 1}, False)


@pytest.mark.parametrize(
    "text",
    [
        'Here is the JSON:\n```json\n{"a": 1}\n```\nLet me know.',
        'Sure.\n```\n{"a": 1}\n```',
        'The answer is {"a": 1} as requested.',
        'First {not json} then {"a": 1} and {"b": 2}.',
    ],
)
def test_find_json_object_recovers_from_prose_and_fences(text: str) -> None:
    assert find_json_object(text) == ({"a": 1}, True)


def test_find_json_object_keeps_braces_inside_strings() -> None:
    value, recovered = find_json_object('Result: {"note": "a {b} c", "n": {"m": 2}} done')
    assert value == {"note": "a {b} c", "n": {"m": 2}}
    assert recovered


def test_find_json_object_accepts_raw_control_characters_inside_strings() -> None:
    # Seen from vLLM 0.32 + xgrammar with the tiny model: a literal tab inside a constrained string.
    value, recovered = find_json_object('{"response_cleaned": "It was\tgood\nreally"}')
    assert value == {"response_cleaned": "It was\tgood\nreally"}
    assert not recovered


def test_find_json_object_explains_when_there_is_none() -> None:
    with pytest.raises(
        ValueError,
        match=r"not valid JSON \(Expecting value at character 0\).*'I think 2 of the 3 exams passed'",
    ):
        find_json_object("I think 2 of the 3 exams passed")


# ---------------------------------------------------------------------------------------------------------
# Judging a reply


def test_valid_reply_is_accepted_in_schema_order() -> None:
    verdict = judge1(json.dumps(dict(reversed(study1_reply().items()))))
    assert isinstance(verdict, Parsed)
    assert list(verdict.fields) == ["prior_answer", *PROBABILITIES, "knowledge_answer"]
    assert verdict.fields == study1_reply()
    assert not verdict.recovered


def test_reply_in_code_fence_is_accepted_and_marked_recovered() -> None:
    verdict = judge1(f"Here you go:\n```json\n{json.dumps(study1_reply())}\n```")
    assert isinstance(verdict, Parsed)
    assert verdict.recovered
    assert verdict.fields["probability_3"] == 70


def test_unstated_values_stay_null_and_integral_floats_become_integers() -> None:
    verdict = judge1(json.dumps(study1_reply(prior_answer=2.0, knowledge_answer=None)))
    assert isinstance(verdict, Parsed)
    assert verdict.fields["prior_answer"] == 2
    assert type(verdict.fields["prior_answer"]) is int
    assert verdict.fields["knowledge_answer"] is None


@pytest.mark.parametrize("content", ["", "   ", "\n\t ", None])
def test_blank_reply_is_a_failure_even_when_finished(content: str | None) -> None:
    # DeepSeek's JSON mode replaces unreadable output with spaces and still says finish_reason=stop.
    verdict = judge1(content, "stop")  # type: ignore[arg-type]
    assert verdict == AttemptFailure(FailureKind.BLANK, "the reply was blank (finish_reason=stop)")


def test_truncated_reply_names_the_token_limit() -> None:
    verdict = judge1('{"prior_answer": 2, "probability_0": 1', "length")
    assert isinstance(verdict, AttemptFailure)
    assert verdict.kind is FailureKind.TRUNCATED
    assert "finish_reason=length" in verdict.message
    assert '\'{"prior_answer": 2, "probability_0": 1\'' in verdict.message


def test_complete_object_before_the_token_limit_is_still_an_answer() -> None:
    verdict = judge1(json.dumps(study1_reply()) + " and some rambling that was cut of", "length")
    assert isinstance(verdict, Parsed)


def test_invalid_json_failure_quotes_the_reply() -> None:
    verdict = judge1("{'prior_answer': 2}")
    assert isinstance(verdict, AttemptFailure)
    assert verdict.kind is FailureKind.NO_JSON
    assert "not valid JSON" in verdict.message
    assert "{'prior_answer': 2}" in verdict.message


def test_json_that_is_not_an_object_is_a_failure() -> None:
    verdict = judge1("[1, 2, 3]")
    assert verdict == AttemptFailure(
        FailureKind.NOT_OBJECT, "the reply is JSON but not an object: '[1, 2, 3]'"
    )


def test_schema_violation_names_fields_and_values() -> None:
    reply = study1_reply(prior_answer=7, knowledge_answer="maybe", extra=1)
    del reply["probability_1"]
    verdict = judge1(json.dumps(reply))
    assert isinstance(verdict, AttemptFailure)
    assert verdict.kind is FailureKind.SCHEMA
    assert verdict.message.startswith("the JSON does not match the schema: missing properties probability_1")
    assert "unexpected properties extra" in verdict.message
    assert 'knowledge_answer: "maybe" is not allowed' in verdict.message
    assert "and 1 more" in verdict.message  # prior_answer=7, past the listed three


def test_without_validator_the_reply_is_parsed_not_checked() -> None:
    schema = load_schema("study1")
    verdict = judge_reply('{"prior_answer": 9, "other": 1}', "stop", schema, None)
    assert isinstance(verdict, Parsed)
    assert verdict.fields["prior_answer"] == 9
    assert verdict.fields["probability_0"] is None  # absent stays null; extra keys never become columns
    assert "other" not in verdict.fields


# Real vLLM 0.32 bodies, judged against the schema of the request that produced them.


def test_reference_json_schema_without_server_flag_pads_whitespace_to_the_limit() -> None:
    content, finish_reason = reference_reply("chat_response_format_json_schema")
    schema = reference_schema("chat_response_format_json_schema")
    verdict = judge_reply(content, finish_reason, schema, make_validator(schema))
    assert isinstance(verdict, AttemptFailure)
    assert verdict.kind is FailureKind.TRUNCATED


@pytest.mark.parametrize(
    "name",
    [
        "chat_response_format_json_schema_server_nows_1",
        "chat_response_format_json_schema_server_nows_2",
        "chat_response_format_json_schema_server_nows_3",
        "chat_response_format_json_schema_strict",
        "chat_structured_outputs_json_nows",
    ],
)
def test_reference_constrained_replies_are_accepted(name: str) -> None:
    content, finish_reason = reference_reply(name)
    request = name if (REFERENCE / f"{name}.request.json").is_file() else "chat_response_format_json_schema"
    schema = reference_schema(request)
    verdict = judge_reply(content, finish_reason, schema, make_validator(schema))
    assert isinstance(verdict, Parsed), verdict
    assert verdict.fields["answer"] in ("yes", "no")
    assert verdict.fields["n"] in (0, 1, 2, 3)


def test_reference_ignored_guided_json_gives_a_blank_failure() -> None:
    # vLLM 0.32 accepts the old guided_json field with 200 and ignores it; the random model's special
    # tokens are stripped, leaving empty content at the token limit.
    content, finish_reason = reference_reply("chat_guided_json")
    schema = reference_schema("chat_response_format_json_schema")
    verdict = judge_reply(content, finish_reason, schema, make_validator(schema))
    assert verdict == AttemptFailure(FailureKind.BLANK, "the reply was blank (finish_reason=length)")


# ---------------------------------------------------------------------------------------------------------
# Cross-field checks


@pytest.fixture
def percentages() -> SumCheck:
    return SumCheck(fields=PROBABILITIES, total=100, tolerance=1)


@pytest.mark.parametrize("values", [(0, 5, 25, 70), (0, 0, 0, 100), (33, 33, 33, 0), (25, 25, 25, 26)])
def test_sum_check_accepts_within_tolerance(percentages: SumCheck, values: tuple[int, ...]) -> None:
    assert percentages.warning(dict(zip(PROBABILITIES, values, strict=True))) is None


@pytest.mark.parametrize(
    ("values", "total"), [((0, 5, 25, 60), "90"), ((50, 50, 50, 0), "150"), ((33, 33, 32, 0), "98")]
)
def test_sum_check_reports_the_actual_sum(percentages: SumCheck, values: tuple[int, ...], total: str) -> None:
    warning = percentages.warning(dict(zip(PROBABILITIES, values, strict=True)))
    assert warning == f"probability_0+probability_1+probability_2+probability_3 = {total}, expected 100 +/- 1"


def test_sum_check_reports_a_partial_distribution_and_ignores_an_absent_one(percentages: SumCheck) -> None:
    partial = {"probability_0": 10, "probability_1": None, "probability_2": 90, "probability_3": None}
    assert percentages.warning(partial) == "only 2 of 4 values stated (null: probability_1, probability_3)"
    assert percentages.warning(dict.fromkeys(PROBABILITIES)) is None


def test_cross_field_warnings_collects_every_broken_rule(percentages: SumCheck) -> None:
    other = SumCheck(fields=("probability_0", "probability_1"), total=5)
    fields = dict(zip(PROBABILITIES, (0, 5, 25, 60), strict=True))
    assert cross_field_warnings([percentages, other], fields) == [
        "probability_0+probability_1+probability_2+probability_3 = 90, expected 100 +/- 1"
    ]
    assert (
        len(
            cross_field_warnings(
                [percentages, SumCheck(fields=("probability_0", "probability_1"), total=1)], fields
            )
        )
        == 2
    )


def test_sum_check_rejects_a_repeated_field() -> None:
    with pytest.raises(ValueError, match="lists a field twice"):
        SumCheck(fields=("a", "a"), total=1)


# ---------------------------------------------------------------------------------------------------------
# Requests and re-asks


def test_json_schema_backend_sends_strict_response_format() -> None:
    schema = load_schema("study2")
    assert response_format_for(Backend.JSON_SCHEMA, schema, "study2_extraction") == {
        "type": "json_schema",
        "json_schema": {"name": "study2_extraction", "schema": schema, "strict": True},
    }


@pytest.mark.parametrize(
    ("backend", "response_format"), [(Backend.JSON_OBJECT, {"type": "json_object"}), (Backend.PROMPT, None)]
)
def test_the_other_backends_send_no_schema(backend: Backend, response_format: dict[str, str] | None) -> None:
    assert response_format_for(backend, load_schema("study2"), "x") == response_format


def test_json_schema_form_matches_the_reference_request() -> None:
    path = REFERENCE / "chat_response_format_json_schema_strict.request.json"
    if not path.is_file():
        pytest.skip(f"{path} is not present (shared reference bodies)")
    sent = json.loads(path.read_text(encoding="utf-8"))["response_format"]
    ours = response_format_for(
        Backend.JSON_SCHEMA, sent["json_schema"]["schema"], sent["json_schema"]["name"]
    )
    assert ours == sent


def test_format_instructions_are_empty_where_the_server_enforces_the_schema() -> None:
    assert format_instructions(Backend.JSON_SCHEMA, load_schema("study1"), study1_reply()) == ""


@pytest.mark.parametrize("backend", [Backend.JSON_OBJECT, Backend.PROMPT])
def test_format_instructions_carry_json_schema_and_example_where_the_server_does_not(
    backend: Backend,
) -> None:
    schema = load_schema("study1")
    example = study1_reply()
    text = format_instructions(backend, schema, example)
    # DeepSeek requires the word in the prompt; said in lower case outside the schema text itself
    assert "Example of the expected json output:" in text.replace(json.dumps(schema), "")
    assert json.dumps(schema, separators=(",", ":")) in text
    assert json.dumps(example) in text
    assert "null" in text


def test_correction_carries_the_error_and_the_failed_reply() -> None:
    failure = AttemptFailure(FailureKind.SCHEMA, "the JSON does not match the schema: prior_answer: 7 > 3")
    turns = correction_messages(failure, '{"prior_answer": 7}')
    assert turns[0] == {"role": "assistant", "content": '{"prior_answer": 7}'}
    assert turns[1]["role"] == "user"
    assert "prior_answer: 7 > 3" in turns[1]["content"]


def test_correction_after_a_blank_reply_has_no_empty_assistant_turn() -> None:
    turns = correction_messages(AttemptFailure(FailureKind.BLANK, "the reply was blank"), "   ")
    assert [turn["role"] for turn in turns] == ["user"]
    assert "the reply was blank" in turns[0]["content"]


def test_correction_caps_a_runaway_reply() -> None:
    turns = correction_messages(AttemptFailure(FailureKind.NO_JSON, "not JSON"), "x" * 5000)
    assert len(turns[0]["content"]) < 700
    assert turns[0]["content"].endswith("[...]")


def test_correction_after_a_cut_off_reply_does_not_echo_it() -> None:
    failure = AttemptFailure(FailureKind.TRUNCATED, "the reply was cut off at the token limit: '{\"a\"'...")
    turns = correction_messages(failure, '{"a"' + "\t" * 500)
    assert [turn["role"] for turn in turns] == ["user"]
    assert failure.message in turns[0]["content"]
