"""Experiment Jobs: the matrix as Kubernetes Jobs that order themselves without blocking
`pulumi up`, the studies ConfigMap, and job serving mode.

Renders run the whole program under Pulumi mocks (1-3 s each): the nrp stack comes from conftest's
session fixtures, the two variants here are module-scoped, and everything else calls the pure builders.
"""

from __future__ import annotations

import json
import re
import shutil
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from grace_infra import constants as c
from grace_infra.commands.offline import OfflineRun
from grace_infra.components.experiment_job import TYPE_TOKEN
from grace_infra.config.catalog import GPT_OSS_REASONING_TOKENS, HARMONY_FINAL_PREFIX
from grace_infra.config.quantities import parse_quantity
from grace_infra.config.stack_config import Experiment, GraceConfig, Study
from grace_infra.errors import ConfigError
from grace_infra.manifests import vllm_server
from grace_infra.manifests.monitoring import POD_MONITOR_NAME
from grace_infra.manifests.worker_job import job_manifest
from grace_infra.planning.matrix import job_name, model_endpoint, output_path, plan_experiments, plan_jobs
from grace_infra.planning.study_bundle import STUDIES_ROOT, StudyBundle, load_study_bundle
from worker import contract

from .support import MIXED_MODELS, PROJECT_ROOT, assert_valid_k8s, render_stack
from .support import base_config as stack_config

DEEPSEEK = "https://api.deepseek.com/v1"
PERSISTENT_NRP = ["gemma-2-2b", "gemma-2-9b", "gemma-2-27b", "gpt-oss-20b", "gpt-oss-120b"]
STUDIES = ("study1", "study2")


def base_config(**overrides: Any) -> dict[str, Any]:
    """The nrp stack's config with MIXED_MODELS unless `models` is overridden."""
    return stack_config(**{"models": MIXED_MODELS, **overrides})


def jobs_of(run: OfflineRun) -> dict[str, dict[str, Any]]:
    """The experiment Jobs (not the weight downloads)."""
    experiment = {c.COMPONENT_QUERY_JOB, c.COMPONENT_EXTRACTION_JOB}
    return {
        m["metadata"]["name"]: m
        for m in run.manifests()
        if m["kind"] == "Job" and m["metadata"]["labels"][c.LABEL_COMPONENT] in experiment
    }


def pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def worker(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = [x for x in pod(job)["containers"] if x["name"] == c.WORKER_CONTAINER_NAME]
    return container


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def job_urn(run: OfflineRun, name: str) -> str:
    (resource,) = [r for r in run.of_type("kubernetes:batch/v1:Job") if r.inputs["metadata"]["name"] == name]
    return resource.urn


def configmap_tasks(run: OfflineRun, job: str) -> list[list[str]]:
    """The `run --tasks` list of the job-mode Job named `job`, from the studies ConfigMap."""
    data = run.manifest("ConfigMap", c.STUDIES_CONFIGMAP)["data"]
    return json.loads(data[f"tasks.{job}.json"])


@pytest.fixture(scope="module")
def all_job_mode_run() -> OfflineRun:
    """Every model in job mode, monitoring on. No extraction: with every server inside its own Job there
    is no one coder every model's extraction could reach (config/stack_config.py refuses it without an
    endpoint)."""
    raw = base_config()
    raw["models"] = [{**m, "servingMode": "job"} for m in raw["models"]]
    raw["experiments"] = {"experiments": ["exp1", "exp2"]}
    raw["monitoring"] = {"enabled": True}
    return render_stack(raw)


def config_of(**overrides: Any) -> GraceConfig:
    return GraceConfig.parse(base_config(**overrides))


def chat_jobs() -> dict[str, list[str]]:
    """The worker command line of every Job of the nrp stack with MIXED_MODELS, every model running the
    chat design (planned, not rendered)."""
    raw = base_config(models=MIXED_MODELS)
    raw["experiments"] = {**raw["experiments"], "design": "chat"}
    config = GraceConfig.parse(raw)
    return {job.name: list(job.args) for job in plan_jobs(config, load_study_bundle(config))}


# --- the matrix -----------------------------------------------------------------------------------


def test_nrp_matrix_renders_every_job_by_name(mixed_run: OfflineRun) -> None:
    # nrp: five persistent models get one Job per cell; llama-3-70b (job mode) one Job for its exp1 and
    # exp2 share, and its extraction Jobs of its own, talking to the one coder like everyone else's.
    expected = {
        name
        for study in STUDIES
        for model in PERSISTENT_NRP
        for name in (f"{study}-exp1-{model}", f"{study}-exp2-{model}", f"structured-output-{study}-{model}")
    } | {"matrix-llama-3-70b", *(f"structured-output-{study}-llama-3-70b" for study in STUDIES)}
    assert set(jobs_of(mixed_run)) == expected
    assert len(expected) == 33
    assert len(mixed_run.of_type(TYPE_TOKEN)) == 33


def test_job_names_and_output_paths_follow_the_original_manifests() -> None:
    assert job_name(Study.STUDY1, Experiment.EXP1, "gemma-2-2b") == "study1-exp1-gemma-2-2b"
    assert job_name(Study.STUDY2, Experiment.EXP2, "gpt-oss-20b") == "study2-exp2-gpt-oss-20b"
    assert (
        job_name(Study.STUDY1, Experiment.EXTRACTION, "gemma-2-9b") == "structured-output-study1-gemma-2-9b"
    )
    assert output_path(Study.STUDY1, Experiment.EXP1, "gemma-2-2b") == PurePosixPath(
        "/output/exp1/gemma-2-2b/study1_responses.csv"
    )
    assert str(output_path(Study.STUDY1, Experiment.EXP2, "gemma-2-2b")) == (
        "/output/exp2/gemma-2-2b/study1_probabilities.csv"
    )
    assert str(output_path(Study.STUDY2, Experiment.EXTRACTION, "llama-3-70b")) == (
        "/output/structured/llama-3-70b/study2_structured.csv"
    )


def test_every_job_writes_only_its_own_files(mixed_run: OfflineRun) -> None:
    # CephFS: no two Jobs may write the same file.
    outputs: list[str] = []
    for job in jobs_of(mixed_run).values():
        argvs = [worker(job)["args"]]
        if worker(job)["args"][0] == "run":
            argvs = configmap_tasks(mixed_run, job["metadata"]["name"])
        outputs += [argv[argv.index("--output") + 1] for argv in argvs]
    assert len(outputs) == len(set(outputs)) == 36  # 6 models x 2 studies x 3 experiments


# --- command lines --------------------------------------------------------------------------------


def test_exp1_command_is_exact(mixed_run: OfflineRun) -> None:
    args = worker(jobs_of(mixed_run)["study1-exp1-gemma-2-2b"])["args"]
    # The lifecycle flags close every command line (their meaning: tests/unit/infra/test_lifecycle.py).
    assert args[-3:-1] == ["--supersede", "--plan-digest"]
    assert re.fullmatch("[0-9a-f]{16}", args[-1])
    assert args[:-3] == [
        "query",
        "--input", "/etc/grace/inputs/study1.csv",  # the nrp stack ships the CSVs in the ConfigMap
        "--output", "/output/exp1/gemma-2-2b/study1_responses.csv",
        "--model-endpoint", "http://vllm-gemma-2-2b:8000/v1",
        "--model-name", "gemma-2-2b",
        "--batch-size", "64",
        "--timeout", "120",
        "--max-retries", "5",
        "--study", "/etc/grace/studies/researchers/study1.yaml",
        "--wait-timeout", "3600",
        "--metrics-port", "9090",
        # The study file's sampling (the researchers' 0.3; 5 samples and seed 42 ours), explicit on the Job.
        "--temperature", "0.3",
        "--samples", "5",
        "--seed", "42",
        # The researchers' design sends their stop strings for the model's family.
        "--stop", '["<end_of_turn>"]',
    ]  # fmt: skip


def test_the_researchers_design_sends_their_body_and_their_scoring(mixed_run: OfflineRun) -> None:
    jobs = jobs_of(mixed_run)
    gpt_oss = worker(jobs["study1-exp1-gpt-oss-20b"])["args"]
    # gpt-oss: no stop strings (their entries set none), no reasoning effort, their max_tokens as set.
    assert not {"--stop", "--reasoning-effort", "--max-tokens"} & set(gpt_oss)
    for name in ("study1-exp2-gpt-oss-20b", "study2-exp2-gemma-2-2b"):
        args = worker(jobs[name])["args"]
        # Their scoring rule: the study file's joint-completion questions, which no chat flag changes.
        assert not [
            flag
            for flag in args
            if flag.startswith(
                ("--logprobs", "--method", "--tokens", "--reasoning", "--answer-prefix", "--temperature")
            )
        ]
    llama_tasks = configmap_tasks(mixed_run, "matrix-llama-3-70b")
    exp1 = next(task for task in llama_tasks if task[0] == "query")
    assert exp1[exp1.index("--stop") + 1] == '["<|eot_id|>", "<|end_of_text|>"]'


def test_a_model_can_run_the_chat_design_beside_the_researchers(tmp_path: Path) -> None:
    config = config_of(
        models=[{"key": "gemma-2-2b", "servingMode": "persistent"},
                {"key": "gemma-2-9b", "servingMode": "persistent", "design": "chat"}],
        experiments={"studies": ["study1"], "experiments": ["exp1", "exp2", "structured"]},
        jobs={"extractor": "gemma-2-9b"},
    )  # fmt: skip
    bundle = load_study_bundle(config)
    jobs = {job.name: list(job.args) for job in plan_jobs(config, bundle)}

    def study_of(name: str) -> str:
        return jobs[name][jobs[name].index("--study") + 1]

    assert study_of("study1-exp1-gemma-2-2b") == "/etc/grace/studies/researchers/study1.yaml"
    assert study_of("study1-exp1-gemma-2-9b") == "/etc/grace/studies/chat/study1.yaml"
    # The one coder codes each model's replies with that model's design's extraction section and schema.
    for model, design in (("gemma-2-2b", "researchers"), ("gemma-2-9b", "chat")):
        extract = jobs[f"structured-output-study1-{model}"]
        assert study_of(f"structured-output-study1-{model}") == f"/etc/grace/studies/{design}/study1.yaml"
        assert extract[extract.index("--schema") + 1] == f"/etc/grace/schemas/{design}/study1_schema.json"
    assert {"studies/researchers/study1.yaml", "studies/chat/study1.yaml"} <= {
        str(path.relative_to(STUDIES_ROOT)) for path in bundle.files
    }


def test_the_stack_overrides_the_study_sampling_for_exp1_only() -> None:
    config = config_of(
        experiments={"studies": ["study1"], "models": ["gemma-2-2b"]},
        jobs={"sampling": {"temperature": 0, "samplesPerRow": 1}, "extractor": "gemma-2-27b"},
    )
    jobs = {job.name: job.args for job in plan_jobs(config, load_study_bundle(config))}
    exp1 = jobs["study1-exp1-gemma-2-2b"]
    assert exp1[exp1.index("--temperature") :][:6] == ("--temperature", "0", "--samples", "1", "--seed", "42")
    # Scoring and coding sample nothing: neither gets the sampling flags.
    for name in ("study1-exp2-gemma-2-2b", "structured-output-study1-gemma-2-2b"):
        assert "--samples" not in jobs[name]
        assert "--temperature" not in jobs[name]


def test_exp2_command_reads_at_the_harmony_answer_for_gpt_oss() -> None:
    jobs = chat_jobs()
    args = jobs["study2-exp2-gpt-oss-20b"]
    assert args[:2] == ["probs", "--input"]
    assert args[args.index("--output") + 1] == "/output/exp2/gpt-oss-20b/study2_probabilities.csv"
    assert args[args.index("--logprobs") + 1] == "20"
    # After-reasoning generates the analysis, so it samples like exp1: the study's settings, explicit.
    assert args[args.index("--temperature") :][:6] == [
        "--temperature",
        "0.3",
        "--samples",
        "5",
        "--seed",
        "42",
    ]
    assert args[args.index("--method") + 1] == "auto"
    # After its own reasoning by default, with the reasoning's budget and the effort set explicitly.
    assert args[args.index("--reasoning-format") + 1] == "harmony"
    assert args[args.index("--reasoning-mode") + 1] == "after-reasoning"
    assert args[args.index("--reasoning-max-tokens") + 1] == str(GPT_OSS_REASONING_TOKENS)
    assert args[args.index("--reasoning-effort") + 1] == "low"
    assert "--answer-prefix" not in args  # the format's own final-channel header follows the reasoning
    gemma = jobs["study2-exp2-gemma-2-2b"]
    assert not [flag for flag in gemma if flag.startswith(("--answer-prefix", "--reasoning"))]
    # Scoring fixed options samples nothing: no sampling flags (probs sends its own temperature 1.0).
    assert not {"--temperature", "--samples", "--seed"} & set(gemma)


def test_chat_exp1_sets_the_reasoning_effort_of_reasoning_models_only() -> None:
    jobs = chat_jobs()
    gpt_oss = jobs["study1-exp1-gpt-oss-120b"]
    assert gpt_oss[gpt_oss.index("--reasoning-effort") + 1] == "low"
    assert "--reasoning-effort" not in jobs["study1-exp1-gemma-2-2b"]
    assert "--stop" not in gpt_oss + jobs["study1-exp1-gemma-2-2b"]  # the chat template ends each turn


def test_the_stack_chooses_the_direct_mode_and_the_effort_per_model() -> None:
    config = config_of(
        models=[
            {
                "key": "gpt-oss-20b",
                "exp2ReasoningMode": "direct",
                "reasoningEffort": "high",
                "servingMode": "persistent",
            }
        ],
        experiments={"studies": ["study2"], "experiments": ["exp1", "exp2"], "models": ["gpt-oss-20b"],
                     "design": "chat"},
    )  # fmt: skip
    exp1, exp2 = sorted((job for job in plan_jobs(config, load_study_bundle(config))), key=lambda j: j.name)
    assert exp1.args[exp1.args.index("--reasoning-effort") + 1] == "high"
    assert exp2.args[exp2.args.index("--reasoning-mode") + 1] == "direct"
    # direct: read at the final-channel header right after the generation prompt (no reasoning)
    assert exp2.args[exp2.args.index("--answer-prefix") + 1] == HARMONY_FINAL_PREFIX
    assert "--reasoning-max-tokens" not in exp2.args


def test_chat_reasoning_models_get_room_to_think_before_answering() -> None:
    # gpt-oss writes its analysis channel inside max_tokens: the study's budget plus the catalog's
    # reasoning budget; exp2 reads log-probs at the answer and generates nothing, so it gets no flag.
    jobs = chat_jobs()
    exp1 = jobs["study2-exp1-gpt-oss-20b"]
    assert exp1[exp1.index("--max-tokens") + 1] == str(64 + GPT_OSS_REASONING_TOKENS)
    # Extraction's budget follows the CODER (gemma-2-27b on nrp), not the model whose replies it codes.
    assert "--max-tokens" not in jobs["structured-output-study1-gpt-oss-120b"]
    assert "--max-tokens" not in jobs["study1-exp2-gpt-oss-20b"]
    assert "--max-tokens" not in jobs["study1-exp1-gemma-2-2b"]


def test_exp2_asks_the_study_questions_not_the_generic_tokens(tmp_path: Path) -> None:
    # A study file that lists probability questions is asked those; --tokens would replace them.
    jobs_dir = copy_jobs_dir(tmp_path)
    study = yaml.safe_load((jobs_dir / "studies" / "chat" / "study1.yaml").read_text())
    columns = {"prob": "q_{label}", "entropy": "q_entropy"}
    question = {"name": "q", "user": "?", "options": ["yes", "no"], "columns": columns}
    study["probability"] = {"questions": [question]}
    (jobs_dir / "studies" / "chat" / "study1.yaml").write_text(yaml.safe_dump(study))
    config = config_of(
        experiments={
            "studies": ["study1"],
            "experiments": ["exp2"],
            "models": ["gemma-2-2b"],
            "design": "chat",
        }
    )
    (job,) = plan_jobs(config, load_study_bundle(config, jobs_dir=jobs_dir))
    assert "--tokens" not in job.args

    del study["probability"]
    (jobs_dir / "studies" / "chat" / "study1.yaml").write_text(yaml.safe_dump(study))
    (job,) = plan_jobs(config, load_study_bundle(config, jobs_dir=jobs_dir))
    assert job.args[job.args.index("--tokens") + 1] == "0,1,2,3,yes,no"


def test_every_models_replies_are_coded_by_the_one_extractor(mixed_run: OfflineRun) -> None:
    jobs = jobs_of(mixed_run)
    extraction = {name: worker(job)["args"] for name, job in jobs.items() if name.startswith("structured-")}
    assert len(extraction) == 12  # 2 studies x 6 models, llama-3-70b's included
    for args in extraction.values():
        assert args[args.index("--model-endpoint") + 1] == "http://vllm-gemma-2-27b:8000/v1"
        assert args[args.index("--model-name") + 1] == "gemma-2-27b"
    job = jobs["structured-output-study1-gemma-2-9b"]
    args = worker(job)["args"]
    assert args[0] == "extract"
    assert args[args.index("--input") + 1] == "/output/exp1/gemma-2-9b/study1_responses.csv"
    assert args[args.index("--output") + 1] == "/output/structured/gemma-2-9b/study1_structured.csv"
    assert args[args.index("--schema") + 1] == "/etc/grace/schemas/researchers/study1_schema.json"
    assert args[args.index("--wait-for-input") + 1] == "21600"
    assert "--validate" in args
    assert "--deepseek-endpoint" not in args
    assert contract.DEEPSEEK_API_KEY_ENV not in env_of(worker(job))
    assert pod(job)["serviceAccountName"] == c.SA_EXTRACTION_JOB


def test_external_extraction_gets_the_key_only_by_reference(created_namespace_run: OfflineRun) -> None:
    job = jobs_of(created_namespace_run)["structured-output-study2-gemma-2-2b"]
    args = worker(job)["args"]
    assert args[args.index("--deepseek-endpoint") + 1] == DEEPSEEK
    assert args[args.index("--model-name") + 1] == "deepseek-chat"
    assert args[args.index("--api-key-env") + 1] == contract.DEEPSEEK_API_KEY_ENV
    assert "--model-endpoint" not in args
    assert env_of(worker(job))[contract.DEEPSEEK_API_KEY_ENV] == {
        "name": contract.DEEPSEEK_API_KEY_ENV,
        "valueFrom": {"secretKeyRef": {"name": c.DEEPSEEK_SECRET, "key": c.DEEPSEEK_SECRET_KEY}},
    }


def test_no_secret_value_in_any_job_environment(created_namespace_run: OfflineRun) -> None:
    for job in jobs_of(created_namespace_run).values():
        for container in [*pod(job)["containers"], *pod(job).get("initContainers", [])]:
            for env in container.get("env", []):
                if env["name"] == "HF_TOKEN_PATH":  # where the Secret volume puts the token file
                    assert env["value"] == f"{c.HF_TOKEN_MOUNT}/{c.HF_TOKEN_SECRET_KEY}"
                elif env["name"].endswith(("KEY", "TOKEN")):
                    assert "value" not in env, (job["metadata"]["name"], env["name"])
                    assert "secretKeyRef" in env["valueFrom"]


# --- never block pulumi up; order in the cluster --------------------------------------------------


def test_every_job_runs_without_the_service_account_token(
    mixed_run: OfflineRun, all_job_mode_run: OfflineRun
) -> None:
    # Await annotations, retries, deadlines and TTL: tests/unit/infra/test_lifecycle.py.
    for job in [*jobs_of(mixed_run).values(), *jobs_of(all_job_mode_run).values()]:
        assert pod(job)["automountServiceAccountToken"] is False, job["metadata"]["name"]


def test_extraction_jobs_are_created_after_their_exp1_job(mixed_run: OfflineRun) -> None:
    for study in STUDIES:
        for model in PERSISTENT_NRP:
            (resource,) = [
                r
                for r in mixed_run.of_type("kubernetes:batch/v1:Job")
                if r.inputs["metadata"]["name"] == f"structured-output-{study}-{model}"
            ]
            assert job_urn(mixed_run, f"{study}-exp1-{model}") in resource.depends_on
            others = {job_urn(mixed_run, f"{s}-exp1-{m}") for s in STUDIES for m in PERSISTENT_NRP} - {
                job_urn(mixed_run, f"{study}-exp1-{model}")
            }
            assert not others & set(resource.depends_on)


def test_no_job_waits_in_pulumi_for_a_model_server(mixed_run: OfflineRun) -> None:
    # Depending on a StatefulSet would make `pulumi up` wait up to its load budget; the worker waits.
    servers = {r.urn for r in mixed_run.of_type("kubernetes:apps/v1:StatefulSet")}
    for resource in mixed_run.of_type("kubernetes:batch/v1:Job"):
        assert not servers & set(resource.depends_on)
        args = resource.inputs["spec"]["template"]["spec"]["containers"][0].get("args", [])
        if args and args[0] in {"query", "probs"}:
            assert int(args[args.index("--wait-timeout") + 1]) >= 600


# --- job serving mode -----------------------------------------------------------------------------


def test_job_mode_is_one_job_per_model_with_the_sidecar_and_no_statefulset(
    all_job_mode_run: OfflineRun,
) -> None:
    config = GraceConfig.parse(base_config())
    jobs = jobs_of(all_job_mode_run)
    assert set(jobs) == {f"matrix-{m.key}" for m in config.served_models()}
    assert not [m for m in all_job_mode_run.manifests() if m["kind"] in {"StatefulSet", "Service"}]
    for model in config.served_models():
        spec = pod(jobs[f"matrix-{model.key}"])
        job_model = model.model_copy(update={"serving_mode": "job"})
        init_containers, volumes = vllm_server.vllm_sidecar_parts(job_model, config)
        # After the outputs check (test_lifecycle.py), the sidecar parts in order, wrapped to skip their
        # work when the outputs are complete: same image, resources, probes and sidecar restart policy.
        rendered = spec["initContainers"][1:]
        assert [x["name"] for x in rendered] == [x["name"] for x in init_containers]
        for got, built in zip(rendered, init_containers, strict=True):
            same = {k: v for k, v in built.items() if k not in {"command", "args", "env", "volumeMounts"}}
            assert {k: got[k] for k in same} == same
            assert got["command"][4:] == [*built["command"], *built.get("args", [])]
        assert spec["initContainers"][1]["restartPolicy"] == "Always"
        assert all(v in spec["volumes"] for v in volumes)
        assert worker(jobs[f"matrix-{model.key}"])["args"] == [
            "run",
            "--tasks",
            f"/etc/grace/tasks/matrix-{model.key}.json",
        ]


def test_job_mode_task_list_runs_the_whole_share_in_order(all_job_mode_run: OfflineRun) -> None:
    tasks = configmap_tasks(all_job_mode_run, "matrix-gemma-2-9b")
    outputs = [t[t.index("--output") + 1] for t in tasks]
    assert outputs == [
        "/output/exp1/gemma-2-9b/study1_responses.csv",
        "/output/exp1/gemma-2-9b/study2_responses.csv",
        "/output/exp2/gemma-2-9b/study1_probabilities.csv",
        "/output/exp2/gemma-2-9b/study2_probabilities.csv",
    ]
    for task in tasks:
        assert task[task.index("--model-endpoint") + 1] == "http://localhost:8000/v1"


def test_job_mode_with_external_extraction_keeps_extraction_off_the_gpus(
    created_namespace_run: OfflineRun,
) -> None:
    jobs = jobs_of(created_namespace_run)
    tasks = configmap_tasks(created_namespace_run, "matrix-llama-3-70b")
    assert [t[0] for t in tasks] == ["query", "query", "probs", "probs"]
    extraction = jobs["structured-output-study1-llama-3-70b"]
    assert "initContainers" not in pod(extraction)
    (resource,) = [
        r
        for r in created_namespace_run.of_type("kubernetes:batch/v1:Job")
        if r.inputs["metadata"]["name"] == "structured-output-study1-llama-3-70b"
    ]
    assert job_urn(created_namespace_run, "matrix-llama-3-70b") in resource.depends_on


def test_endpoint_is_the_service_or_localhost() -> None:
    config = GraceConfig.parse(base_config())
    served = {m.key: m for m in config.served_models()}
    assert model_endpoint(served["gemma-2-2b"]) == "http://vllm-gemma-2-2b:8000/v1"
    assert model_endpoint(served["llama-3-70b"]) == "http://localhost:8000/v1"


# --- pods: labels, mounts, resources, security ----------------------------------------------------


def test_labels_select_the_job_for_cleanup_and_policies(mixed_run: OfflineRun) -> None:
    job = jobs_of(mixed_run)["study1-exp2-gemma-2-27b"]
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels[c.LABEL_PROJECT] == c.PROJECT
        assert labels["study"] == "study1"
        assert labels["experiment"] == "exp2"
        assert labels["model"] == "gemma-2-27b"
        assert labels[c.LABEL_COMPONENT] == c.COMPONENT_QUERY_JOB
        assert labels[c.LABEL_PART_OF] == c.PROJECT
        assert labels[c.LABEL_MANAGED_BY] == "pulumi"
        assert labels[c.LABEL_INSTANCE] == "study1-exp2-gemma-2-27b"


def test_https_egress_only_where_a_pod_leaves_the_cluster(
    mixed_run: OfflineRun, created_namespace_run: OfflineRun
) -> None:
    def egress(run: OfflineRun, name: str) -> bool:
        labels = jobs_of(run)[name]["spec"]["template"]["metadata"]["labels"]
        return labels.get(c.LABEL_EGRESS_HTTPS) == "true"

    # A job-mode pod runs vLLM on weights its download Job fetched before: no egress (NetworkPolicy
    # selects pods, so the egress the download needs lives on the download's own pod).
    assert not egress(mixed_run, "matrix-llama-3-70b")
    download = mixed_run.manifest("Job", "weights-llama-3-70b")
    assert download["spec"]["template"]["metadata"]["labels"][c.LABEL_EGRESS_HTTPS] == "true"
    assert not egress(mixed_run, "study1-exp1-gemma-2-2b")
    assert not egress(mixed_run, "structured-output-study1-gemma-2-2b")  # extracts on the model's own server
    assert egress(created_namespace_run, "structured-output-study1-gemma-2-2b")  # DeepSeek API
    assert not egress(created_namespace_run, "matrix-gemma-2-2b")


def test_mounts_input_read_only_and_studies_from_the_configmap(mixed_run: OfflineRun) -> None:
    job = jobs_of(mixed_run)["study2-exp1-gemma-2-2b"]
    mounts = {m["mountPath"]: m for m in worker(job)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod(job)["volumes"]}
    assert mounts[c.INPUT_MOUNT]["readOnly"] is True
    assert volumes[mounts[c.INPUT_MOUNT]["name"]]["persistentVolumeClaim"] == {
        "claimName": c.INPUT_PVC,
        "readOnly": True,
    }
    assert volumes[mounts[c.OUTPUT_MOUNT]["name"]]["persistentVolumeClaim"]["claimName"] == c.OUTPUT_PVC
    assert volumes[mounts[c.LOGS_MOUNT]["name"]]["persistentVolumeClaim"]["claimName"] == c.LOGS_PVC
    assert mounts[contract.STUDIES_MOUNT]["readOnly"] is True
    studies = volumes[mounts[contract.STUDIES_MOUNT]["name"]]["configMap"]
    assert studies["name"] == c.STUDIES_CONFIGMAP
    # Only the files this Job reads (their hash is on its pod), at the paths of jobs/.
    assert studies["items"] == [
        {"key": "inputs.study2.csv", "path": "inputs/study2.csv"},
        {"key": "studies.researchers.study2.yaml", "path": "studies/researchers/study2.yaml"},
    ]
    env = env_of(worker(job))
    assert env["LOG_LEVEL"]["value"] == "INFO"
    assert env["EXPERIMENT_ID"]["value"] == "study2-exp1-gemma-2-2b"
    assert env[contract.LOG_FILE_ENV]["value"] == "/logs/study2-exp1-gemma-2-2b.log"
    assert worker(job)["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]


def test_every_limit_is_within_nrp_1_2_times_its_request(mixed_run: OfflineRun) -> None:
    for job in jobs_of(mixed_run).values():
        for container in [*pod(job)["containers"], *pod(job).get("initContainers", [])]:
            requests, limits = container["resources"]["requests"], container["resources"]["limits"]
            assert set(requests) == set(limits)
            for resource, limit in limits.items():
                ratio = parse_quantity(limit) / parse_quantity(requests[resource])
                assert Decimal(1) <= ratio <= Decimal("1.2"), (
                    job["metadata"]["name"],
                    container["name"],
                    resource,
                )


def test_worker_runs_unprivileged(mixed_run: OfflineRun) -> None:
    security = worker(jobs_of(mixed_run)["study1-exp1-gpt-oss-120b"])["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == c.WORKER_UID
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}


def test_service_account_per_kind(mixed_run: OfflineRun) -> None:
    for name, job in jobs_of(mixed_run).items():
        expected = c.SA_EXTRACTION_JOB if name.startswith("structured-output-") else c.SA_QUERY_JOB
        assert pod(job)["serviceAccountName"] == expected, name


def test_every_rendered_builtin_object_is_valid_kubernetes_1_30(
    mixed_run: OfflineRun, all_job_mode_run: OfflineRun, created_namespace_run: OfflineRun
) -> None:
    for run in (mixed_run, all_job_mode_run, created_namespace_run):
        for manifest in run.manifests():
            if manifest["kind"] in {"Job", "ConfigMap"}:
                assert_valid_k8s(manifest)


# --- monitoring -----------------------------------------------------------------------------------


def test_pod_monitor_scrapes_workers_and_sidecars_when_enabled(
    mixed_run: OfflineRun, all_job_mode_run: OfflineRun
) -> None:
    assert not [m for m in mixed_run.manifests() if m["kind"] == "PodMonitor"]
    monitor = all_job_mode_run.manifest("PodMonitor", POD_MONITOR_NAME)
    selector = monitor["spec"]["selector"]["matchLabels"]
    job_labels = next(iter(jobs_of(all_job_mode_run).values()))["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= job_labels.items()
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics", "http"]


# --- the studies ConfigMap ------------------------------------------------------------------------


def copy_jobs_dir(tmp_path: Path) -> Path:
    """The project's study definitions and schemas (project files, not study data) in a scratch dir."""
    target = tmp_path / "jobs"
    for sub in ("studies", "schemas"):
        shutil.copytree(PROJECT_ROOT / "jobs" / sub, target / sub)
    return target


def manifests_for(config: GraceConfig, bundle: StudyBundle) -> dict[str, dict[str, Any]]:
    full, planned = plan_experiments(config, bundle)
    return {job.name: job_manifest(job, config, full) for job in planned}


def test_changing_a_prompt_changes_the_configmap_and_only_the_jobs_that_read_it(tmp_path: Path) -> None:
    jobs_dir = copy_jobs_dir(tmp_path)
    config = GraceConfig.parse(base_config())
    before_bundle = load_study_bundle(config, jobs_dir=jobs_dir)
    before = manifests_for(config, before_bundle)

    study_file = jobs_dir / "studies" / "researchers" / "study1.yaml"
    study_file.write_text(study_file.read_text() + "\n# a reworded prompt\n")
    after_bundle = load_study_bundle(config, jobs_dir=jobs_dir)
    after = manifests_for(config, after_bundle)

    assert before_bundle.configmap_data() != after_bundle.configmap_data()

    def digest(manifest: dict[str, Any]) -> str:
        return manifest["spec"]["template"]["metadata"]["annotations"][c.STUDIES_CONTENT_HASH_ANNOTATION]

    changed = {name for name in before if digest(before[name]) != digest(after[name])}
    # study1's Jobs, and llama's job-mode Job, whose task list runs study1 too; no study2-only Job.
    assert changed == {name for name in before if "study1" in name} | {"matrix-llama-3-70b"}


def test_configmap_ships_whatever_study_files_exist(tmp_path: Path) -> None:
    jobs_dir = tmp_path / "jobs"
    (jobs_dir / "studies" / "researchers").mkdir(parents=True)
    study2 = (PROJECT_ROOT / "jobs" / "studies" / "researchers" / "study2.yaml").read_text()
    (jobs_dir / "studies" / "researchers" / "study2.yaml").write_text(study2)
    config = GraceConfig.parse(base_config(experiments={}))  # the input claim route: no CSV shipped
    bundle = load_study_bundle(config, jobs_dir=jobs_dir)
    assert bundle.configmap_data() == {"studies.researchers.study2.yaml": study2}
    (job,) = [j for j in plan_jobs(config, bundle) if j.name == "study1-exp1-gemma-2-2b"]
    # The worker's own lookup by name, in the design's folder.
    assert job.args[job.args.index("--study") + 1] == "researchers/study1"
    # No file to mount: no studies volume at all (an empty `items` would project every key).
    manifests = manifests_for(config, bundle)
    assert "studies" not in {v["name"] for v in pod(manifests["study1-exp1-gemma-2-2b"])["volumes"]}
    (studies,) = [v for v in pod(manifests["study2-exp1-gemma-2-2b"])["volumes"] if v["name"] == "studies"]
    assert studies["configMap"]["items"] == [
        {"key": "studies.researchers.study2.yaml", "path": "studies/researchers/study2.yaml"}
    ]


def test_small_local_csv_ships_in_the_configmap(tmp_path: Path) -> None:
    csv = tmp_path / "tiny.csv"
    csv.write_text('participant_id,story_setup\n1,"a, quoted\nline"\n2,plain\n', encoding="utf-8")
    config = config_of(experiments={"inputFiles": {"study1": str(csv)}})
    full, planned = plan_experiments(config)
    assert full.configmap_data()["inputs.study1.csv"] == csv.read_text(encoding="utf-8")
    assert full.input_rows[Study.STUDY1] == 2
    (job,) = [j for j in planned if j.name == "study1-exp1-gemma-2-2b"]
    assert job.args[job.args.index("--input") + 1] == "/etc/grace/inputs/study1.csv"
    (other,) = [j for j in planned if j.name == "study2-exp1-gemma-2-2b"]
    assert other.args[other.args.index("--input") + 1] == "/input/study2.csv"


def test_missing_local_csv_is_one_sentence_naming_the_key(tmp_path: Path) -> None:
    config = config_of(experiments={"inputFiles": {"study2": str(tmp_path / "nope.csv")}})
    with pytest.raises(
        ConfigError, match=r"^grace:experiments\.inputFiles\.study2=.*nope\.csv' does not name"
    ):
        load_study_bundle(config)


def test_csv_too_large_for_a_configmap_is_refused(tmp_path: Path) -> None:
    csv = tmp_path / "big.csv"
    csv.write_text("a\n" + "x" * c.CONFIGMAP_MAX_BYTES + "\n", encoding="utf-8")
    config = config_of(experiments={"inputFiles": {"study1": str(csv)}})
    with pytest.raises(ConfigError, match=r"grace:experiments\.inputFiles: .* over the .*-byte limit"):
        load_study_bundle(config)


def test_non_utf8_csv_is_refused(tmp_path: Path) -> None:
    csv = tmp_path / "latin1.csv"
    csv.write_bytes("a\ncaf\xe9\n".encode("latin-1"))
    config = config_of(experiments={"inputFiles": {"study1": str(csv)}})
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_study_bundle(config)


def test_matrix_follows_the_configured_studies_experiments_and_models() -> None:
    config = config_of(
        experiments={"studies": ["study2"], "experiments": ["exp2"], "models": ["gpt-oss-20b"]}
    )
    assert [job.name for job in plan_jobs(config, StudyBundle())] == ["study2-exp2-gpt-oss-20b"]
    config = config_of(
        experiments={"studies": ["study1"], "experiments": ["structured"], "models": ["llama-3-70b"]}
    )
    (job,) = plan_jobs(config, StudyBundle())
    # A job-mode model's replies go to the one coder (nrp: gemma-2-27b), in an extraction Job of its own.
    assert job.name == "structured-output-study1-llama-3-70b"
    assert (job.sidecar, job.coder) == (False, "gemma-2-27b")
    assert job.args[job.args.index("--model-endpoint") + 1] == "http://vllm-gemma-2-27b:8000/v1"


def test_a_lone_job_mode_model_codes_its_own_replies_at_the_end_of_its_job() -> None:
    # One model in the matrix and no persistent server: that model is the one coder for all.
    config = config_of(models=[{"key": "gemma-2-9b", "servingMode": "job"}])
    (job,) = plan_jobs(config, load_study_bundle(config))
    assert job.name == "matrix-gemma-2-9b"
    assert [t[0] for t in job.tasks] == ["query", "query", "probs", "probs", "extract", "extract"]
    extract = job.tasks[-1]
    assert extract[extract.index("--model-endpoint") + 1] == "http://localhost:8000/v1"


def test_a_job_mode_coder_codes_other_models_replies_in_a_suspended_job_of_its_own() -> None:
    # The nrp stack serves every model in its Jobs: the coder (gemma-2-27b, the largest model that does
    # not reason and fits a 2-GPU pod) codes its own replies at the end of its matrix Job, and every other
    # model's in extraction-gemma-2-27b, created suspended and resumed by a CPU gate.
    all_job = [{"key": key} for key in ("gemma-2-2b", "gemma-2-9b", "gemma-2-27b", "llama-3-70b")]
    all_job += [{"key": "gpt-oss-20b"}, {"key": "gpt-oss-120b"}]  # servingMode job: the default
    config = config_of(models=all_job)
    assert config.extractor_model().key == "gemma-2-27b"
    planned = {job.name: job for job in plan_jobs(config, load_study_bundle(config))}
    assert not [name for name in planned if name.startswith("structured-output-")]
    coder = planned["matrix-gemma-2-27b"]
    outputs = [t[t.index("--output") + 1] for t in coder.tasks]
    assert outputs == [
        "/output/exp1/gemma-2-27b/study1_responses.csv",
        "/output/exp1/gemma-2-27b/study2_responses.csv",
        "/output/exp2/gemma-2-27b/study1_probabilities.csv",
        "/output/exp2/gemma-2-27b/study2_probabilities.csv",
        "/output/structured/gemma-2-27b/study1_structured.csv",
        "/output/structured/gemma-2-27b/study2_structured.csv",
    ]
    extraction = planned["extraction-gemma-2-27b"]
    assert extraction.suspended
    assert extraction.sidecar
    assert len(extraction.tasks) == 10  # 2 studies x the 5 other models
    for task in extraction.tasks:
        assert task[0] == "extract"
        assert task[task.index("--model-endpoint") + 1] == "http://localhost:8000/v1"
        assert task[task.index("--model-name") + 1] == "gemma-2-27b"
        assert "/gemma-2-27b/" not in task[task.index("--input") + 1]
    gate = planned["resume-extraction-gemma-2-27b"]
    assert gate.resumes == "extraction-gemma-2-27b"
    assert not gate.gpu
    assert not [t for t in planned["matrix-llama-3-70b"].tasks if t[0] == "extract"]


def test_an_extractor_that_no_extraction_could_reach_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^grace:jobs.extractor='gemma-2-2b' is not a configured model"):
        config_of(models=[{"key": "gemma-2-9b"}], jobs={"extractor": "gemma-2-2b"})
    with pytest.raises(ConfigError, match=r"^grace:jobs.extractor='llama-3-70b' is served in job mode"):
        config_of(experiments={"models": ["gemma-2-2b"]}, jobs={"extractor": "llama-3-70b"})
    # Without extraction, or with an external endpoint, no self-hosted coder is needed.
    config_of(
        experiments={"models": ["gemma-2-2b"], "experiments": ["exp1", "exp2"]},
        jobs={"extractor": "llama-3-70b"},
    )
    config_of(jobs={"deepseekEndpoint": "https://api.deepseek.com"})


def test_a_job_mode_job_is_labelled_with_every_study_and_experiment(mixed_run: OfflineRun) -> None:
    labels = jobs_of(mixed_run)["matrix-llama-3-70b"]["metadata"]["labels"]
    assert (labels["study"], labels["experiment"], labels["model"]) == ("all", "all", "llama-3-70b")
