"""`python -m grace_infra render`: config loading, the files it writes, and its exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grace_infra.commands.offline import REDACTED
from grace_infra.commands.render import (
    SECRET_PLACEHOLDER,
    Rendered,
    RenderInputError,
    main,
    render,
    write_render,
)
from grace_infra.config.stack_files import StackFileError, load_raw_config
from grace_infra.errors import ConfigError

from .support import PROJECT_ROOT, base_config, render_stack

# --- loading config ------------------------------------------------------------------------------


def _project(tmp_path: Path, stack_config: dict, defaults: dict | None = None) -> Path:
    declared = {key: {"description": key, "default": value} for key, value in (defaults or {}).items()}
    (tmp_path / "Pulumi.yaml").write_text(yaml.safe_dump({"name": "grace", "config": declared}))
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump({"config": stack_config}))
    return tmp_path


def test_stack_values_override_project_defaults(tmp_path: Path) -> None:
    root = _project(
        tmp_path,
        {"grace:jobs": {"batchSize": 8}, "kubernetes:context": "nautilus"},
        defaults={"jobs": {"batchSize": 64}, "plan": {"campaignDays": 14}, "renderYamlTo": ""},
    )
    raw, secrets = load_raw_config("dev", project_root=root)
    assert raw == {"jobs": {"batchSize": 8}, "plan": {"campaignDays": 14}}  # "" default means unset
    assert secrets == set()


def test_config_files_replace_whole_top_level_keys_in_order(tmp_path: Path) -> None:
    root = _project(
        tmp_path, {"grace:jobs": {"batchSize": 8, "maxRetries": 1}, "grace:plan": {"campaignDays": 3}}
    )
    first = tmp_path / "first.yaml"
    first.write_text(yaml.safe_dump({"config": {"grace:jobs": {"batchSize": 16}}}))
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump({"grace:jobs": {"batchSize": 32}, "plan": {"campaignDays": 7}}))
    raw, _ = load_raw_config("dev", [first, second], project_root=root)
    assert raw == {"jobs": {"batchSize": 32}, "plan": {"campaignDays": 7}}


def test_encrypted_values_become_secrets_without_a_value(tmp_path: Path) -> None:
    root = _project(tmp_path, {"grace:hfToken": {"secure": "v1:abc"}, "grace:plan": {"campaignDays": 3}})
    raw, secrets = load_raw_config("dev", project_root=root)
    assert secrets == {"hfToken"}
    assert "hfToken" not in raw


def test_an_encrypted_ordinary_key_is_a_clear_error(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"grace:jobs": {"secure": "v1:abc"}}))
    with pytest.raises(RenderInputError, match=r"^grace:jobs is stored encrypted and cannot be decrypted"):
        render("nrp", [extra])


def test_missing_stack_and_unreadable_files_are_one_line_errors(tmp_path: Path) -> None:
    root = _project(tmp_path, {})
    with pytest.raises(StackFileError, match=r"^--stack prod: Pulumi\.prod\.yaml does not exist in "):
        load_raw_config("prod", project_root=root)
    broken = tmp_path / "broken.yaml"
    broken.write_text("grace:jobs: [unclosed\n")
    with pytest.raises(StackFileError, match=r"broken\.yaml cannot be read as YAML") as caught:
        load_raw_config("dev", [broken], project_root=root)
    assert "\n" not in str(caught.value)
    with pytest.raises(StackFileError, match=r"missing\.yaml does not exist"):
        load_raw_config("dev", [tmp_path / "missing.yaml"], project_root=root)
    listed = tmp_path / "list.yaml"
    listed.write_text("- grace:jobs\n")
    with pytest.raises(StackFileError, match="must be a mapping of grace:<key> settings"):
        load_raw_config("dev", [listed], project_root=root)


# --- what render computes ------------------------------------------------------------------------


@pytest.fixture
def rendered(nrp_rendered: Rendered) -> Rendered:
    return nrp_rendered


def test_render_fills_only_the_needed_secrets_with_placeholders(rendered) -> None:
    assert rendered.placeholder_secrets == ["hfToken"]  # gated models; DeepSeek is not external in nrp


def test_plan_matches_what_the_model_servers_request(rendered) -> None:
    workloads = {
        (m["kind"], m["metadata"]["name"]): m
        for m in rendered.run.manifests()
        if m["kind"] in {"StatefulSet", "Job"}
    }
    assert rendered.plan["models"]
    for row in rendered.plan["models"]:
        # A persistent server is StatefulSet vllm-<key>; a job-mode server the sidecar of Job matrix-<key>.
        where = ("StatefulSet", f"vllm-{row['model']}")
        if row["servingMode"] != "persistent":
            where = ("Job", f"matrix-{row['model']}")
        spec = workloads[where]["spec"]["template"]["spec"]
        [vllm] = [
            container
            for container in [*spec.get("initContainers", []), *spec["containers"]]
            if container["name"] == "vllm"
        ]
        resources = vllm["resources"]
        assert resources["requests"][row["gpuResource"]] == str(row["gpus"])
        assert resources["limits"][row["gpuResource"]] == str(row["gpus"])
        assert resources["requests"]["memory"] == f"{row['memoryRequestGi']}Gi"
        assert resources["limits"]["memory"] == f"{row['memoryLimitGi']}Gi"
        assert row["memoryLimitGi"] <= row["memoryRequestGi"] * 1.2
        assert row["cpuLimit"] <= round(row["cpuRequest"] * 1.2, 6)


def test_plan_totals_against_the_quota(rendered) -> None:
    quota = rendered.plan["quota"]
    assert quota["quota"] == {
        "gpus": 15,
        "cpu": 200,
        "memoryGi": 800,
        "pods": 50,
        "persistentVolumeClaims": 20,
    }
    gpus = {row["model"]: row["gpus"] for row in rendered.plan["models"]}
    assert gpus == {
        "gemma-2-2b": 1, "gemma-2-9b": 1, "gemma-2-27b": 2,
        "llama-3-70b": 4, "gpt-oss-20b": 1, "gpt-oss-120b": 2,
    }  # fmt: skip
    assert quota["peak"]["gpus"] == sum(gpus.values()) == 11
    assert quota["persistent"]["gpus"] == sum(
        row["gpus"] for row in rendered.plan["models"] if row["servingMode"] == "persistent"
    )
    assert quota["persistentVolumeClaims"] == 9


def test_render_yaml_to_routes_every_object_through_one_provider(tmp_path: Path) -> None:
    run = render_stack(base_config(renderYamlTo=str(tmp_path / "yaml")))
    [provider] = run.of_type("pulumi:providers:kubernetes")
    assert provider.inputs["renderYamlToDirectory"] == str(tmp_path / "yaml")
    objects = [r for r in run.resources if r.type.startswith("kubernetes:")]
    assert len(objects) > 20
    for resource in objects:
        assert resource.provider.startswith(f"{provider.urn}::"), resource.name
    assert any("plaintext" in warning for warning in run.warnings)


def test_without_render_yaml_to_no_explicit_provider(nrp_run) -> None:
    assert nrp_run.of_type("pulumi:providers:kubernetes") == []


# --- writing -------------------------------------------------------------------------------------


def test_write_replaces_a_previous_render_and_leaves_no_temporary_files(rendered, tmp_path: Path) -> None:
    out = tmp_path / "render"
    write_render(rendered, out)
    (out / "manifests" / "Stale_object.yaml").write_text("kind: Stale\n")
    count = write_render(rendered, out)
    assert count == len(rendered.run.manifests())
    assert not (out / "manifests" / "Stale_object.yaml").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["render"]


def test_write_refuses_a_directory_with_other_files(rendered, tmp_path: Path) -> None:
    out = tmp_path / "notes"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(RenderInputError, match=r"holds files a render did not write \(thesis.tex\)"):
        write_render(rendered, out)
    assert (out / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


def test_main_reports_a_config_error_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"grace:models": [{"key": "gemma-2-2b", "tensorParallelSize": 2}]}))
    assert main(["--config-file", str(extra), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: grace:models[0].tensorParallelSize=2 must equal gpus=1\n"
    assert captured.out == ""
    assert not (tmp_path / "out").exists()


def test_config_error_is_raised_before_pulumi_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the program ran although the config is invalid")

    monkeypatch.setattr("grace_infra.commands.render.run_offline", must_not_run)
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"grace:namespace": {"name": "Bad_Name"}}))
    with pytest.raises(ConfigError, match=r"^grace:namespace\.name='Bad_Name' is not a valid"):
        render("nrp", [extra])


# --- the command as a user runs it ----------------------------------------------------------------


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "grace_infra", "render", *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_cli_renders_the_nrp_stack(tmp_path: Path, nrp_rendered: Rendered) -> None:
    out = tmp_path / "render"
    result = _run_cli("--stack", "nrp", "--out", str(out))
    assert result.returncode == 0, result.stderr
    # The plan's own headline (its figures: test_plan_gpu_hours.py and test_nrp_cluster.py).
    assert result.stdout.splitlines()[0] == nrp_rendered.plan["headline"]
    assert result.stdout.startswith("GPU-hours: ")
    assert result.stdout.splitlines()[2].split() == [
        "model",
        "mode",
        "GPUs",
        "node",
        "product",
        "weights",
        "PVC",
    ]
    assert "gemma-2-2b" in result.stdout
    assert "NVIDIA-A100-SXM4-80GB" in result.stdout
    manifests = sorted((out / "manifests").iterdir())
    assert len(manifests) > 30
    everything = "".join(p.read_text() for p in [*manifests, out / "resources.json", out / "plan.json"])
    assert SECRET_PLACEHOLDER not in everything
    for path in manifests:
        manifest = yaml.safe_load(path.read_text())
        assert path.name == f"{manifest['kind']}_{manifest['metadata']['name']}.yaml"
    secret = yaml.safe_load((out / "manifests" / "Secret_huggingface-token.yaml").read_text())
    assert secret["stringData"] == {"token": REDACTED}
    policy = yaml.safe_load((out / "manifests" / "NetworkPolicy_grace-model-server-ingress.yaml").read_text())
    assert policy["spec"]["ingress"][0]["ports"][0]["port"] == 8000  # an int, not 8000.0 or "8000"
    resources = json.loads((out / "resources.json").read_text())
    assert {tuple(sorted(r)) for r in resources} == {
        (
            "custom", "dependsOn", "name", "parent", "protect", "replaceOnChanges", "retainOnDelete", "type",
            "urn",
        )
    }
    pvcs = [r for r in resources if r["type"] == "kubernetes:core/v1:PersistentVolumeClaim"]
    assert len(pvcs) == 9
    assert all(r["protect"] and r["retainOnDelete"] for r in pvcs)
    plan = json.loads((out / "plan.json").read_text())
    assert {"models", "storage", "quota", "findings"} <= set(plan)


@pytest.mark.slow
def test_cli_refuses_a_policy_violation_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    extra = tmp_path / "ucsd.yaml"
    extra.write_text(yaml.safe_dump({"config": {"grace:storage": {"sharedClass": "rook-cephfs-ucsd"}}}))
    out = tmp_path / "render"
    result = _run_cli("--config-file", str(extra), "--out", str(out))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: [storage-forbidden-class] grace:storage.sharedClass='rook-cephfs-ucsd' is refused: "
        "NRP may purge that class without notice; use rook-cephfs."
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ucsd.yaml"]
