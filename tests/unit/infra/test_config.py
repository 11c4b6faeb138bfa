"""Stack configuration: Pulumi.yaml's declarations, the nrp stack file, validation messages, policy rules.

No Pulumi program runs here (see test_foundation/test_storage/test_render for rendered resources).
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from grace_infra.commands import cli
from grace_infra.config.catalog import CATALOG
from grace_infra.config.stack_config import ConfigError, GraceConfig
from grace_infra.config.stack_files import SECRET_KEYS
from grace_infra.nrp_rules import (
    Finding,
    PolicyViolation,
    Severity,
    check_config,
    check_secrets,
    enforce,
)

from .support import MIXED_MODELS, PROJECT_ROOT, base_config

PROJECT_FILE = yaml.safe_load((PROJECT_ROOT / "Pulumi.yaml").read_text(encoding="utf-8"))
DECLARED = PROJECT_FILE["config"]
# Pulumi's project schema (sdk/go/common/workspace/project.json) types only these.
PULUMI_CONFIG_TYPES = {"string", "integer", "boolean", "array"}


def parse(**overrides: object) -> GraceConfig:
    return GraceConfig.parse(base_config(**overrides))


# --- Pulumi.yaml ---------------------------------------------------------------------------------


def test_project_runs_the_python_program_in_the_project_venv() -> None:
    assert PROJECT_FILE["name"] == "grace"
    assert PROJECT_FILE["runtime"] == {
        "name": "python",
        "options": {"toolchain": "pip", "virtualenv": ".venv"},
    }


def test_every_config_key_and_secret_is_declared_and_nothing_else() -> None:
    keys = {info.alias or name for name, info in GraceConfig.model_fields.items()}
    assert set(DECLARED) == keys | set(SECRET_KEYS)


@pytest.mark.parametrize("key", sorted(DECLARED))
def test_each_declaration_is_valid_for_the_pulumi_cli(key: str) -> None:
    spec = DECLARED[key]
    assert ":" not in key, "project keys are written without the project namespace"
    assert set(spec) <= {"type", "items", "description", "secret", "default"}
    assert spec["description"].strip()
    if "type" in spec:
        assert spec["type"] in PULUMI_CONFIG_TYPES
        if spec["type"] == "array":
            assert spec["items"]["type"] in PULUMI_CONFIG_TYPES
        if "default" in spec and spec["type"] == "string":
            assert isinstance(spec["default"], str)
    elif "default" in spec:
        # Untyped keys carry objects or lists of objects, which the schema cannot type.
        assert isinstance(spec["default"], dict | list)


def test_required_keys_have_no_default_and_the_rest_do() -> None:
    without_default = {key for key, spec in DECLARED.items() if "default" not in spec}
    required = {info.alias for info in GraceConfig.model_fields.values() if info.is_required()}
    assert without_default == required == {"images", "models"}


@pytest.mark.parametrize(
    "key", sorted(k for k, s in DECLARED.items() if "default" in s and k not in SECRET_KEYS)
)
def test_declared_defaults_equal_the_programs_defaults(key: str) -> None:
    """The CLI applies Pulumi.yaml's default; the program applies pydantic's: they must agree."""
    required = {"images": base_config()["images"], "models": base_config()["models"]}
    with_declared = GraceConfig.parse({**required, key: DECLARED[key]["default"]})
    without = GraceConfig.parse(required)
    if DECLARED[key]["default"] == "":
        # The CLI passes "" for an unset string key; read_stack_config drops it, leaving pydantic's None.
        assert getattr(without, _field(key)) is None
    else:
        assert getattr(with_declared, _field(key)) == getattr(without, _field(key))


def _field(alias: str) -> str:
    return next(name for name, info in GraceConfig.model_fields.items() if (info.alias or name) == alias)


def test_optional_secrets_are_declared_without_the_secret_flag() -> None:
    """`secret: true` plus a default fails `pulumi preview` when the key is unset (the CLI applies the
    plaintext default, then demands it be encrypted); the program refuses plaintext values instead."""
    for key in SECRET_KEYS:
        assert DECLARED[key] == {"type": "string", "description": DECLARED[key]["description"], "default": ""}
        assert "--secret" in DECLARED[key]["description"]


def _described_fields(model: type[BaseModel], path: str) -> Iterator[tuple[str, str | None]]:
    for name, info in model.model_fields.items():
        yield f"{path}.{name}", info.description
        for arg in (info.annotation, *typing.get_args(info.annotation)):
            for candidate in (arg, *typing.get_args(arg)):
                nested = isinstance(candidate, type) and issubclass(candidate, BaseModel)
                if nested and candidate is not model:
                    yield from _described_fields(candidate, f"{path}.{name}")


def test_every_config_field_has_a_description() -> None:
    fields = dict(_described_fields(GraceConfig, "grace"))
    assert "grace.models.gpus" in fields
    assert [path for path, description in fields.items() if not description] == []


def test_a_model_override_keeps_its_constraint() -> None:
    with pytest.raises(ConfigError, match=r"^grace:models\[0\]\.gpus=0: Input should be greater than 0"):
        parse(models=[{"key": "gemma-2-2b", "gpus": 0}])


# --- Pulumi.nrp.yaml -----------------------------------------------------------------------------


def test_nrp_stack_is_the_researchers_original_deployment() -> None:
    config = parse()
    assert config.namespace.name == "grace-experiments"
    assert config.namespace.create is False
    quota = config.namespace.quota
    assert (quota.requests_cpu, quota.requests_memory, quota.requests_gpu) == ("200", "800Gi", 15)
    assert (quota.persistent_volume_claims, quota.pods) == (20, 50)
    storage = config.storage
    assert (storage.shared_class, storage.weights_class) == ("rook-cephfs", "rook-ceph-block")
    assert (storage.input.size, storage.input.access_mode.value) == ("5Gi", "ReadWriteMany")
    assert (storage.output.size, storage.output.access_mode.value) == ("100Gi", "ReadWriteMany")
    assert (storage.logs.size, storage.logs.access_mode.value) == ("10Gi", "ReadWriteMany")
    assert [m.key for m in config.served_models()] == list(CATALOG)
    assert [m.weights_pvc_gi for m in config.served_models()] == [10, 25, 70, 160, 15, 70]
    assert config.gpu.node_product == "NVIDIA-A100-SXM4-80GB"
    # A100 nodes advertise only nvidia.com/a100: derived from the product, never configured by hand.
    assert config.gpu.resource_name is None
    assert {m.gpu_resource for m in config.served_models()} == {"nvidia.com/a100"}
    assert {m.serving_mode.value for m in config.served_models()} == {"job"}
    assert config.images.vllm == "vllm/vllm-openai:v0.32.0"


def test_nrp_stack_file_holds_no_secret_values() -> None:
    document = yaml.safe_load((PROJECT_ROOT / "Pulumi.nrp.yaml").read_text(encoding="utf-8"))
    for key in SECRET_KEYS:
        value = document["config"].get(f"grace:{key}")
        assert value is None or (isinstance(value, dict) and set(value) == {"secure"})


def test_nrp_stack_passes_every_policy_rule() -> None:
    assert [f for f in check_config(parse()) if f.severity == Severity.ERROR] == []


# --- invalid configs: one sentence naming the key ------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"models": [{"key": "gemma-2-2b", "gpus": 2}]},
            "grace:models[0].tensorParallelSize=1 must equal gpus=2",
        ),
        ({"models": [{"key": "gemma-2-7b"}]}, "grace:models[0].key='gemma-2-7b' is not in the catalog"),
        (
            {"models": [{"key": "gemma-2-2b"}, {"key": "gemma-2-2b"}]},
            "grace:models[1].key='gemma-2-2b' is configured twice",
        ),
        ({"models": []}, "grace:models"),
        ({"modles": []}, "grace:modles is not a known setting"),
        (
            {"namespace": {"name": "Grace_Experiments"}},
            "grace:namespace.name='Grace_Experiments' is not a valid",
        ),
        ({"images": {"vllm": "vllm/vllm-openai:latest", "job": "j:1"}}, "grace:images.vllm="),
        ({"images": {"vllm": "vllm/vllm-openai", "job": "j:1"}}, "must be pinned to a tag or digest"),
        ({"images": {"vllm": "v:1"}}, "grace:images.job is required but not set."),
        (
            {"storage": {"output": {"size": "100GB", "accessMode": "ReadWriteMany"}}},
            "grace:storage.output.size=",
        ),
        (
            {"storage": {"logs": {"size": "1Gi", "accessMode": "ReadWriteAll"}}},
            "grace:storage.logs.accessMode='ReadWriteAll'",
        ),
        (
            {"experiments": {"models": ["gpt-5"]}},
            "grace:experiments.models[0]='gpt-5' is not a configured model",
        ),
        ({"namespace": {"quota": {"requestsGpu": -1}}}, "grace:namespace.quota.requestsGpu=-1"),
        (
            {"namespace": {"quota": {"requestsMemory": "lots"}}},
            "grace:namespace.quota.requestsMemory='lots' is not a Kubernetes quantity",
        ),
    ],
)
def test_invalid_config_names_the_key(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(**overrides)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


def test_missing_required_key_is_named() -> None:
    raw = base_config()
    del raw["images"]
    with pytest.raises(ConfigError, match=r"^grace:images is required but not set\.$"):
        GraceConfig.parse(raw)


# --- storage rules -------------------------------------------------------------------------------


def errors(config: GraceConfig) -> list[Finding]:
    return [f for f in check_config(config) if f.severity == Severity.ERROR]


def _storage(**changes: object) -> dict[str, object]:
    return {**base_config()["storage"], **changes}


@pytest.mark.parametrize(
    ("storage", "rule", "message"),
    [
        (
            _storage(sharedClass="rook-cephfs-ucsd"),
            "storage-forbidden-class",
            "grace:storage.sharedClass='rook-cephfs-ucsd' is refused",
        ),
        (
            _storage(weightsClass="rook-cephfs-ucsd"),
            "storage-forbidden-class",
            "grace:storage.weightsClass='rook-cephfs-ucsd' is refused",
        ),
        (
            _storage(
                logs={"size": "10Gi", "accessMode": "ReadWriteMany", "storageClass": "rook-cephfs-ucsd"}
            ),
            "storage-forbidden-class",
            "grace:storage.logs.storageClass='rook-cephfs-ucsd' is refused",
        ),
        (
            _storage(
                output={"size": "100Gi", "accessMode": "ReadWriteMany", "storageClass": "rook-ceph-block"}
            ),
            "storage-rwx-on-block",
            "grace:storage.output.accessMode=ReadWriteMany is impossible on block class 'rook-ceph-block'",
        ),
        (
            _storage(sharedClass="rook-ceph-block"),
            "storage-rwx-on-block",
            "grace:storage.output.accessMode=ReadWriteMany is impossible on block class",
        ),
        (
            _storage(output={"size": "100Gi", "accessMode": "ReadWriteOnce"}),
            "storage-single-node-shared",
            "grace:storage.output.accessMode=ReadWriteOnce cannot serve several Job pods",
        ),
        (
            _storage(input={"size": "5Gi", "accessMode": "ReadWriteOncePod"}),
            "storage-single-node-shared",
            "grace:storage.input.accessMode=ReadWriteOncePod cannot serve several Job pods",
        ),
        (
            _storage(logs={"size": "10Gi", "accessMode": "ReadOnlyMany"}),
            "storage-read-only-output",
            "grace:storage.logs.accessMode=ReadOnlyMany cannot take the Jobs' writes",
        ),
    ],
)
def test_storage_rule_refuses(storage: dict[str, object], rule: str, message: str) -> None:
    found = errors(parse(storage=storage))
    assert any(f.rule == rule and message in f.message for f in found), found


def test_input_may_be_read_only_many_and_output_read_write_many() -> None:
    assert errors(parse()) == []


# --- quota ---------------------------------------------------------------------------------------


def _quota(**changes: object) -> dict[str, object]:
    namespace = base_config()["namespace"]
    return {**namespace, "quota": {**namespace["quota"], **changes}}


def test_persistent_servers_over_the_gpu_quota_are_refused() -> None:
    found = errors(parse(models=MIXED_MODELS, namespace=_quota(requestsGpu=6)))
    assert [f.message for f in found if f.rule == "quota-exceeded"] == [
        "the persistent model servers request 7 nvidia.com/a100 GPUs together but "
        "grace:namespace.quota.requestsGpu allows 6."
    ]


def test_job_mode_peak_over_the_quota_is_a_warning() -> None:
    found = check_config(parse(models=MIXED_MODELS, namespace=_quota(requestsGpu=8)))
    assert [(f.rule, f.severity) for f in found if f.rule != "persistent-idle-gpus"] == [
        ("quota-queued", Severity.WARNING),
        ("gpu-reservation-needed", Severity.WARNING),
    ]
    assert "would request 11 nvidia.com/a100 GPUs but grace:namespace.quota.requestsGpu allows 8" in (
        found[0].message
    )


def test_a_pod_larger_than_the_whole_quota_is_an_error_not_a_queue() -> None:
    # llama-3-70b's job-mode pod needs 4 A100s on its own; a quota of 2 can never admit it.
    found = check_config(parse(namespace=_quota(requestsGpu=2)))
    unfittable = [f for f in found if f.rule == "quota-unfittable"]
    assert {f.severity for f in unfittable} == {Severity.ERROR}
    assert any(
        f.message.startswith("the pod of Job matrix-llama-3-70b requests 4 nvidia.com/a100 GPUs but "
                             "grace:namespace.quota.requestsGpu allows 2 in all, so it can never start")
        for f in unfittable
    ), unfittable
    # Every pod fits on its own under the committed quota: what does not fit at once only queues.
    assert not [f for f in check_config(parse()) if f.rule == "quota-unfittable"]
    memory = check_config(parse(namespace=_quota(requestsMemory="8Gi")))
    assert any(f.rule == "quota-unfittable" and "memory GiB" in f.message for f in memory)


def test_render_refuses_an_unfittable_pod_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = tmp_path / "small-quota.yaml"
    extra.write_text(yaml.safe_dump({"config": {"grace:namespace": _quota(requestsGpu=2)}}), encoding="utf-8")
    code = cli.main(["render", "--stack", "nrp", "--config-file", str(extra), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("error: [quota-unfittable] the pod of ")
    assert not (tmp_path / "out").exists()


def test_memory_quota_is_compared_in_gib() -> None:
    found = errors(parse(models=MIXED_MODELS, namespace=_quota(requestsMemory="80Gi")))
    assert any("84 memory GiB" in f.message and "allows 80" in f.message for f in found), found


def test_too_many_claims_for_the_quota_are_refused() -> None:
    found = errors(parse(namespace=_quota(persistentVolumeClaims=8)))
    assert any("needs 9 PersistentVolumeClaims" in f.message for f in found), found


# --- secrets and enforcement ---------------------------------------------------------------------


def test_gated_models_need_the_hugging_face_token() -> None:
    found = check_secrets(parse(), has_hf_token=False, has_deepseek_key=False)
    assert {f.model for f in found} == {"gemma-2-2b", "gemma-2-9b", "gemma-2-27b", "llama-3-70b"}
    assert all("grace:hfToken is not set" in f.message for f in found)
    assert check_secrets(parse(), has_hf_token=True, has_deepseek_key=False) == []


def test_ungated_models_need_no_token() -> None:
    config = parse(models=[{"key": "gpt-oss-20b"}])
    assert check_secrets(config, has_hf_token=False, has_deepseek_key=False) == []


def test_external_deepseek_needs_its_key() -> None:
    config = parse(jobs={"deepseekEndpoint": "https://api.deepseek.com/v1"})
    found = check_secrets(config, has_hf_token=True, has_deepseek_key=False)
    assert [f.rule for f in found] == ["secret-deepseek-key-missing"]
    assert check_secrets(config, has_hf_token=True, has_deepseek_key=True) == []


def test_enforce_raises_the_first_error_and_counts_the_rest() -> None:
    findings = [
        Finding("w", Severity.WARNING, None, "just so."),
        Finding("a", Severity.ERROR, "m1", "first problem."),
        Finding("b", Severity.ERROR, "m2", "second problem."),
    ]
    warned: list[str] = []
    with pytest.raises(PolicyViolation) as caught:
        enforce(findings, warn=warned.append)
    assert str(caught.value) == "[a] first problem. (1 more policy errors)"
    assert warned == ["[w] just so."]


def test_enforce_passes_warnings_only() -> None:
    warned: list[str] = []
    enforce([Finding("w", Severity.WARNING, None, "careful.")], warn=warned.append)
    assert warned == ["[w] careful."]
