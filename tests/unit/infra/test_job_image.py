"""The job image: jobs/Dockerfile's pins, and that every command line the Jobs run is one the
worker in that image accepts (parsed with the worker's own argument parsers, nothing executed)."""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from grace_infra import constants as c
from grace_infra.config.stack_config import GraceConfig
from grace_infra.planning.matrix import PlannedJob, plan_experiments

from .support import PROJECT_ROOT, base_config

DOCKERFILE = PROJECT_ROOT / "jobs" / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / "jobs" / "Dockerfile.dockerignore"
REQUIREMENTS = PROJECT_ROOT / "requirements.txt"
WORKER_DIR = PROJECT_ROOT / "worker"
JOB_COMMANDS = ("query", "probs", "extract", "run", "check-outputs")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def arguments_of(keyword: str) -> list[str]:
    return [rest for kw, rest in instructions() if kw == keyword]


def test_base_image_is_pinned_to_a_full_python_311_version() -> None:
    (base,) = arguments_of("FROM")
    image, _, tag = base.partition("@")[0].partition(":")
    assert image == "python"
    assert tag != "latest"
    assert re.fullmatch(r"3\.11\.\d+-slim-bookworm", tag), tag  # the project's Python (pyproject)


def test_entry_point_is_the_worker_cli_as_a_non_root_user() -> None:
    (entrypoint,) = arguments_of("ENTRYPOINT")
    assert json.loads(entrypoint) == ["python", "-m", "worker"]
    (user,) = arguments_of("USER")
    (default_uid,) = [a.split("=", 1)[1] for a in arguments_of("ARG") if a.startswith("WORKER_UID=")]
    assert user == "${WORKER_UID}:${WORKER_UID}"
    # The Job's securityContext runs as this uid with runAsNonRoot: both must agree and not be root.
    assert int(default_uid) == c.WORKER_UID != 0


def test_dependencies_are_installed_at_build_time_from_the_pinned_requirements() -> None:
    runs = " ".join(arguments_of("RUN"))
    assert "pip install --no-cache-dir -r worker-requirements.txt" in runs
    assert "requirements.txt" in " ".join(arguments_of("COPY"))
    assert not any("pip" in a for a in [*arguments_of("ENTRYPOINT"), *arguments_of("CMD")])


def _kept_requirements() -> list[str]:
    """requirements.txt as the Dockerfile's grep filter leaves it."""
    (pattern,) = re.findall(r"grep -vE '([^']+)' requirements\.txt", " ".join(arguments_of("RUN")))
    lines = [line.strip() for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#") and not re.search(pattern, line)]


def _third_party_imports(paths: list[Path] | None = None) -> set[str]:
    modules = set()
    for path in paths if paths is not None else list(WORKER_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m not in {"worker", "__future__"}}


def _normalised(distribution: str) -> str:
    """PEP 503 name: prometheus_client and prometheus-client are the same distribution."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def test_every_package_the_worker_imports_is_installed_in_the_image() -> None:
    kept = {_normalised(re.split(r"[=<>!~\[]", line, maxsplit=1)[0]) for line in _kept_requirements()}
    assert all("==" in line for line in _kept_requirements())  # pinned
    distributions = importlib.metadata.packages_distributions()
    for module in _third_party_imports():
        owners = {_normalised(d) for d in distributions.get(module, [])}
        assert owners & kept, f"worker imports {module} but the image installs none of {owners or '{?}'}"
    assert not {"pulumi", "pulumi-kubernetes"} & kept  # the deploy-time SDKs stay out of the job image


def test_the_weight_download_program_runs_in_the_image() -> None:
    """The download Jobs run payloads/download_weights.py in the job image (so a pull failure shows on a
    CPU pod first): what it imports must be installed there."""
    kept = {_normalised(re.split(r"[=<>!~\[]", line, maxsplit=1)[0]) for line in _kept_requirements()}
    payload = PROJECT_ROOT / "grace_infra" / "payloads" / "download_weights.py"
    modules = _third_party_imports([payload])
    assert modules == {"huggingface_hub"}
    distributions = importlib.metadata.packages_distributions()
    owners = {_normalised(d) for d in distributions.get("huggingface_hub", [])}
    assert owners & kept, owners


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    ignore = DOCKERIGNORE.read_text(encoding="utf-8").split()
    assert "*" in ignore  # nothing else (no .venv, no study data) is sent to the builder
    assert {"!requirements.txt", "!worker/"} <= set(ignore)


def test_worker_help_lists_every_command_the_jobs_run() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker", "--help"],
        check=False,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    (choices,) = re.findall(r"\{([a-z,-]+)\}", result.stdout)[:1]
    assert set(JOB_COMMANDS) <= set(choices.split(","))


def _parse_with_the_worker(argv: list[str]) -> argparse.Namespace:
    """Parse one worker command line with the worker's own CLI parsing; run nothing."""
    cli = importlib.import_module("worker.cli")
    _module, args = cli.parse_subcommand(argv)
    return args


def _all_command_lines(jobs: list[PlannedJob]) -> list[list[str]]:
    lines = []
    for job in jobs:
        if job.resumes is None:  # the gate's wait-for-inputs is not a pipeline: its own test below
            lines += [list(task) for task in job.tasks] if job.sidecar else [list(job.args)]
    return lines


@pytest.mark.parametrize("deepseek", [None, "https://api.deepseek.com/v1"], ids=["own-server", "deepseek"])
def test_every_job_command_line_parses_with_the_worker(deepseek: str | None) -> None:
    raw = base_config()
    if deepseek:
        raw["jobs"] = {**raw.get("jobs", {}), "deepseekEndpoint": deepseek}
    _, planned = plan_experiments(GraceConfig.parse(raw))
    lines = _all_command_lines(planned)
    assert {line[0] for line in lines} == {"query", "probs", "extract"}
    for argv in lines:
        args = _parse_with_the_worker(argv)
        assert str(args.output) == argv[argv.index("--output") + 1]
        if argv[0] == "extract":
            assert args.model_endpoint == (deepseek or argv[argv.index("--model-endpoint") + 1])
            assert args.wait_for_input > 0


def test_job_mode_command_is_the_workers_run(tmp_path: Path) -> None:
    cli = importlib.import_module("worker.cli")
    bundle, planned = plan_experiments(GraceConfig.parse(base_config()))
    job = next(j for j in planned if j.sidecar and j.model.key == "llama-3-70b")
    (tasks_path,) = [p for p in bundle.files if p.name == f"{job.name}.json"]
    local = tmp_path / tasks_path.name
    local.write_text(bundle.files[tasks_path], encoding="utf-8")
    args = cli.build_parser().parse_args([job.args[0], job.args[1], str(local)])
    assert args.command == "run"
    assert json.loads(local.read_text(encoding="utf-8")) == [list(t) for t in job.tasks]
