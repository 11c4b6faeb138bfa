"""Rendered vLLM model servers: the StatefulSet, Service and ServiceMonitor of each model,
both serving modes, and the sidecar parts the ExperimentJob embeds.

Each render runs the whole program under Pulumi mocks (about 1 s), so renders are module-scoped and
the per-model tests read from them.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from grace_infra import constants as c
from grace_infra.commands.offline import OfflineRun, RecordingMonitor, run_offline
from grace_infra.commands.plan_report import build_plan
from grace_infra.components import model_server as ms
from grace_infra.components import weights_job
from grace_infra.config.catalog import CATALOG, Dtype
from grace_infra.config.quantities import parse_quantity
from grace_infra.config.stack_config import GraceConfig
from grace_infra.manifests import download_job, vllm_server
from grace_infra.planning.matrix import server_url

from .support import assert_valid_k8s, base_config, render_stack

VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"
JOB_IMAGE = "registry.example/grace-job:0.1.0"  # the weight downloads run the job image
A100 = "NVIDIA-A100-SXM4-80GB"
GPU_RESOURCE = "nvidia.com/a100"  # not the default, so a test notices a hard-coded nvidia.com/gpu
ALL_MODELS = list(CATALOG)
# Within NRP's 2-GPU StatefulSet rule; llama-3-70b (4 GPUs) is covered with an exception below.
EXCEPTION_REASON = "NRP ticket 1234 (test)"


def raw_config(**overrides: Any) -> dict[str, Any]:
    """The nrp stack with all six models persistent (llama-3-70b under an exception) on A100 nodes."""
    defaults: dict[str, Any] = {
        "images": {"vllm": VLLM_IMAGE, "job": JOB_IMAGE},
        "gpu": {"resourceName": GPU_RESOURCE, "nodeProduct": A100, "memoryGb": 80},
        "models": [{"key": key, "servingMode": "persistent"} for key in ALL_MODELS],
        "exceptions": [{"model": "llama-3-70b", "rule": "gpus-per-stateful-pod", "reason": EXCEPTION_REASON}],
        # One experiment keeps the Jobs few: these tests look at the servers.
        "experiments": {"studies": ["study1"], "experiments": ["exp1"]},
    }
    return base_config(**{**defaults, **overrides})


def render(raw: dict[str, Any]) -> OfflineRun:
    return render_stack(raw)


def parsed(raw: dict[str, Any]) -> GraceConfig:
    return GraceConfig.parse(raw)


@pytest.fixture(scope="module")
def persistent_run() -> OfflineRun:
    return render(raw_config())


@pytest.fixture(scope="module")
def config() -> GraceConfig:
    return parsed(raw_config())


def statefulset(run: OfflineRun, key: str) -> dict[str, Any]:
    return run.manifest("StatefulSet", f"vllm-{key}")


def pod_spec(run: OfflineRun, key: str) -> dict[str, Any]:
    return statefulset(run, key)["spec"]["template"]["spec"]


def download_spec(run: OfflineRun, key: str) -> dict[str, Any]:
    return run.manifest("Job", f"weights-{key}")["spec"]["template"]["spec"]


def vllm(run: OfflineRun, key: str) -> dict[str, Any]:
    (container,) = [x for x in pod_spec(run, key)["containers"] if x["name"] == c.VLLM_CONTAINER_NAME]
    return container


def flag_values(args: list[str]) -> dict[str, str]:
    flags = [a for a in args if a.startswith("--")]
    return dict(a.removeprefix("--").split("=", 1) if "=" in a else (a.removeprefix("--"), "") for a in flags)


# --- the vLLM container, per model -----------------------------------------------------------------


@pytest.mark.parametrize("key", ALL_MODELS)
def test_vllm_args_follow_the_catalog(persistent_run: OfflineRun, key: str) -> None:
    spec = CATALOG[key]
    container = vllm(persistent_run, key)
    flags = flag_values(container["args"])
    assert container["command"] == ["vllm", "serve"]
    # The positional model argument: vLLM 0.32 warns that `serve --model` will be removed.
    assert container["args"][0] == c.WEIGHTS_MOUNT
    assert not [a for a in container["args"] if a.startswith("--model")]
    assert flags["served-model-name"] == key
    assert flags["tensor-parallel-size"] == str(spec.gpus)
    assert flags["dtype"] == spec.dtype.value
    assert flags["max-model-len"] == str(spec.max_model_len)
    assert float(flags["gpu-memory-utilization"]) == spec.gpu_memory_utilization
    assert "enable-chunked-prefill" in flags
    assert "enable-prefix-caching" in flags
    assert int(flags["max-logprobs"]) >= 20
    assert json.loads(flags["structured-outputs-config"]) == {
        "backend": "xgrammar",
        "disable_any_whitespace": True,
    }
    if spec.extra_args:  # catalog extras come last so they can refine the defaults
        assert container["args"][-len(spec.extra_args) :] == list(spec.extra_args)


def test_gemma2_is_served_in_bfloat16_and_gpt_oss_on_the_ampere_backend(persistent_run: OfflineRun) -> None:
    for key in ("gemma-2-2b", "gemma-2-9b", "gemma-2-27b"):
        assert "--dtype=bfloat16" in vllm(persistent_run, key)["args"]
    for key in ("gpt-oss-20b", "gpt-oss-120b"):
        args = vllm(persistent_run, key)["args"]
        assert "--dtype=auto" in args
        assert "--attention-backend=TRITON_ATTN" in args
    assert CATALOG["gemma-2-27b"].dtype is Dtype.BFLOAT16


@pytest.mark.parametrize("key", ALL_MODELS)
def test_gpus_under_the_configured_resource_name(persistent_run: OfflineRun, key: str) -> None:
    resources = vllm(persistent_run, key)["resources"]
    gpus = str(CATALOG[key].gpus)
    assert resources["requests"][GPU_RESOURCE] == gpus
    assert resources["limits"][GPU_RESOURCE] == gpus
    assert "nvidia.com/gpu" not in resources["requests"]


@pytest.mark.parametrize("key", ALL_MODELS)
def test_every_limit_is_within_1_2_times_its_request(persistent_run: OfflineRun, key: str) -> None:
    containers = [
        *pod_spec(persistent_run, key)["containers"],
        *download_spec(persistent_run, key)["containers"],
    ]
    assert "initContainers" not in pod_spec(persistent_run, key)  # the download is its own Job
    assert len(containers) == 2
    for container in containers:
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert set(limits) == set(requests), container["name"]
        for resource, limit in limits.items():
            assert parse_quantity(limit) <= parse_quantity(requests[resource]) * Decimal("1.2"), (
                container["name"],
                resource,
            )
    # The memory request is the plan's (planning/sizing.py): no catalog entry fixes one.
    (row,) = [r for r in build_plan(parsed(raw_config()))["models"] if r["model"] == key]
    assert CATALOG[key].memory_request_gi is None
    assert vllm(persistent_run, key)["resources"]["requests"]["memory"] == f"{row['memoryRequestGi']}Gi"


@pytest.mark.parametrize("key", ALL_MODELS)
def test_shared_memory_exactly_when_tensor_parallel(persistent_run: OfflineRun, key: str) -> None:
    volumes = {v["name"]: v for v in pod_spec(persistent_run, key)["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in vllm(persistent_run, key)["volumeMounts"]}
    if CATALOG[key].tensor_parallel_size > 1:
        assert volumes[vllm_server.SHM_VOLUME]["emptyDir"] == {
            "medium": "Memory",
            "sizeLimit": f"{c.SHM_SIZE_LIMIT_GI}Gi",
        }
        assert mounts["/dev/shm"] == vllm_server.SHM_VOLUME
    else:
        assert vllm_server.SHM_VOLUME not in volumes
        assert "/dev/shm" not in mounts


@pytest.mark.parametrize("key", ALL_MODELS)
def test_startup_probe_budget_covers_the_load_time(persistent_run: OfflineRun, key: str) -> None:
    container = vllm(persistent_run, key)
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["failureThreshold"] * startup["periodSeconds"] >= CATALOG[key].load_budget_s
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
        assert "initialDelaySeconds" not in container[probe]  # the startup probe holds them back instead


def test_a_70b_model_gets_a_longer_startup_budget_than_a_2b_model(persistent_run: OfflineRun) -> None:
    small = vllm(persistent_run, "gemma-2-2b")["startupProbe"]["failureThreshold"]
    large = vllm(persistent_run, "llama-3-70b")["startupProbe"]["failureThreshold"]
    assert large * c.STARTUP_PROBE_PERIOD_S >= 45 * 60  # 140 GB from Ceph: well over 10 minutes
    assert large > small


@pytest.mark.parametrize("key", ALL_MODELS)
def test_node_selector_and_pinned_images(persistent_run: OfflineRun, key: str) -> None:
    spec = pod_spec(persistent_run, key)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": A100}
    assert {x["image"] for x in spec["containers"]} == {VLLM_IMAGE}
    assert {x["image"] for x in download_spec(persistent_run, key)["containers"]} == {JOB_IMAGE}


def test_per_model_gpu_product_overrides_the_default() -> None:
    raw = raw_config(models=[{"key": "gemma-2-2b", "gpuProduct": "NVIDIA-L40"}], exceptions=[])
    model = parsed(raw).served_models()[0]
    assert vllm_server.statefulset_pod_spec(model, parsed(raw))["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-L40"
    }
    no_product = raw_config(gpu={"memoryGb": 80}, models=[{"key": "gemma-2-2b"}], exceptions=[])
    assert "nodeSelector" not in vllm_server.statefulset_pod_spec(
        parsed(no_product).served_models()[0], parsed(no_product)
    )


@pytest.mark.parametrize("key", ALL_MODELS)
def test_labels_service_and_selector(persistent_run: OfflineRun, key: str) -> None:
    sts = statefulset(persistent_run, key)
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert pod_labels[c.LABEL_PROJECT] == "grace"
    assert pod_labels[c.LABEL_COMPONENT] == c.COMPONENT_MODEL_SERVER
    assert pod_labels[c.LABEL_INSTANCE] == key
    assert c.LABEL_EGRESS_HTTPS not in pod_labels  # weights and vocabulary are on the claim before it starts
    service = persistent_run.manifest("Service", f"vllm-{key}")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]
    selector = service["spec"]["selector"]
    assert selector.items() <= pod_labels.items()
    assert selector == sts["spec"]["selector"]["matchLabels"]
    # Selecting one model only: another model's pods must not match.
    other = next(k for k in ALL_MODELS if k != key)
    assert (
        not selector.items()
        <= statefulset(persistent_run, other)["spec"]["template"]["metadata"]["labels"].items()
    )


@pytest.mark.parametrize("key", ALL_MODELS)
def test_least_privilege_and_documented_exceptions(persistent_run: OfflineRun, key: str) -> None:
    sts = statefulset(persistent_run, key)
    spec = sts["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == c.SA_MODEL_SERVER
    assert spec["enableServiceLinks"] is False
    # The non-root download writes the root-owned weights claim through its pod's fsGroup.
    download = download_spec(persistent_run, key)
    assert download["securityContext"]["fsGroup"] == c.VLLM_UID
    users = {id(x): c.VLLM_UID for x in spec["containers"]}  # the vLLM image's own `vllm` user
    users |= {id(x): c.WORKER_UID for x in download["containers"]}  # the job image's user
    for container in [*spec["containers"], *download["containers"]]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == users[id(container)]
        assert context["readOnlyRootFilesystem"] is True
        assert container["imagePullPolicy"] == "Always"
    # $HOME and /tmp, where vLLM, torch.compile and Triton write caches, are a writable emptyDir.
    mounts = {m["mountPath"]: m for m in vllm(persistent_run, key)["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for path in (c.VLLM_HOME, "/tmp"):
        assert "emptyDir" in volumes[mounts[path]["name"]]
    env = {e["name"]: e["value"] for e in vllm(persistent_run, key)["env"]}
    assert env["HOME"] == c.VLLM_HOME
    # What stays failed in the security scan is waived on the object, each with its reason.
    skips = {v.split("=", 1)[0]: v.split("=", 1)[1] for k, v in sts["metadata"]["annotations"].items()
             if k.startswith("checkov.io/skip")}  # fmt: skip
    assert set(skips) == {"CKV_K8S_43", "CKV_K8S_40"}
    assert "uid 2000" in skips["CKV_K8S_40"]


@pytest.mark.parametrize("key", ALL_MODELS)
def test_weights_come_from_the_storage_claim_read_only(persistent_run: OfflineRun, key: str) -> None:
    sts = statefulset(persistent_run, key)
    assert "volumeClaimTemplates" not in sts["spec"]  # the claim must outlive the StatefulSet
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    # Read-only at the volume level too: the kubelet then applies no fsGroup ownership change to it.
    claim = {"claimName": f"grace-model-weights-{key}", "readOnly": True}
    assert volumes[vllm_server.WEIGHTS_VOLUME]["persistentVolumeClaim"] == claim
    weights_mount = next(
        m for m in vllm(persistent_run, key)["volumeMounts"] if m["name"] == vllm_server.WEIGHTS_VOLUME
    )
    expected = {"name": vllm_server.WEIGHTS_VOLUME, "mountPath": "/model-weights", "readOnly": True}
    assert weights_mount == expected


def test_statefulset_follows_its_weight_download_which_follows_the_claim(persistent_run: OfflineRun) -> None:
    pvcs = {
        r.inputs["metadata"]["name"]: r.urn
        for r in persistent_run.of_type("kubernetes:core/v1:PersistentVolumeClaim")
    }
    jobs = {r.inputs["metadata"]["name"]: r for r in persistent_run.of_type("kubernetes:batch/v1:Job")}
    for key in ALL_MODELS:
        resource = next(
            r
            for r in persistent_run.of_type("kubernetes:apps/v1:StatefulSet")
            if r.name == f"vllm-{key}-statefulset"
        )
        download = jobs[f"weights-{key}"]
        assert download.urn in resource.depends_on
        assert pvcs[f"grace-model-weights-{key}"] in download.depends_on
        assert persistent_run.by_urn(download.parent).type == weights_job.TYPE_TOKEN
        parent = persistent_run.by_urn(resource.parent)
        assert parent.type == ms.TYPE_TOKEN
        assert parent.name == f"vllm-{key}"


# --- the weight download Job ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ALL_MODELS)
def test_download_job(persistent_run: OfflineRun, key: str) -> None:
    job = persistent_run.manifest("Job", f"weights-{key}")
    assert c.AWAIT_OVERRIDE_ANNOTATION not in job["metadata"].get("annotations", {})  # pulumi up waits
    assert job["spec"]["template"]["metadata"]["labels"][c.LABEL_EGRESS_HTTPS] == "true"
    (init,) = download_spec(persistent_run, key)["containers"]
    spec = CATALOG[key]
    assert init["name"] == c.WEIGHTS_DOWNLOAD_CONTAINER_NAME
    assert init["image"] == JOB_IMAGE
    assert init["command"][:2] == ["python", "-c"]
    assert "pip" not in " ".join(init["command"][:2])
    assert "import grace_infra" not in init["command"][2]  # runs inside the job image, not from here
    env = {e["name"]: e for e in init["env"]}
    assert env["GRACE_HF_REPO"]["value"] == spec.hf_repo
    assert env["GRACE_HF_REVISION"]["value"] == spec.revision
    assert env["HF_HOME"]["value"].startswith("/tmp/")
    assert "original/*" in env["GRACE_IGNORE_PATTERNS"]["value"]
    # The token is a file from the Secret (never an environment variable), required only when gated.
    assert "HF_TOKEN" not in env
    assert env["HF_TOKEN_PATH"]["value"] == f"{c.HF_TOKEN_MOUNT}/{c.HF_TOKEN_SECRET_KEY}"
    mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
    assert mounts == {
        "/model-weights": vllm_server.WEIGHTS_VOLUME,
        "/tmp": download_job.HF_CACHE_VOLUME,
        c.HF_TOKEN_MOUNT: download_job.HF_TOKEN_VOLUME,
    }
    volumes = {v["name"]: v for v in download_spec(persistent_run, key)["volumes"]}
    assert volumes[download_job.HF_TOKEN_VOLUME]["secret"] == {
        "secretName": "huggingface-token",
        "items": [{"key": c.HF_TOKEN_SECRET_KEY, "path": c.HF_TOKEN_SECRET_KEY}],
        "optional": not spec.gated,
    }
    assert "emptyDir" in volumes[download_job.HF_CACHE_VOLUME]  # node-local disk, never CephFS
    assert "persistentVolumeClaim" not in volumes[download_job.HF_CACHE_VOLUME]
    # The download is the one pod that writes the claim.
    claim = {"claimName": f"grace-model-weights-{key}"}
    assert volumes[vllm_server.WEIGHTS_VOLUME]["persistentVolumeClaim"] == claim
    vocabularies = env["GRACE_TIKTOKEN_FILES"]["value"]
    assert vocabularies == ",".join(f"{n}={c.TIKTOKEN_SHA256[n]}" for n in spec.tiktoken_files)
    # No pod running the server holds the token.
    assert download_job.HF_TOKEN_VOLUME not in {v["name"] for v in pod_spec(persistent_run, key)["volumes"]}


# --- Pulumi options and validity ----------------------------------------------------------------------


def test_custom_timeouts_follow_the_load_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, str] = {}
    original = RecordingMonitor.RegisterResource

    def spy(self: RecordingMonitor, request: Any) -> Any:
        if request.type in {"kubernetes:apps/v1:StatefulSet", "kubernetes:batch/v1:Job"}:
            seen[request.name] = request.customTimeouts.create
        return original(self, request)

    monkeypatch.setattr(RecordingMonitor, "RegisterResource", spy)
    awaited = [
        {"key": key, "servingMode": "persistent", "awaitReadiness": True}
        for key in ("gemma-2-2b", "llama-3-70b")
    ]
    render(raw_config(models=awaited))
    for key in ("gemma-2-2b", "llama-3-70b"):
        minutes = int(seen[f"vllm-{key}-statefulset"].removesuffix("m"))
        assert minutes * 60 >= CATALOG[key].load_budget_s + c.AWAIT_MARGIN_S
        download_minutes = int(seen[f"weights-{key}-job"].removesuffix("m"))
        download_s = CATALOG[key].weights_gb * 1000 / c.DOWNLOAD_ASSUMED_MB_PER_S
        assert download_minutes * 60 >= c.AWAIT_MARGIN_S + download_s
    assert int(seen["vllm-llama-3-70b-statefulset"][:-1]) > 10  # Pulumi's default await is 10 minutes
    assert int(seen["weights-llama-3-70b-job"][:-1]) > 10


def test_every_rendered_builtin_object_is_valid_kubernetes_1_30(persistent_run: OfflineRun) -> None:
    manifests = [m for m in persistent_run.manifests() if m["kind"] in {"StatefulSet", "Service"}]
    assert len(manifests) == 2 * len(ALL_MODELS)
    for manifest in manifests:
        assert_valid_k8s(manifest)


# --- serving modes ------------------------------------------------------------------------------------


def test_job_mode_removes_the_statefulset_and_service() -> None:
    models = [
        {"key": "gemma-2-2b", "servingMode": "persistent"},
        {"key": "gpt-oss-20b", "servingMode": "job"},
    ]
    run = render(raw_config(models=models, exceptions=[]))
    names = {(m["kind"], m["metadata"]["name"]) for m in run.manifests()}
    assert ("StatefulSet", "vllm-gemma-2-2b") in names
    assert ("Service", "vllm-gemma-2-2b") in names
    assert not {n for n in names if n[1] == "vllm-gpt-oss-20b"}
    assert not [r for r in run.of_type(ms.TYPE_TOKEN) if r.name == "vllm-gpt-oss-20b"]
    # Its weights claim and download stay: the Job's sidecar mounts the claim.
    assert ("PersistentVolumeClaim", "grace-model-weights-gpt-oss-20b") in names
    assert ("Job", "weights-gpt-oss-20b") in names


def test_a_job_mode_model_cannot_be_given_a_persistent_server(config: GraceConfig) -> None:
    raw = raw_config(models=[{"key": "gpt-oss-20b", "servingMode": "job"}], exceptions=[])
    job_config = parsed(raw)

    def program() -> None:
        ms.VllmModelServer(
            "x", ms.VllmModelServerArgs(model=job_config.served_models()[0], config=job_config)
        )

    with pytest.raises(ValueError, match=r"'gpt-oss-20b' is in 'job' serving mode"):
        run_offline(raw, program=program)


@pytest.mark.parametrize("key", ALL_MODELS)
def test_sidecar_parts_reuse_the_same_vllm_container(config: GraceConfig, key: str) -> None:
    model = next(m for m in config.served_models() if m.key == key)
    init_containers, volumes = vllm_server.vllm_sidecar_parts(model, config)
    (sidecar,) = init_containers
    server = vllm_server.vllm_container(model, config)
    # The same container, started through the start-budget wrapper (payloads/server_start.py).
    assert sidecar == {
        **server,
        "restartPolicy": "Always",
        "command": ["python3", "-c", f"$({c.SERVER_START_SOURCE_ENV})", *server["command"]],
        "env": [*server["env"], *vllm_server.server_start_env()],
        "volumeMounts": [
            *server["volumeMounts"],
            {"name": c.RUN_STATE_VOLUME, "mountPath": c.RUN_STATE_MOUNT, "readOnly": False},
        ],
    }
    assert volumes == vllm_server.pod_volumes(model, config)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"probe-{key}"},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "initContainers": init_containers,
                    "containers": [{"name": "worker", "image": "registry.example/grace-job:0.1.0"}],
                    "volumes": [*volumes, {"name": c.RUN_STATE_VOLUME, "emptyDir": {}}],
                    "nodeSelector": vllm_server.node_selector(model),
                }
            }
        },
    }
    assert_valid_k8s(job)


def test_sidecar_is_byte_identical_to_the_persistent_container(
    persistent_run: OfflineRun, config: GraceConfig
) -> None:
    model = next(m for m in config.served_models() if m.key == "gemma-2-27b")
    (sidecar,) = vllm_server.vllm_sidecar_parts(model, config)[0]
    rendered = vllm(persistent_run, "gemma-2-27b")
    wrapper = {"restartPolicy", "command", "env", "volumeMounts"}  # the start budget's additions
    assert {k: v for k, v in sidecar.items() if k not in wrapper} == {
        k: v for k, v in rendered.items() if k not in wrapper
    }
    assert sidecar["command"][3:] == rendered["command"]
    assert sidecar["env"][: len(rendered["env"])] == rendered["env"]
    assert sidecar["volumeMounts"][: len(rendered["volumeMounts"])] == rendered["volumeMounts"]


# --- monitoring ---------------------------------------------------------------------------------------


def test_monitoring_disabled_creates_no_service_monitor(persistent_run: OfflineRun) -> None:
    assert not [m for m in persistent_run.manifests() if m["kind"] == "ServiceMonitor"]


def test_monitoring_enabled_scrapes_metrics_on_port_http() -> None:
    run = render(
        raw_config(
            models=[
                {"key": "gemma-2-2b", "servingMode": "persistent"},
                {"key": "gpt-oss-20b", "servingMode": "job"},
            ],
            exceptions=[],
            monitoring={"enabled": True},
        )
    )
    (monitor,) = [m for m in run.manifests() if m["kind"] == "ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"] == "vllm-gemma-2-2b"
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "30s", "scheme": "http"}
    ]
    service = run.manifest("Service", "vllm-gemma-2-2b")
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_await_timeout_rounds_up_to_whole_minutes(config: GraceConfig) -> None:
    model = next(m for m in config.served_models() if m.key == "llama-3-70b")
    # StatefulSet: 15 min margin + 45 min load budget; download Job: 15 min + 141 GB at 100 MB/s (23.5 min)
    assert vllm_server.await_timeout(model) == "60m"
    assert download_job.download_await_timeout(model) == "39m"
    assert server_url(model) == "http://vllm-llama-3-70b:8000/v1"


# --- the committed nrp stack -----------------------------------------------------------------------------


def test_nrp_stack_serves_every_model_in_its_jobs(nrp_run: OfflineRun) -> None:
    """NRP bans users whose GPUs idle under 40 %: the committed stack holds no persistent server."""
    assert not [m for m in nrp_run.manifests() if m["kind"] in {"StatefulSet", "Service"}]
    jobs = {m["metadata"]["name"] for m in nrp_run.manifests() if m["kind"] == "Job"}
    assert {f"matrix-{k}" for k in ALL_MODELS} | {f"weights-{k}" for k in ALL_MODELS} <= jobs


def test_a_job_mode_models_jobs_carry_the_identical_vllm_container(nrp_run: OfflineRun) -> None:
    config = GraceConfig.parse(base_config())
    served = {m.key: m for m in config.served_models()}
    jobs = [
        m
        for m in nrp_run.manifests()
        if m["kind"] == "Job"
        and "vllm" in {x["name"] for x in m["spec"]["template"]["spec"].get("initContainers", [])}
    ]
    assert jobs, "no Job embeds a vLLM sidecar"
    for job in jobs:
        init = job["spec"]["template"]["spec"]["initContainers"]
        # The outputs check goes first; the sidecar's command is wrapped so a rerun with complete outputs
        # skips loading (grace_infra/manifests/completion_gate.py), otherwise it is the identical container.
        model = served[job["metadata"]["labels"]["model"]]
        expected = {**vllm_server.vllm_container(model, config), "restartPolicy": "Always"}
        names = [c.OUTPUTS_CHECK_CONTAINER_NAME, c.VLLM_CONTAINER_NAME]  # the download is its own Job
        assert [x["name"] for x in init] == names
        sidecar = init[1]
        unwrapped = {k: v for k, v in sidecar.items() if k not in {"command", "args", "env", "volumeMounts"}}
        assert unwrapped == {
            k: v for k, v in expected.items() if k not in {"command", "args", "env", "volumeMounts"}
        }
        # sh -c <script> sh, then the start-budget wrapper, then vLLM's own command and args.
        assert sidecar["command"][4:7] == ["python3", "-c", f"$({c.SERVER_START_SOURCE_ENV})"]
        assert sidecar["command"][7:] == [*expected["command"], *expected["args"]]
        assert sidecar["env"][: len(expected["env"])] == expected["env"]
        assert sidecar["volumeMounts"][: len(expected["volumeMounts"])] == expected["volumeMounts"]
        assert_valid_k8s(job)
