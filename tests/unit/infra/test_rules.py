"""NRP rules and fit checks: one test per rule and per warning, asserting the message.

Rules run on the parsed config (fast, no render); one whole-program test shows a violation stops the
program before any resource exists, and one shows warnings reach `pulumi.log.warn`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from grace_infra import nrp_rules
from grace_infra.commands import render
from grace_infra.config.catalog import CATALOG
from grace_infra.config.stack_config import GraceConfig
from grace_infra.errors import ConfigError, PolicyViolation
from grace_infra.manifests import vllm_server
from grace_infra.nrp import cluster_facts
from grace_infra.nrp_rules import Severity

from .support import MIXED_MODELS, render_stack
from .support import base_config as stack_config

LLAMA_EXCEPTION = {
    "model": "llama-3-70b",
    "rule": "gpus-per-stateful-pod",
    "reason": "NRP ticket 1234 (test)",
}


def base_config(**overrides: Any) -> dict[str, Any]:
    """The nrp stack with persistent servers (support.MIXED_MODELS) unless `models` is overridden:
    most rules here are about StatefulSets."""
    return stack_config(**{"models": MIXED_MODELS, **overrides})


def persistent(*keys: str) -> list[dict[str, str]]:
    return [{"key": key, "servingMode": "persistent"} for key in keys]


def config(**overrides: Any) -> GraceConfig:
    return GraceConfig.parse(base_config(**overrides))


def findings(rule: nrp_rules.Rule, cfg: GraceConfig) -> list[nrp_rules.Finding]:
    return list(rule(cfg))


def only(rule: nrp_rules.Rule, cfg: GraceConfig) -> nrp_rules.Finding:
    (finding,) = findings(rule, cfg)
    return finding


def test_the_committed_stacks_have_no_errors_and_only_the_reservation_warning() -> None:
    committed = GraceConfig.parse(stack_config())
    assert [f.rule for f in nrp_rules.check_config(committed)] == ["gpu-reservation-needed"]
    assert nrp_rules.check_config(GraceConfig.parse(stack_config("nrp-generic"))) == []
    # The same stack with five persistent servers: each is warned about for its idle GPUs.
    warned = [f.rule for f in nrp_rules.check_config(config())]
    assert warned == [*["persistent-idle-gpus"] * 5, "gpu-reservation-needed"]


def test_every_model_server_rule_is_registered() -> None:
    for rule in (
        nrp_rules.persistent_idle_gpus,
        nrp_rules.gpu_resource_matches_product,
        nrp_rules.reserved_gpu_resource,
        nrp_rules.stateful_pod_gpus,
        nrp_rules.pod_gpus,
        nrp_rules.tensor_parallel_layout,
        nrp_rules.model_server_limits,
        nrp_rules.two_week_limit,
        nrp_rules.gpu_memory_fit,
        nrp_rules.quota_fits,
        nrp_rules.forbidden_storage_class,
    ):
        assert rule in nrp_rules.RULES


# --- GPUs per pod -------------------------------------------------------------------------------------


def test_more_than_two_gpus_in_a_statefulset_pod_is_an_error() -> None:
    finding = only(nrp_rules.stateful_pod_gpus, config(models=persistent("gemma-2-2b", "llama-3-70b")))
    assert finding.severity is Severity.ERROR
    assert finding.model == "llama-3-70b"
    assert finding.message == (
        "model llama-3-70b asks for 4 GPUs in its StatefulSet pod but NRP allows at most 2 there; "
        "set grace:models[1].servingMode=job or add a grace:exceptions entry "
        "(model llama-3-70b, rule gpus-per-stateful-pod)."
    )


def test_an_exception_or_job_mode_allows_more_than_two_gpus() -> None:
    excepted = config(models=persistent("llama-3-70b"), exceptions=[LLAMA_EXCEPTION])
    assert findings(nrp_rules.stateful_pod_gpus, excepted) == []
    assert (
        findings(nrp_rules.stateful_pod_gpus, config(models=[{"key": "llama-3-70b", "servingMode": "job"}]))
        == []
    )
    # An exception for another rule does not count.
    other = {**LLAMA_EXCEPTION, "rule": "two-week-limit"}
    assert findings(nrp_rules.stateful_pod_gpus, config(models=persistent("llama-3-70b"), exceptions=[other]))


def test_two_gpus_in_a_statefulset_pod_is_allowed() -> None:
    assert findings(nrp_rules.stateful_pod_gpus, config(models=persistent("gemma-2-27b"))) == []


def test_more_than_eight_gpus_in_any_pod_is_an_error() -> None:
    models = [{"key": "llama-3-70b", "servingMode": "job", "gpus": 16, "tensorParallelSize": 16}]
    finding = only(nrp_rules.pod_gpus, config(models=models))
    assert finding.severity is Severity.ERROR
    assert (
        finding.message
        == "model llama-3-70b asks for 16 GPUs in one pod but NRP allows at most 8 GPUs per pod."
    )
    eight = [{"key": "llama-3-70b", "servingMode": "job", "gpus": 8, "tensorParallelSize": 8}]
    assert findings(nrp_rules.pod_gpus, config(models=eight)) == []


# --- tensor parallelism -------------------------------------------------------------------------------


def test_tensor_parallel_size_must_divide_the_attention_heads() -> None:
    models = [{"key": "llama-3-70b", "servingMode": "job", "gpus": 3, "tensorParallelSize": 3}]
    finding = only(nrp_rules.tensor_parallel_layout, config(models=models))
    assert finding.severity is Severity.ERROR
    assert finding.message == (
        "model llama-3-70b has 64 attention heads, which tensor parallel size 3 does not divide; "
        "use a divisor of 64."
    )


def test_tensor_parallel_size_different_from_gpus_is_refused_by_config() -> None:
    with pytest.raises(ConfigError, match=r"^grace:models\[0\]\.tensorParallelSize=2 must equal gpus=4$"):
        config(models=[{"key": "llama-3-70b", "servingMode": "job", "tensorParallelSize": 2}])


@pytest.mark.parametrize("key", list(CATALOG))
def test_no_config_reaches_the_rules_with_tensor_parallel_other_than_gpus(key: str) -> None:
    # Why no rule checks it: changing a model's GPUs without its tensor parallel size is refused by the
    # config validator, whose message is what `grace render` prints
    # (test_render.test_main_reports_a_config_error_in_one_line).
    tp = CATALOG[key].tensor_parallel_size
    refused = rf"^grace:models\[0\]\.tensorParallelSize={tp} must equal gpus={2 * tp}$"
    with pytest.raises(ConfigError, match=refused):
        config(models=[{"key": key, "servingMode": "job", "gpus": 2 * tp}])


# --- limits and quota ---------------------------------------------------------------------------------


def original_template_pod() -> dict[str, Any]:
    """The researchers' original vLLM container resources: 8 -> 16 CPU and 32 -> 64 Gi (both break NRP's
    1.2x rule)."""
    resources = {
        "requests": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "1"},
    }
    return {"containers": [{"name": "vllm", "resources": resources}]}


def test_a_limit_over_1_2_times_its_request_is_an_error() -> None:
    cpu, memory = nrp_rules.container_limit_findings(original_template_pod(), "StatefulSet vllm-x", "x")
    assert cpu.severity is Severity.ERROR
    assert cpu.message == (
        "StatefulSet vllm-x container vllm has cpu limit 16 over 1.2 x its request 8; "
        "NRP allows a limit at most 20 % above its request."
    )
    assert "memory limit 64Gi over 1.2 x its request 32Gi" in memory.message


def test_the_limit_rule_parses_quantities_in_mixed_units() -> None:
    pod = {
        "initContainers": [
            {
                "name": "ok",
                "resources": {
                    "requests": {"cpu": "4", "memory": "1Gi"},
                    "limits": {"cpu": "4800m", "memory": "1228Mi"},
                },
            },
            {"name": "bad", "resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": "601m"}}},
        ]
    }
    (finding,) = nrp_rules.container_limit_findings(pod, "Job j")
    assert "container bad has cpu limit 601m over 1.2 x its request 500m" in finding.message


def test_every_model_servers_rendered_containers_obey_the_limit_rule() -> None:
    models = [*persistent("gemma-2-2b"), {"key": "llama-3-70b", "servingMode": "job"}]
    assert nrp_rules.model_server_limits(config(models=models)) == []


def test_the_limit_rule_sees_the_containers_the_builders_render(monkeypatch: pytest.MonkeyPatch) -> None:
    def greedy(model: Any, cfg: Any) -> dict[str, dict[str, str]]:
        return {"requests": {"cpu": "8", "memory": "32Gi"}, "limits": {"cpu": "16", "memory": "32Gi"}}

    monkeypatch.setattr(vllm_server, "vllm_resources", greedy)
    models = [*persistent("gemma-2-2b"), {"key": "gpt-oss-20b", "servingMode": "job"}]
    messages = [f.message for f in nrp_rules.model_server_limits(config(models=models))]
    assert messages[0].startswith("StatefulSet vllm-gemma-2-2b container vllm has cpu limit 16")
    assert messages[1].startswith("model gpt-oss-20b's job-mode sidecar container vllm has cpu limit 16")


@pytest.mark.parametrize(
    ("quota", "what"),
    [
        ({"requestsGpu": 4}, "GPUs"),
        ({"requestsCpu": "20"}, "CPU cores"),
        ({"requestsMemory": "80Gi"}, "memory GiB"),
    ],
)
def test_persistent_servers_over_the_resource_quota_are_an_error(quota: dict[str, Any], what: str) -> None:
    raw = base_config()
    raw["namespace"]["quota"].update(quota)
    errors = [f for f in nrp_rules.quota_fits(GraceConfig.parse(raw)) if f.severity is Severity.ERROR]
    (finding,) = errors
    assert f" {what} together but grace:namespace.quota." in finding.message
    # nrp persistent servers: 7 GPUs, 32 CPU cores, 84 GiB (llama-3-70b runs in job mode).
    assert finding.message.startswith("the persistent model servers request ")


def test_a_quota_in_milli_cpu_is_parsed() -> None:
    raw = base_config()
    raw["namespace"]["quota"]["requestsCpu"] = "31900m"  # nrp persistent servers need 32 cores
    (finding,) = [f for f in nrp_rules.quota_fits(GraceConfig.parse(raw)) if f.severity is Severity.ERROR]
    assert re.search(
        r"request 32(\.0*)? CPU cores together but grace:namespace\.quota\.requestsCpu allows 31\.90*\.$",
        finding.message,
    )
    raw["namespace"]["quota"]["requestsCpu"] = "32000m"
    assert [f for f in nrp_rules.quota_fits(GraceConfig.parse(raw)) if f.severity is Severity.ERROR] == []


# --- storage class and unknown model ------------------------------------------------------------------


def test_a_forbidden_storage_class_is_an_error() -> None:
    raw = base_config()
    raw["storage"] = {**raw["storage"], "sharedClass": "rook-cephfs-ucsd"}
    (finding,) = nrp_rules.forbidden_storage_class(GraceConfig.parse(raw))
    assert finding.severity is Severity.ERROR
    assert finding.message.startswith("grace:storage.sharedClass='rook-cephfs-ucsd' is refused")


def test_a_new_model_key_without_its_fields_is_refused_by_config() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^grace:models\[1\]\.key='llama-5' is not in the catalog \(gemma-2-2b, .*missing: hfRepo, ",
    ):
        config(models=[*persistent("gemma-2-2b"), {"key": "llama-5"}])


# --- warnings -----------------------------------------------------------------------------------------


def test_a_persistent_server_outliving_two_weeks_is_a_warning() -> None:
    cfg = config(
        models=[
            *persistent("gemma-2-2b"), {"key": "gpt-oss-20b", "servingMode": "job"}, *persistent("gemma-2-9b")
        ],
        plan={"campaignDays": 21},
        exceptions=[{"model": "gemma-2-9b", "rule": "two-week-limit", "reason": "NRP ticket 99 (test)"}],
    )
    finding = only(nrp_rules.two_week_limit, cfg)  # job mode and the excepted model are fine
    assert finding.severity is Severity.WARNING
    assert finding.message == (
        "model gemma-2-2b runs as a persistent server for grace:plan.campaignDays=21 days but NRP deletes "
        "workloads after 14 days; use servingMode=job or add a grace:exceptions entry "
        "(model gemma-2-2b, rule two-week-limit)."
    )
    assert (
        findings(nrp_rules.two_week_limit, config(models=persistent("gemma-2-2b"), plan={"campaignDays": 14}))
        == []
    )


def test_every_persistent_server_is_warned_about_its_idle_gpus() -> None:
    cfg = config(
        models=[
            # A measured throughput, so the figures below can be checked by hand.
            {"key": "gemma-2-2b", "servingMode": "persistent", "throughputRps": 20},
            {"key": "llama-3-70b", "servingMode": "job"},
            *persistent("gemma-2-9b"),
        ],
        experiments={"studies": ["study1", "study2"], "experiments": ["exp1", "exp2", "structured"],
                     "models": ["gemma-2-2b", "llama-3-70b"], "design": "chat"},
        jobs={"extractor": "gemma-2-2b"},  # the one coder; gemma-2-9b then serves nothing
    )  # fmt: skip
    first, second = findings(nrp_rules.persistent_idle_gpus, cfg)
    assert (first.severity, first.model, second.model) == (Severity.WARNING, "gemma-2-2b", "gemma-2-9b")
    # gemma-2-2b: its own 25,392 sampled requests and both models' 2 x 13,620 extractions at 20 req/s =
    # 0.7 busy GPU-hours of 14 x 24 = 336 held; job: 0.9.
    assert first.message == (
        "model gemma-2-2b runs as a persistent server: busy 0.7 of the 336.0 GPU-hours it holds over "
        "grace:plan.campaignDays=14 (0.2%); NRP counts GPUs used under 40% of their request against the "
        "namespace; servingMode=job would hold 0.9."
    )
    assert second.message.endswith("(0.0%); NRP counts GPUs used under 40% of their request against the "
                                   "namespace; it runs no experiment of the matrix.")  # fmt: skip
    assert findings(nrp_rules.persistent_idle_gpus, config(models=[{"key": "gemma-2-2b"}])) == []  # job mode


def test_llama_70b_on_40gb_cards_is_a_fit_warning_with_the_numbers() -> None:
    models = [{"key": "llama-3-70b", "servingMode": "job"}, *persistent("gemma-2-2b")]
    finding = only(nrp_rules.gpu_memory_fit, config(models=models, gpu={"memoryGb": 40}))
    assert finding.severity is Severity.WARNING
    assert finding.message == (
        "model llama-3-70b needs 151.7 GB (141.0 GB weights + 2.7 GB KV cache for one 8192-token sequence + "
        "8.0 GB runtime) but 4 x 40 GB GPUs at gpu-memory-utilization 0.9 give 144.0 GB; select 80 GB cards "
        "(grace:gpu) or a quantized checkpoint, or lower maxModelLen."
    )
    assert findings(nrp_rules.gpu_memory_fit, config(models=models, gpu={"memoryGb": 80})) == []


def test_a_per_model_40gb_product_label_overrides_the_configured_card_size() -> None:
    models = [{"key": "llama-3-70b", "servingMode": "job", "gpuProduct": "NVIDIA-A100-PCIE-40GB"}]
    cfg = config(models=models, gpu={"nodeProduct": "NVIDIA-A100-SXM4-80GB", "memoryGb": 80})
    assert (
        "but 4 x 40 GB GPUs at gpu-memory-utilization 0.9 give 144.0 GB"
        in only(nrp_rules.gpu_memory_fit, cfg).message
    )
    # NRP's GPU table first (GH200's label names the node's 480 GB), then the label, then grace:gpu.memoryGb.
    assert cluster_facts.gpu_memory_gb("NVIDIA-L40", 80) == 48
    assert cluster_facts.gpu_memory_gb("NVIDIA-A40", 80) == 48
    assert cluster_facts.gpu_memory_gb("NVIDIA-GH200-480GB", 80) == 96
    assert cluster_facts.gpu_memory_gb("NVIDIA-GeForce-RTX-3090", 24) == 24


def test_kv_cache_bytes_per_token_follow_the_architecture() -> None:
    llama = next(m for m in config().served_models() if m.key == "llama-3-70b")
    fit = nrp_rules.gpu_fit(llama, 80)
    assert fit.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2  # K and V x layers x kv heads x head dim x bf16
    assert fit.usable_gb == pytest.approx(4 * 80 * 0.9)
    longer = nrp_rules.gpu_fit(llama.model_copy(update={"max_model_len": 16384}), 80)
    assert longer.kv_gb == pytest.approx(2 * fit.kv_gb)


# --- enforcement in the program -----------------------------------------------------------------------


def test_a_violation_stops_the_program_before_any_resource() -> None:
    with pytest.raises(
        PolicyViolation, match=r"^\[gpus-per-stateful-pod\] model llama-3-70b asks for 4 GPUs"
    ):
        render_stack(base_config(models=persistent("llama-3-70b")))


def test_warnings_reach_the_pulumi_log() -> None:
    run = render_stack(base_config(models=persistent("gemma-2-2b"), plan={"campaignDays": 20}))
    assert any("[two-week-limit] model gemma-2-2b runs as a persistent server" in w for w in run.warnings)


def test_render_exits_2_with_the_rule_sentence_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    override = tmp_path / "persistent-llama.yaml"
    override.write_text("config:\n  grace:models:\n    - {key: llama-3-70b, servingMode: persistent}\n")
    out = tmp_path / "out"
    assert render.main(["--stack", "nrp", "--config-file", str(override), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "model llama-3-70b asks for 4 GPUs in its StatefulSet pod but NRP allows at most 2" in err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


# --- everything that starts at once -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quota", "expected"),
    [
        # nrp: 5 persistent servers + 33 Jobs (llama-3-70b's with its vLLM sidecar; its two extraction Jobs
        # talk to the one coder) all start together
        ({"pods": 37}, "would request 38 pods but grace:namespace.quota.pods allows 37"),
        ({"requestsCpu": "80"}, "would request 81 CPU cores but grace:namespace.quota.requestsCpu allows 80"),
        (
            {"requestsGpu": 10},
            "would request 11 nvidia.com/a100 GPUs but grace:namespace.quota.requestsGpu allows 10",
        ),
    ],
)
def test_jobs_that_would_queue_on_the_quota_are_a_warning(quota: dict[str, Any], expected: str) -> None:
    raw = base_config()
    raw["namespace"]["quota"].update(quota)
    finding = only(nrp_rules.all_pods_fit_quota, GraceConfig.parse(raw))
    assert finding.severity is Severity.WARNING
    assert finding.message.startswith("the 33 experiment Jobs start together with the model servers")
    assert expected in finding.message


def test_jobs_that_just_fit_the_quota_give_no_warning() -> None:
    raw = base_config()
    raw["namespace"]["quota"].update({"pods": 38, "requestsCpu": "81", "requestsGpu": 11})
    assert findings(nrp_rules.all_pods_fit_quota, GraceConfig.parse(raw)) == []
    assert nrp_rules.all_pods_fit_quota in nrp_rules.RULES
