"""A pydantic ValidationError reaches a user through one formatter (worker.errors.validation_problem), in
both packages, and pydantic's "Value error, " prefix never reaches them: a validator's sentence is shown as
written.
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError, field_validator, model_validator

from grace_infra.config.stack_config import ConfigError, GraceConfig
from tests.unit.infra.support import base_config
from worker import cli
from worker.errors import PYDANTIC_VALUE_ERROR_PREFIX, InputError, validation_problem
from worker.pipelines.probs import probs_config
from worker.studies import probability_section
from worker.studies.definition import load_study

REPO = Path(__file__).resolve().parents[2]
PREFIX = PYDANTIC_VALUE_ERROR_PREFIX


class _Model(BaseModel):
    low: int = 0
    high: int = 1

    @field_validator("low")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("low must not be negative")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> _Model:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self


def _error(**values: int) -> ValidationError:
    with pytest.raises(ValidationError) as raised:
        _Model(**values)
    return raised.value


def test_the_formatter_shows_a_validators_own_sentence() -> None:
    assert PREFIX in str(_error(low=-1))  # what pydantic itself says
    field = validation_problem(_error(low=-1))
    assert (field.location, field.field, field.key, field.value) == (("low",), "low", "low", -1)
    assert field.message == "low must not be negative"
    assert field.for_flag("--low") == "--low -1: low must not be negative."
    whole = validation_problem(_error(low=2))
    assert (whole.location, whole.field, whole.message) == ((), "", "low must not exceed high")


def test_pydantics_own_messages_are_kept() -> None:
    problem = validation_problem(_error(high="x"))  # type: ignore[arg-type]
    assert problem.kind == "int_parsing"
    assert problem.message.startswith("Input should be a valid integer")


def test_a_study_files_probability_rule_reads_as_written() -> None:
    study = load_study("chat/study2")
    raw = copy.deepcopy(study.probability)
    assert raw is not None
    raw["questions"][0]["options"][0]["label"] = "not a label"
    with pytest.raises(InputError) as raised:
        probability_section.probability_section(study.model_copy(update={"probability": raw}))
    message = str(raised.value)
    assert PREFIX not in message
    assert "probability.questions.0.options.0.label: option label 'not a label' must be letters" in message


def test_a_probs_setting_refused_by_its_validator_reads_as_written() -> None:
    with pytest.raises(ValidationError) as raised:
        probs_config.ProbsConfig(method="chat-top-logprobs")  # type: ignore[arg-type]
    assert validation_problem(raised.value).for_flag("--method") == (
        "--method 'chat-top-logprobs': --method chat-top-logprobs is chosen automatically when /tokenize "
        "is missing."
    )


def test_a_command_line_refused_by_a_cross_field_rule_reads_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("a\n1\n", encoding="utf-8")
    common = ["--input", str(source), "--study", "chat/study2", "--model-name", "m", "--metrics-port", "0"]
    probs = ["probs", "--output", str(tmp_path / "out.csv"), "--model-endpoint", "http://x/v1", *common]
    assert cli.main([*probs, "--reasoning-mode", "direct"]) == 2
    endpoint = ["query", "--output", str(tmp_path / "q.csv"), "--model-endpoint", "ftp://x", *common]
    assert cli.main(endpoint) == 2
    probs_line, query_line = capsys.readouterr().err.splitlines()
    assert probs_line == (
        "worker probs: error: --reasoning-mode needs --reasoning-format (the model's reasoning format)."
    )
    assert query_line.startswith(
        "worker query: error: --model-endpoint must start with http:// or https://, got 'ftp://x'."
    )


def test_the_stacks_configuration_errors_read_as_written() -> None:
    raw = base_config()
    raw["namespace"] = {**raw.get("namespace", {}), "name": "Not_A_Namespace"}
    with pytest.raises(ConfigError) as raised:
        GraceConfig.parse(raw)
    assert PREFIX not in str(raised.value)
    assert "is not a valid Kubernetes namespace name" in str(raised.value)


def _reads_validation_records(path: Path) -> bool:
    """Whether a module calls `.errors()` (pydantic's error records) itself."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "errors"
        for node in ast.walk(tree)
    )


def test_only_the_one_formatter_reads_pydantics_error_records() -> None:
    readers = sorted(
        str(path.relative_to(REPO))
        for package in ("worker", "grace_infra")
        for path in (REPO / package).rglob("*.py")
        if _reads_validation_records(path)
    )
    assert readers == ["worker/errors.py"]


@pytest.mark.parametrize(
    "argv",
    [
        ["query", "--model-endpoint", "ftp://x"],
        ["probs", "--model-endpoint", "ftp://x"],
    ],
    ids=["query", "probs"],
)
def test_a_flag_error_ends_in_one_full_stop(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Our validators' sentences end in a full stop already; the command line must not add a second.
    csv = tmp_path / "in.csv"
    csv.write_text("a\n1\n", encoding="utf-8")
    common = ["--input", str(csv), "--output", str(tmp_path / "out.csv"), "--model-name", "m"]
    code = cli.main([*argv, *common, "--study", "chat/study2"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert err.endswith("got 'ftp://x'."), err
