"""Models defined in the stack config: a new key with its own fields, validated as strictly as the
catalog's entries, rendered without any code change; the catalog as defaults for the keys it knows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic.alias_generators import to_camel

from grace_infra import constants as c
from grace_infra.commands.render import main
from grace_infra.config.catalog import CATALOG, ModelSpec
from grace_infra.config.stack_config import ConfigError, GraceConfig, ModelConfig, required_model_fields

from .support import assert_valid_k8s, base_config, render_stack

# A model the catalog does not know: Qwen2.5-7B-Instruct, numbers from its Hugging Face config.json.
NEW_KEY = "qwen-2-5-7b"
NEW_MODEL: dict[str, Any] = {
    "key": NEW_KEY,
    "hfRepo": "Qwen/Qwen2.5-7B-Instruct",
    "gated": False,
    "paramsBillion": 7.6,
    "weightsGb": 15.2,
    "numAttentionHeads": 28,
    "numKvHeads": 4,
    "numLayers": 28,
    "headDim": 128,
    "gpus": 1,
    "tensorParallelSize": 1,
    "dtype": "bfloat16",
    "maxModelLen": 8192,
    "weightsPvcGi": 20,
    "cpuRequest": 6,
    "memoryRequestGi": 48,
    "loadBudgetS": 900,
}


def with_models(*models: dict[str, Any]) -> dict[str, Any]:
    return base_config(
        models=list(models), experiments={"studies": ["study1"], "experiments": ["exp1"]}
    )


def test_every_catalog_field_can_be_set_from_the_stack_with_the_same_constraints() -> None:
    for name, spec in ModelSpec.model_fields.items():
        if name == "key":
            continue
        entry = ModelConfig.model_fields.get(name)
        assert entry is not None, f"grace:models[].{to_camel(name)} cannot be set from the stack"
        assert entry.metadata == spec.metadata, name
        assert not entry.is_required()


def test_the_required_fields_are_the_catalogs_fields_without_a_default() -> None:
    assert required_model_fields()[:3] == ["hf_repo", "gated", "params_billion"]
    assert "revision" not in required_model_fields()
    assert "gpu_memory_utilization" not in required_model_fields()
    # memoryRequestGi is optional (estimated from vLLM's processes), so NEW_MODEL's value is an override.
    assert {to_camel(name) for name in required_model_fields()} == set(NEW_MODEL) - {"key", "memoryRequestGi"}


def test_a_new_model_is_served_from_its_own_fields_with_the_catalogs_defaults_for_the_rest() -> None:
    config = GraceConfig.parse(with_models({"key": "gemma-2-2b"}, NEW_MODEL))
    served = {m.key: m for m in config.served_models()}
    assert served["gemma-2-2b"].model_dump(include=set(ModelSpec.model_fields)) == CATALOG[
        "gemma-2-2b"
    ].model_dump()
    qwen = served[NEW_KEY]
    assert qwen.hf_repo == "Qwen/Qwen2.5-7B-Instruct"
    assert qwen.max_model_len == 8192
    assert qwen.revision == ModelSpec.model_fields["revision"].default
    assert qwen.gpu_memory_utilization == ModelSpec.model_fields["gpu_memory_utilization"].default


def test_a_catalog_key_still_takes_overrides() -> None:
    config = GraceConfig.parse(with_models({"key": "gemma-2-9b", "maxModelLen": 2048, "numLayers": 42}))
    (served,) = config.served_models()
    assert served.max_model_len == 2048
    assert served.hf_repo == CATALOG["gemma-2-9b"].hf_repo


def test_a_new_model_missing_required_fields_names_them_all() -> None:
    incomplete = {k: v for k, v in NEW_MODEL.items() if k not in {"hfRepo", "numKvHeads"}}
    with pytest.raises(ConfigError) as caught:
        GraceConfig.parse(with_models({"key": "gemma-2-2b"}, incomplete))
    assert str(caught.value) == (
        f"grace:models[1].key='{NEW_KEY}' is not in the catalog ({', '.join(CATALOG)}), so the entry must "
        "set every required model field; missing: hfRepo, numKvHeads"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gpus": 0}, r"^grace:models\[0\]\.gpus=0: Input should be greater than 0"),
        ({"dtype": "half-ish"}, r"^grace:models\[0\]\.dtype='half-ish': Input should be 'auto'"),
        ({"tensorParallelSize": 2}, r"^grace:models\[0\]\.tensorParallelSize=2 must equal gpus=1$"),
        ({"gpuMemoryUtilization": 1.5}, r"^grace:models\[0\]\.gpuMemoryUtilization=1\.5: Input should be"),
        ({"hfRepos": "typo"}, r"^grace:models\[0\]\.hfRepos is not a known setting"),
    ],
)
def test_a_new_model_is_validated_like_a_catalog_entry(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GraceConfig.parse(with_models({**NEW_MODEL, **change}))


@pytest.mark.parametrize("key", ["Qwen-7B", "qwen_7b", "-qwen", "q" * (c.MODEL_KEY_MAX_LENGTH + 1)])
def test_a_new_key_must_fit_in_kubernetes_names(key: str) -> None:
    with pytest.raises(ConfigError, match=r"^grace:models\[0\]\.key='.*' must be lowercase letters"):
        GraceConfig.parse(with_models({**NEW_MODEL, "key": key}))


def test_a_key_of_the_longest_allowed_length_fits_every_name() -> None:
    key = "q" * c.MODEL_KEY_MAX_LENGTH
    (served,) = GraceConfig.parse(with_models({**NEW_MODEL, "key": key})).served_models()
    assert len(served.weights_pvc_name) == c.KUBERNETES_NAME_MAX_LENGTH


def test_a_new_model_renders_its_server_claim_and_jobs() -> None:
    run = render_stack(with_models({**NEW_MODEL, "servingMode": "persistent"}))
    server = run.manifest("StatefulSet", f"{c.MODEL_SERVER_PREFIX}{NEW_KEY}")
    assert_valid_k8s(server)
    containers = server["spec"]["template"]["spec"]["containers"]
    (vllm,) = [x for x in containers if x["name"] == c.VLLM_CONTAINER_NAME]
    command_line = " ".join([*vllm.get("command", []), *vllm.get("args", [])])
    assert "--max-model-len=8192" in command_line
    assert "--dtype=bfloat16" in command_line
    assert f"--served-model-name={NEW_KEY}" in command_line
    claim = run.manifest("PersistentVolumeClaim", f"{c.WEIGHTS_PVC_PREFIX}{NEW_KEY}")
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    job_names = [m["metadata"]["name"] for m in run.manifests() if m["kind"] == "Job"]
    assert any(name.endswith(NEW_KEY) for name in job_names), job_names
    downloads = yaml.safe_dump(run.manifest("Job", f"{c.WEIGHTS_DOWNLOAD_JOB_PREFIX}{NEW_KEY}"))
    assert "Qwen/Qwen2.5-7B-Instruct" in downloads


def test_render_reports_a_new_model_missing_a_field_in_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = tmp_path / "extra.yaml"
    incomplete = {k: v for k, v in NEW_MODEL.items() if k != "maxModelLen"}
    extra.write_text(yaml.safe_dump({"grace:models": [incomplete]}))
    assert main(["--config-file", str(extra), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"error: grace:models[0].key='{NEW_KEY}' is not in the catalog ({', '.join(CATALOG)}), so the "
        "entry must set every required model field; missing: maxModelLen"
    ]
    assert captured.out == ""
    assert not (tmp_path / "out").exists()
