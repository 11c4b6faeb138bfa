"""The cluster's own vLLM command line, run against the real vLLM 0.32 CPU server.

Every vLLM container the nrp render gives a model server (StatefulSet) or a job-mode sidecar (Job init
container) is checked three ways:

1. the two serving modes run the same command: the render of the nrp stack and of the same stack with
   every model's serving mode flipped give each model byte-identical `command`, `args` and `env`;
2. vLLM's own `vllm serve` parser (tests/support/vllm_serve_parser.py) accepts every rendered arg list
   as rendered (only the weights mount becomes the tiny model's folder: vLLM checks that a model path
   exists), and rejects a control list with a flag vLLM does not know;
3. ONE real `vllm serve` start (tests/support/vllm_cli.py: vLLM's CLI entry point) with one model's
   rendered command line, changed only as declared below, answers /health, /v1/models and a
   completion with the top-20 log-probabilities. Every other rendered list differs from that one only
   in values and in the declared flags, so the one start covers them all (asserted).

Cost: one import of vLLM for the parser (~30 s) and one server start (80-250 s on these 2 cores).
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from grace_infra import constants as c
from grace_infra.commands.render import Rendered, render
from grace_infra.manifests import completion_gate
from tests.integration.conftest import REPO_ROOT, tiny_vllm
from tests.support.ci import unavailable
from worker import contract

# Flags the CPU server cannot take, with why; only these are dropped from the rendered list.
GPU_ONLY_FLAGS: dict[str, str] = {
    "--tensor-parallel-size": "shards the model over that many GPUs; the CPU server runs one process",
    "--attention-backend": (
        "names a CUDA kernel (TRITON_ATTN for gpt-oss on Ampere GPUs); the CPU platform has only its own"
    ),
}
# Values replaced, with why; the flag itself stays.
REPLACED_FLAGS: dict[str, str] = {
    "--max-model-len": "the tiny model has 2,048 positions and a 1 GiB CPU KV cache; the tests' 512 fits",
    "--port": "a free loopback port instead of the pod's 8000",
}
# The weights mount (positional model or --model=, and in env values) becomes the tiny model's folder;
# --host 127.0.0.1 is added because the pod listens on every interface and a test server may listen only
# on loopback.
STARTED_MODEL = "gemma-2-2b"  # no catalog extra args: its list is the common core of every other
VLLM_SERVE_PARSER = REPO_ROOT / "tests" / "support" / "vllm_serve_parser.py"
VLLM_CLI = REPO_ROOT / "tests" / "support" / "vllm_cli.py"


# A job-mode sidecar runs `sh -c '<script>' sh vllm serve ...`: the script execs "$@" (the container's own
# `vllm serve` command line) unless the Job's outputs are already complete, when it runs an idle
# stand-in from this environment variable instead (grace_infra/completion_gate.py). Both are declared.
SHELL_WRAPPER = ["/bin/sh", "-c"]
# Then the start budget (grace_infra/payloads/server_start.py): python3 -c "$(SOURCE)" runs the command
# line as its child, unchanged, until the budget is spent.
START_WRAPPER = ["python3", "-c", f"$({c.SERVER_START_SOURCE_ENV})"]
WRAPPER_ONLY_ENV = {
    completion_gate.IDLE_SERVER_ENV: "the idle stand-in, run only when outputs are complete",
    c.SERVER_START_SOURCE_ENV: "the start-budget wrapper's source",
    contract.SERVER_START_ATTEMPTS_ENV: "the wrapper's budget",
    contract.SERVER_START_STATE_ENV: "the wrapper's state file",
    contract.SERVER_START_FAILED_ENV: "the wrapper's failure marker",
}


@dataclass(frozen=True)
class ServerCommand:
    """What a vLLM container runs: where it is rendered, its `vllm serve` argv and its environment."""

    where: str  # Kind/name of the object carrying it
    argv: list[str]  # starts with ["vllm", "serve"]
    env: dict[str, str]
    image: str
    sidecar: bool  # restartPolicy: Always (a native sidecar in a Job pod)

    @property
    def args(self) -> list[str]:
        return self.argv[2:]


def _server_command(where: str, container: dict[str, Any]) -> ServerCommand:
    argv = [*container["command"], *container.get("args", [])]
    if argv[:2] == SHELL_WRAPPER:
        script, _name, *argv = argv[2:]
        assert 'exec "$@"' in script, script  # without the marker it execs the command line unchanged
    if argv[:3] == START_WRAPPER:
        argv = argv[3:]
    env = {e["name"]: e["value"] for e in container.get("env", []) if e["name"] not in WRAPPER_ONLY_ENV}
    sidecar = container.get("restartPolicy") == "Always"
    return ServerCommand(where, argv, env, container["image"], sidecar)


def vllm_servers(rendered: Rendered) -> dict[str, ServerCommand]:
    """model key -> its vLLM server's command, from StatefulSets and job-mode sidecars."""
    found: dict[str, ServerCommand] = {}
    for manifest in rendered.run.manifests():
        if manifest["kind"] not in {"StatefulSet", "Job"}:
            continue
        pod = manifest["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            if container["name"] == c.VLLM_CONTAINER_NAME:
                server = _server_command(f"{manifest['kind']}/{manifest['metadata']['name']}", container)
                prefix = "--served-model-name="
                model = next(a.removeprefix(prefix) for a in server.args if a.startswith(prefix))
                found[model] = server
    return found


def flag_name(arg: str) -> str | None:
    return arg.split("=", 1)[0] if arg.startswith("--") else None


def cpu_args(args: list[str], model_dir: Path, port: int, max_model_len: int) -> list[str]:
    """The rendered args with exactly the declared changes; every other token passes through."""
    replaced = {"--max-model-len": str(max_model_len), "--port": str(port)}
    assert set(replaced) == set(REPLACED_FLAGS)
    out: list[str] = []
    for arg in args:
        name = flag_name(arg)
        if name in GPU_ONLY_FLAGS:
            continue
        if name in replaced:
            out.append(f"{name}={replaced[name]}")
        else:
            out.append(arg.replace(c.WEIGHTS_MOUNT, str(model_dir)))
    return [*out, "--host", tiny_vllm.HOST]


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Rendered, Rendered]:
    """The nrp render, and the nrp render with every model's serving mode flipped."""
    nrp = render("nrp")
    flipped_models = [
        {"key": m.key, "servingMode": "job" if m.serving_mode.value == "persistent" else "persistent"}
        for m in nrp.config.models
    ]
    # Serving everything persistently breaks NRP rules the policy enforces (GPUs per StatefulSet pod,
    # the quota); waive them here, where only the container is compared.
    big_pods = [{"model": m.key, "rule": "gpus-per-stateful-pod", "reason": "compare the container only"}
                for m in nrp.config.served_models() if m.gpus > c.NRP_MAX_GPUS_STATEFUL_POD]  # fmt: skip
    roomy = {"requestsCpu": "10000", "requestsMemory": "100Ti", "requestsGpu": 1000,
             "persistentVolumeClaims": 1000, "pods": 1000}  # fmt: skip
    namespace = {**nrp.config.namespace.model_dump(by_alias=True), "quota": roomy}
    extra = tmp_path_factory.mktemp("flip") / "flipped.yaml"
    extra.write_text(
        yaml.safe_dump({"models": flipped_models, "exceptions": big_pods, "namespace": namespace}),
        encoding="utf-8",
    )
    return nrp, render("nrp", [extra])


