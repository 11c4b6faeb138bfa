"""The committed nrp stack sends the researchers' requests by default, model by model.

tests/unit/worker/test_researchers_exp1.py and test_researchers_exp2.py show that the worker, given the
researchers' study files and a model's stop strings, sends their requests byte for byte. This closes the
loop on the stack side: the command lines the nrp stack plans for each of its six models name those study
files and carry exactly the parameters `../shared/reference/researchers/models.json` records for that model
(their own `src/utils/model_config.py`, rendered by their code), and nothing that would change the body.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from grace_infra.config.stack_config import Experiment, GraceConfig, Study
from grace_infra.planning.matrix import plan_jobs
from grace_infra.planning.study_bundle import load_study_bundle
from tests.support.ci import unavailable
from tests.unit.worker.support import RESEARCHERS_REFERENCE
from worker.studies.definition import load_study

from .support import base_config

# Their max_tokens per study (src/query_study1_exp1.py:79,99; src/query_study2_exp1.py:80).
MAX_TOKENS_KEY = {Study.STUDY1: "max_tokens_text", Study.STUDY2: "max_tokens_structured"}
# Flags that would change what a researchers' request carries or how it is scored.
CHAT_ONLY_FLAGS = {
    "--reasoning-effort", "--max-tokens", "--logprobs", "--method", "--tokens", "--answer-prefix",
    "--reasoning-format", "--reasoning-mode", "--reasoning-max-tokens", "--variants",
}  # fmt: skip


def reference_models() -> dict[str, dict[str, Any]]:
    path = RESEARCHERS_REFERENCE / "models.json"
    if not path.is_file():
        unavailable(f"{path} is not present: the researchers' model parameters live there")
    models: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["models"]
    return models


def tasks_by_model() -> dict[str, list[list[str]]]:
    """Every worker command line the nrp stack plans, by the model it runs on."""
    config = GraceConfig.parse(base_config())
    tasks: dict[str, list[list[str]]] = {}
    for job in plan_jobs(config, load_study_bundle(config)):
        argvs = [list(task) for task in job.tasks] if job.tasks else [list(job.args)]
        tasks.setdefault(job.model.key, []).extend(argvs)
    return tasks


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


@pytest.mark.parametrize("study", list(Study))
def test_every_model_of_the_nrp_stack_sends_its_researchers_parameters(study: Study) -> None:
    models = reference_models()
    config = GraceConfig.parse(base_config())
    served = {model.key: model for model in config.served_models()}
    planned = tasks_by_model()
    assert {served[key].hf_repo for key in planned} == set(models)  # all six, by their Hugging Face ids
    for key, argvs in planned.items():
        theirs = models[served[key].hf_repo]
        (query,) = [a for a in argvs if a[0] == "query" and flag(a, "--input").endswith(f"{study}.csv")]
        study_file = flag(query, "--study")
        assert study_file == f"/etc/grace/studies/researchers/{study}.yaml", key
        stop = flag(query, "--stop")
        assert (json.loads(stop) if stop is not None else None) == theirs["stop"], key
        assert float(flag(query, "--temperature") or "nan") == theirs["temperature_text"], key
        assert not CHAT_ONLY_FLAGS & set(query), key
        # max_tokens is the study file's, sent as is: the worker reads it from the file the flag names.
        definition = load_study(f"researchers/{study}")
        assert definition.generation.max_tokens == theirs[MAX_TOKENS_KEY[study]], key
        (probs,) = [a for a in argvs if a[0] == "probs" and flag(a, "--input").endswith(f"{study}.csv")]
        assert flag(probs, "--study") == study_file
        assert not CHAT_ONLY_FLAGS & set(probs), key
        assert "--temperature" not in probs, key


def test_the_planned_experiments_are_the_researchers_two_and_the_coding() -> None:
    config = GraceConfig.parse(base_config())
    assert set(config.experiments.experiments) == {Experiment.EXP1, Experiment.EXP2, Experiment.EXTRACTION}
    assert {model.design.value for model in config.served_models()} == {"researchers"}
