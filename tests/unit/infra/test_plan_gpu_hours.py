"""The GPU-hour plan: the numbers of a small hand-computed case, where the request counts
come from, and that render's plan.json and stdout carry the matrix and the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from grace_infra.commands.plan_report import build_plan, summary
from grace_infra.config.stack_config import Design, Experiment, GraceConfig, Study
from grace_infra.planning.gpu_hours import format_gpu_hour_table, gpu_hour_plan
from grace_infra.planning.study_bundle import StudyBundle, load_study_bundle, requests_per_row

from .support import MIXED_MODELS, PROJECT_ROOT, base_config

# Study 1 as shipped (its five probability questions per row: one template asked for k in 0..3 plus the
# knowledge question), asked as ONE exp1 question with one greedy sample per row.
ONE_TURN = PROJECT_ROOT / "tests" / "fixtures" / "studies" / "study1_one_turn.yaml"
STUDY_WITH_FIVE_QUESTIONS = {
    **yaml.safe_load((PROJECT_ROOT / "jobs" / "studies" / "chat" / "study1.yaml").read_text()),
    "prompt": yaml.safe_load(ONE_TURN.read_text())["prompt"],
    "sampling": {"temperature": 0.0, "samples_per_row": 1},
}


def small_case(tmp_path: Path, **jobs: Any) -> tuple[GraceConfig, StudyBundle]:
    """gemma-2-2b (1 GPU, 20 req/s, 600 s load) and gemma-2-27b (2 GPUs, overridden to 5 req/s and
    1500 s load), study1 with 100 rows, exp1 + exp2 (+ extraction when asked), a one-day campaign."""
    (tmp_path / "studies" / "chat").mkdir(parents=True)
    (tmp_path / "studies" / "chat" / "study1.yaml").write_text(yaml.safe_dump(STUDY_WITH_FIVE_QUESTIONS))
    experiments = ["exp1", "exp2", *(["structured"] if jobs.pop("extraction", False) else [])]
    raw = base_config(
        models=[
            {"key": "gemma-2-2b", "throughputRps": 20, "loadBudgetS": 600, "servingMode": "persistent"},
            {"key": "gemma-2-27b", "throughputRps": 5, "loadBudgetS": 1500, "servingMode": "job"},
        ],
        experiments={"studies": ["study1"], "experiments": experiments, "design": "chat"},
        plan={"campaignDays": 1, "studyRows": {"study1": 100}},
        jobs=jobs,
    )
    config = GraceConfig.parse(raw)
    return config, load_study_bundle(config, jobs_dir=tmp_path)


def test_hand_computed_case(tmp_path: Path) -> None:
    config, bundle = small_case(tmp_path)
    plan = gpu_hour_plan(config, bundle)
    small, large = plan.models
    # requests = 100 rows x (1 exp1 + 5 exp2) = 600 per model
    assert small.requests == large.requests == 600
    assert small.requests_by_experiment == {"exp1": 100, "exp2": 500}
    # gemma-2-2b: busy 600/20 s = 1/120 h; job 1 x (600 s + 30 s) = 0.175 h; persistent 24 h
    assert small.busy_wall_hours == pytest.approx(1 / 120)
    assert small.job_gpu_hours == pytest.approx(0.175)
    assert small.persistent_gpu_hours == pytest.approx(24.0)
    assert small.persistent_idle_gpu_hours == pytest.approx(24 - 1 / 120)
    # gemma-2-27b: busy 600/5 s = 1/30 h; job 2 x (1500 s + 120 s) = 0.9 h; persistent 2 x 24 = 48 h
    assert large.job_gpu_hours == pytest.approx(0.9)
    assert large.persistent_gpu_hours == pytest.approx(48.0)
    assert large.persistent_idle_gpu_hours == pytest.approx(48 - 2 / 30)
    assert plan.total_gpus == 3
    assert plan.total_requests == 1200
    assert plan.total_job_gpu_hours == pytest.approx(1.075)
    assert plan.total_persistent_gpu_hours == pytest.approx(72.0)
    # as configured: gemma-2-2b persistent (24) + gemma-2-27b job (0.9)
    assert plan.total_configured_gpu_hours == pytest.approx(24.9)
    totals = plan.to_json()["totals"]
    assert totals == {
        "gpus": 3,
        "requests": 1200,
        "jobGpuHours": 1.1,
        "persistentGpuHours": 72.0,
        "persistentIdleGpuHours": 71.9,
        "configuredGpuHours": 24.9,
        "configuredGpuHoursAtBudget": 24.9,  # measured throughputs: requests/s, whatever the replies' length
    }


def test_a_server_busier_than_the_campaign_is_up_as_long_as_it_works(tmp_path: Path) -> None:
    config, bundle = small_case(tmp_path)
    slow = config.model_copy(update={"plan": config.plan.model_copy(update={"campaign_days": 0.001})})
    small = gpu_hour_plan(slow, bundle).models[0]
    assert small.persistent_gpu_hours == pytest.approx(small.job_gpu_hours)
    assert small.persistent_idle_gpu_hours == pytest.approx(600 / 3600)  # only the load


def test_extraction_counts_on_the_one_extractor_only_without_an_external_endpoint(tmp_path: Path) -> None:
    config, bundle = small_case(tmp_path / "own", extraction=True)
    own = gpu_hour_plan(config, bundle)
    # gemma-2-2b (the only persistent model) codes BOTH models' 100 exp1 rows; gemma-2-27b codes none.
    assert own.models[0].requests_by_experiment == {"exp1": 100, "exp2": 500, "structured": 200}
    assert own.models[1].requests_by_experiment == {"exp1": 100, "exp2": 500, "structured": 0}
    assert own.external_extraction_requests == 0

    config, bundle = small_case(
        tmp_path / "ext", extraction=True, deepseekEndpoint="https://api.deepseek.com/v1"
    )
    external = gpu_hour_plan(config, bundle)
    assert external.models[0].requests == 600
    assert external.external_extraction_requests == 200  # 100 rows x 2 models


def test_sampled_requests_are_counted_for_exp1_and_extraction_not_for_scoring(tmp_path: Path) -> None:
    (tmp_path / "studies" / "chat").mkdir(parents=True)
    sampled = {**STUDY_WITH_FIVE_QUESTIONS, "sampling": {"temperature": 0.3, "samples_per_row": 5}}
    (tmp_path / "studies" / "chat" / "study1.yaml").write_text(yaml.safe_dump(sampled))
    raw = base_config(
        models=[{"key": "gemma-2-2b"}, {"key": "gemma-2-9b"}],
        experiments={"studies": ["study1"], "design": "chat"},
        plan={"studyRows": {"study1": 100}},
    )
    config = GraceConfig.parse(raw)
    plan = gpu_hour_plan(config, load_study_bundle(config, jobs_dir=tmp_path))
    other, coder = plan.models
    assert coder.model == "gemma-2-9b"  # the larger persistent model codes for both
    # exp1: 100 rows x 5 samples; exp2: 100 rows x 5 questions, never repeated; extraction: every sample
    # of both models, on the one coder.
    assert coder.requests_by_experiment == {"exp1": 500, "exp2": 500, "structured": 1000}
    assert other.requests_by_experiment == {"exp1": 500, "exp2": 500, "structured": 0}
    assert plan.sampling["chat/study1"]["samplesPerRow"] == 5
    # The stack's override wins over the study file.
    raw["jobs"] = {"sampling": {"samplesPerRow": 2}}
    config = GraceConfig.parse(raw)
    plan = gpu_hour_plan(config, load_study_bundle(config, jobs_dir=tmp_path))
    assert plan.models[1].requests_by_experiment == {"exp1": 200, "exp2": 500, "structured": 400}
    assert plan.sampling["chat/study1"]["source"] == "jobs/studies/chat/study1.yaml + grace:jobs.sampling"


def test_the_nrp_plan_counts_the_researchers_five_samples() -> None:
    config = GraceConfig.parse(base_config())
    plan = gpu_hour_plan(config, load_study_bundle(config))
    gemma = next(m for m in plan.models if m.model == "gemma-2-2b")
    # 300 + 2,424 rows, 5 samples each at 0.3 (Study 1 sends 2 independent requests); exp2 scores 5 and 1
    # questions per row, once.
    assert gemma.requests_by_experiment["exp1"] == (300 * 2 + 2424) * 5
    assert gemma.requests_by_experiment["exp2"] == 300 * 5 + 2424 * 1
    coder = next(m for m in plan.models if m.model == "gemma-2-27b")
    assert coder.requests_by_experiment["structured"] == (300 + 2424) * 5 * 6  # all six models' replies
    assert gemma.requests_by_experiment["structured"] == 0
    # In the researchers' design gpt-oss reads the raw prompts like every model: no reasoning to sample.
    gpt_oss = next(m for m in plan.models if m.model == "gpt-oss-20b")
    assert gpt_oss.requests_by_experiment == gemma.requests_by_experiment
    assert gpt_oss.planned_reasoning_tokens == 0
    assert {s["samplesPerRow"] for s in plan.sampling.values()} == {5}
    assert {s["temperature"] for s in plan.sampling.values()} == {0.3}


def test_request_counts_come_from_the_study_file_or_the_published_design(tmp_path: Path) -> None:
    _, bundle = small_case(tmp_path)
    counted = requests_per_row(Design.CHAT, Study.STUDY1, bundle)
    assert counted.counts[Experiment.EXP2] == 5
    assert counted.source == "jobs/studies/chat/study1.yaml"
    fallback = requests_per_row(Design.CHAT, Study.STUDY2, StudyBundle())
    assert fallback.counts == {Experiment.EXP1: 1, Experiment.EXP2: 3, Experiment.EXTRACTION: 1}
    assert fallback.source == "default"


def test_the_chat_design_asks_five_and_three_questions_per_row() -> None:
    config = GraceConfig.parse(base_config(experiments={"design": "chat"}))
    bundle = load_study_bundle(config)
    counts = {study: requests_per_row(Design.CHAT, study, bundle).counts for study in Study}
    assert counts[Study.STUDY1][Experiment.EXP2] == 5  # 4 states + knowledge
    assert counts[Study.STUDY2][Experiment.EXP2] == 3  # frame, assessment, utterance
    # Experiment 1: Study 1 is a conversation of three questions, one request each; Study 2 asks one.
    assert counts[Study.STUDY1][Experiment.EXP1] == 3
    assert counts[Study.STUDY2][Experiment.EXP1] == 1


def test_the_researchers_design_asks_their_requests_per_row() -> None:
    bundle = load_study_bundle(GraceConfig.parse(base_config()))
    counts = {study: requests_per_row(Design.RESEARCHERS, study, bundle).counts for study in Study}
    # Their Study 1 sends two independent requests per row (quantity, knowledge) and scores four state
    # questions and the knowledge question; Study 2 sends one request and scores one question (8 options).
    assert counts[Study.STUDY1] == {Experiment.EXP1: 2, Experiment.EXP2: 5, Experiment.EXTRACTION: 1}
    assert counts[Study.STUDY2] == {Experiment.EXP1: 1, Experiment.EXP2: 1, Experiment.EXTRACTION: 1}


def test_rows_of_the_real_study_csvs_match_the_published_counts() -> None:
    data = PROJECT_ROOT.parent / "shared" / "data"
    if not (data / "study1.csv").is_file():
        pytest.skip("../shared/data is not present")
    for study, expected in (("study1", 300), ("study2", 2424)):
        config = GraceConfig.parse(
            base_config(experiments={"inputFiles": {study: str(data / f"{study}.csv")}})
        )
        assert load_study_bundle(config).input_rows[Study(study)] == expected


def test_render_plan_has_the_matrix_and_gpu_hours_and_prints_both() -> None:
    config = GraceConfig.parse(base_config(models=MIXED_MODELS))
    plan = build_plan(config, findings=[])
    assert len(plan["matrix"]) == 33
    llama = next(m for m in plan["matrix"] if m["job"] == "matrix-llama-3-70b")
    assert llama["sidecar"] is True
    assert len(llama["cells"]) == 4  # exp1 and exp2; its replies are coded by the one extractor
    assert {m.get("coder") for m in plan["matrix"] if m["kind"] == "extraction"} == {"gemma-2-27b"}
    assert plan["gpuHours"]["totals"]["gpus"] == 11
    text = summary(plan)
    assert "structured-output-study2-gpt-oss-120b" in text
    assert "persistent GPU-h" in text
    assert format_gpu_hour_table(plan["gpuHours"]) in text
    nrp = plan["gpuHours"]
    # The idle share of all-persistent serving is what job mode saves: it dwarfs the work itself.
    assert nrp["totals"]["persistentIdleGpuHours"] > 0.98 * nrp["totals"]["persistentGpuHours"]


def test_the_plans_first_line_is_what_the_stack_costs_and_what_job_serving_saves() -> None:
    """First key of plan.json and first line of render's summary, for a stack holding persistent servers
    and for one serving everything in its Jobs."""
    mixed = build_plan(GraceConfig.parse(base_config(models=MIXED_MODELS)), findings=[])
    totals = mixed["gpuHours"]["totals"]
    configured, job = totals["configuredGpuHours"], totals["jobGpuHours"]
    assert next(iter(mixed)) == "headline"
    at_budget = totals["configuredGpuHoursAtBudget"]
    assert mixed["headline"] == (
        f"GPU-hours: {configured:,.1f} as configured ({at_budget:,.1f} if every reply spent its whole token "
        f"budget); serving every model in its Jobs would cost {job:,.1f} and save {configured - job:,.1f}."
    )
    assert at_budget >= configured
    assert configured > 2000  # five servers held for the 14-day campaign
    assert summary(mixed).splitlines()[0] == mixed["headline"]
    all_job = build_plan(GraceConfig.parse(base_config()), findings=[])
    job_hours = all_job["gpuHours"]["totals"]["jobGpuHours"]
    assert all_job["headline"].startswith(f"GPU-hours: {job_hours:,.1f} as configured (")
    assert "every model is served in its Jobs" in all_job["headline"]