def test_both_serving_modes_run_the_same_command(renders: tuple[Rendered, Rendered]) -> None:
    nrp, flipped = (vllm_servers(r) for r in renders)
    assert set(nrp) == set(flipped) == {m.key for m in renders[0].config.models}
    for model, server in nrp.items():
        other = flipped[model]
        assert {server.where.split("/")[0], other.where.split("/")[0]} == {"StatefulSet", "Job"}, model
        assert server.sidecar != other.sidecar  # the Job's copy is the native sidecar
        assert server.argv[:2] == ["vllm", "serve"]
        assert (server.argv, server.env, server.image) == (other.argv, other.env, other.image), model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = tiny_vllm.missing_env_reason()
    if reason is not None:
        unavailable(reason)
    return Path(tiny_vllm.build_model(tiny_vllm.server_python(), tmp_path_factory.mktemp("tiny") / "model"))


@pytest.mark.vllm
def test_vllm_parser_accepts_every_rendered_server(
    renders: tuple[Rendered, Rendered], tiny_model: Path
) -> None:
    # As rendered, except the weights mount: vLLM's engine arguments check that a model path exists.
    lists = {
        f"{model} ({server.where})": [arg.replace(c.WEIGHTS_MOUNT, str(tiny_model)) for arg in server.args]
        for rendered in renders
        for model, server in vllm_servers(rendered).items()
    }
    control = "control: an unknown flag"
    lists[control] = [*next(iter(lists.values())), "--no-such-flag-in-vllm=1"]
    proc = subprocess.run(
        [str(tiny_vllm.server_python()), str(VLLM_SERVE_PARSER)],
        input=json.dumps(lists), capture_output=True, text=True, timeout=600, check=False,
        env=tiny_vllm.server_env(Path("/nonexistent-cache")),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdicts = json.loads(proc.stdout)
    assert "unrecognized arguments: --no-such-flag-in-vllm=1" in verdicts.pop(control)
    rejected = {label: error for label, error in verdicts.items() if error is not None}
    assert rejected == {}
    assert len(verdicts) == 2 * len(renders[0].config.models)


@pytest.fixture(scope="module")
def started(
    renders: tuple[Rendered, Rendered], tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Path]]:
    """vLLM started with STARTED_MODEL's rendered command line (declared changes only)."""
    workdir = tmp_path_factory.mktemp("rendered-vllm")
    model_dir = tiny_model
    server_command = vllm_servers(renders[0])[STARTED_MODEL]
    assert server_command.argv[:2] == ["vllm", "serve"]
    port = tiny_vllm.free_port()
    argv = [
        str(tiny_vllm.server_python()), str(VLLM_CLI), "serve",
        *cpu_args(server_command.args, model_dir, port, tiny_vllm.MAX_MODEL_LEN),
    ]  # fmt: skip
    # The container's environment, with HOME on a fresh folder (an emptyDir on the cluster) and the CPU
    # server's own settings (KV cache size, offline); vLLM's cache location is left to resolve under
    # HOME as in the pod, so the test sees where a read-only root filesystem must not be written.
    env = tiny_vllm.server_env(workdir / "unused")
    del env["VLLM_CACHE_ROOT"]
    env.update({k: v.replace(c.WEIGHTS_MOUNT, str(model_dir)) for k, v in server_command.env.items()})
    home = workdir / "home"
    home.mkdir()
    env["HOME"] = str(home)
    log_path = workdir / "vllm-server.log"
    proc = tiny_vllm.spawn_in_own_group(argv, env, log_path)
    server = tiny_vllm.TinyServer(
        base_url=f"http://{tiny_vllm.HOST}:{port}/v1", root_url=f"http://{tiny_vllm.HOST}:{port}",
        served_name=STARTED_MODEL, model_dir=model_dir, server_python=tiny_vllm.server_python(),
        log_path=log_path, pid=proc.pid,
    )  # fmt: skip
    try:
        tiny_vllm.wait_until_healthy(server.root_url, proc, log_path, tiny_vllm.DEFAULT_START_TIMEOUT_S)
    except tiny_vllm.TinyVllmError as exc:
        tiny_vllm.stop_server(server)
        pytest.fail(f"vLLM 0.32 refused the rendered command line {argv[2:]}: {exc}", pytrace=False)
    try:
        yield server, home
    finally:
        tiny_vllm.stop_server(server)


def test_one_start_covers_every_rendered_list(renders: tuple[Rendered, Rendered]) -> None:
    """Every rendered list uses the started model's flags, plus only declared GPU-only ones."""
    servers = [(m, server) for r in renders for m, server in vllm_servers(r).items()]
    started_flags = {flag_name(a) for a in vllm_servers(renders[0])[STARTED_MODEL].args} - {None}
    for model, server in servers:
        flags = {flag_name(a) for a in server.args} - {None}
        assert flags - started_flags <= set(GPU_ONLY_FLAGS), model
        positional = [a for a in server.args if flag_name(a) is None]
        assert positional in ([], [c.WEIGHTS_MOUNT]), model


@pytest.mark.vllm
def test_real_vllm_serves_with_the_rendered_command_line(started: tuple[Any, Path]) -> None:
    server, home = started
    models = json.loads(_get(f"{server.base_url}/models"))
    assert [m["id"] for m in models["data"]] == [STARTED_MODEL]
    # The top-20 alternatives experiment 2 reads (--max-logprobs=20), as a list (the completions API
    # keys them by text, and two tokens of the tiny vocabulary may decode alike).
    completion = tiny_vllm._post_json(
        f"{server.base_url}/chat/completions",
        {"model": STARTED_MODEL, "messages": [{"role": "user", "content": "yes or no?"}], "max_tokens": 1,
         "logprobs": True, "top_logprobs": 20, "temperature": 0},
    )  # fmt: skip
    (choice,) = completion["choices"]  # type: ignore[index]
    assert len(choice["logprobs"]["content"][0]["top_logprobs"]) == 20
    # Its compile cache went under $HOME, the writable emptyDir beside the read-only root filesystem.
    assert any((home / ".cache" / "vllm").rglob("*")), sorted(p.name for p in home.rglob("*"))[:20]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return str(response.read().decode())
