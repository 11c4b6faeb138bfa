"""Following README.md's path step by step, as a newcomer on a fresh clone would.

Every command is read from the README's shell blocks (none is written here), then:
- our own commands (`grace ...`, `python -m grace_infra|worker ...`, `grace-worker`, `bash scripts/...`)
  must exist and parse exactly as typed: argparse runs for real and stops right after parsing, so no
  command touches a cluster;
- `pulumi`, `kubectl`, `docker` and the installer lines are checked against the syntax declared below
  (those CLIs are not installed here), and every `pulumi config set` key against Pulumi.yaml and the
  Kubernetes provider's settings;
- the stack the README's `pulumi config set` steps produce, applied to the committed nrp stack, must
  render offline, and the README's model example must validate;
- the path's steps are numbered and each shows a command and what to expect; every `grace` command
  is documented; every relative link and anchor in README.md and docs/ resolves.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

from grace_infra.commands.cli import COMMANDS
from grace_infra.commands.render import render
from grace_infra.config.stack_config import GraceConfig
from tests.support import readme
from tests.support.kube_api import KubeApi
from tests.unit.infra.test_preflight import PASSING

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
PATH_SECTION = "The path to NRP"
FOR_THE_README = "For the README"
MAX_README_LINES = 260
# Values the README leaves to the reader's shell: what `$(...)` prints on a machine with NRP access.
SUBSTITUTED = {"kubectl config current-context": "nrp-context"}

# --- the syntax of the CLIs we cannot install here -------------------------------------------------
# Flags: name -> takes a value. From each tool's reference:
#   pulumi  https://www.pulumi.com/docs/iac/cli/commands/ (pulumi_login, pulumi_stack_init, _select,
#           pulumi_config_set, pulumi_preview, pulumi_up, pulumi_destroy)
#   kubectl https://kubernetes.io/docs/reference/kubectl/generated/
#   docker  https://docs.docker.com/reference/cli/docker/
STACK_FLAG = {"-s": True, "--stack": True}


@dataclass(frozen=True)
class Syntax:
    flags: dict[str, bool]
    positionals: tuple[int, int]  # (at least, at most)


PULUMI: dict[tuple[str, ...], Syntax] = {
    ("version",): Syntax({}, (0, 0)),
    ("login",): Syntax({"--local": False, "--cloud-url": True, "-c": True}, (0, 1)),
    ("logout",): Syntax({"--local": False}, (0, 1)),
    ("stack", "init"): Syntax({"--secrets-provider": True}, (1, 1)),
    ("stack", "select"): Syntax({"--create": False, "-c": False}, (1, 1)),
    ("stack", "output"): Syntax({**STACK_FLAG, "--json": False, "--show-secrets": False}, (0, 1)),
    ("config",): Syntax({**STACK_FLAG, "--show-secrets": False, "--json": False}, (0, 0)),
    ("config", "set"): Syntax(
        {**STACK_FLAG, "--secret": False, "--plaintext": False, "--path": False}, (1, 2)
    ),
    ("config", "get"): Syntax({**STACK_FLAG, "--path": False}, (1, 1)),
    ("preview",): Syntax({**STACK_FLAG, "--diff": False, "--target": True}, (0, 0)),
    ("up",): Syntax({**STACK_FLAG, "--yes": False, "-y": False, "--target": True, "--diff": False}, (0, 0)),
    ("refresh",): Syntax({**STACK_FLAG, "--yes": False, "-y": False}, (0, 0)),
    ("destroy",): Syntax({**STACK_FLAG, "--exclude-protected": False, "--yes": False, "-y": False}, (0, 0)),
}
NAMESPACE_FLAG = {"-n": True, "--namespace": True}
KUBECTL: dict[tuple[str, ...], Syntax] = {
    ("config", "get-contexts"): Syntax({}, (0, 1)),
    ("config", "current-context"): Syntax({}, (0, 0)),
    ("config", "use-context"): Syntax({}, (1, 1)),
    ("get",): Syntax({**NAMESPACE_FLAG, "-l": True, "-o": True, "--selector": True}, (1, 2)),
    ("describe",): Syntax({**NAMESPACE_FLAG, "-l": True}, (1, 2)),
    ("logs",): Syntax({**NAMESPACE_FLAG, "-c": True, "-f": False, "--tail": True}, (1, 1)),
    ("delete",): Syntax({**NAMESPACE_FLAG, "-l": True}, (1, 2)),
    ("wait",): Syntax({**NAMESPACE_FLAG, "--for": True, "--timeout": True}, (1, 1)),
}
DOCKER: dict[tuple[str, ...], Syntax] = {
    ("build",): Syntax({"-f": True, "--file": True, "-t": True, "--tag": True, "--platform": True}, (1, 1)),
    ("push",): Syntax({}, (1, 1)),
    ("login",): Syntax({"-u": True, "--username": True, "--password-stdin": False}, (1, 1)),
    ("run",): Syntax({"--rm": False}, (1, 99)),
}
FOREIGN = {"pulumi": PULUMI, "kubectl": KUBECTL, "docker": DOCKER}
# Kubernetes provider settings a stack may set (pulumi-kubernetes provider/pkg/gen/schema.go, Config).
KUBERNETES_PROVIDER_KEYS = {"kubeconfig", "context", "cluster", "namespace", "renderYamlToDirectory"}
# The installer line: Pulumi's official install script, piped to sh.
INSTALLER = ["curl", "-fsSL", "https://get.pulumi.com"]


class Parsed(Exception):  # noqa: N818 - a signal, not an error
    """Raised by the patched argparse once a command line has parsed: nothing after it runs."""


@dataclass
class Walk:
    """What following the README accumulates: shell variables, directories made, config set."""

    variables: dict[str, str]
    cwd: Path
    config_sets: list[tuple[str, str | None, bool]]  # (key, value, --path)


# --- reading the README ----------------------------------------------------------------------------


def shell_blocks() -> list[readme.Block]:
    return [block for block in readme.blocks(TEXT) if block.language in readme.SHELL_LANGUAGES]


def path_steps() -> list[readme.Section]:
    """The level-3 sections between the path's heading and the next level-2 heading."""
    steps: list[readme.Section] = []
    inside = False
    for section in readme.sections(TEXT):
        if section.level == 2:
            inside = section.title == PATH_SECTION
        elif inside and section.level == 3:
            steps.append(section)
    return steps


def commands() -> list[tuple[readme.Block, list[str]]]:
    return [
        (block, command)
        for block in shell_blocks()
        for line in readme.shell_lines(block)
        for command in readme.split_commands(line)
    ]


# --- checking one command --------------------------------------------------------------------------


def expand(token: str, walk: Walk) -> str:
    substitution = readme.SUBSTITUTION.fullmatch(token)
    if substitution:
        inner = substitution.group(1)
        assert inner in SUBSTITUTED, f"command substitution {token!r} has no declared value"
        check(inner.split(), walk)
        return SUBSTITUTED[inner]
    return readme.VARIABLE.sub(lambda m: walk.variables.get(m.group(1), ""), token)


def check(command: list[str], walk: Walk) -> None:
    """Run or check one command line as the README shows it."""
    while command and readme.ASSIGNMENT.match(command[0]):
        name, value = readme.ASSIGNMENT.match(command[0]).groups()  # type: ignore[union-attr]
        walk.variables[name] = expand(value, walk)
        command = command[1:]
    if not command:
        return
    program, args = command[0], [expand(arg, walk) for arg in command[1:]]
    if program == "export":
        for assignment in args:
            name, _, value = assignment.partition("=")
            walk.variables[name] = value
    elif program in {"grace", ".venv/bin/grace"}:
        parse_own("grace_infra.commands.cli", args, walk)
    elif program in {"grace-worker", ".venv/bin/grace-worker"}:
        parse_own("worker.cli", args, walk)
    elif program in {"python", "python3", ".venv/bin/python"} and args[:1] == ["-m"]:
        assert args[1] in {"grace_infra", "worker"}, f"python -m {args[1]} is not one of our packages"
        parse_own(f"{args[1]}.cli", args[2:], walk)
    elif program == "bash":
        script = REPO_ROOT / args[0]
        assert script.is_file(), f"bash {args[0]}: no such script"
        syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        assert syntax.returncode == 0, syntax.stderr
    elif program == "source":
        assert args == [".venv/bin/activate"], args
        assert '"$PYTHON" -m venv "$venv"' in (REPO_ROOT / "scripts/setup.sh").read_text()
    elif program == "curl":
        assert args == INSTALLER[1:], f"curl {args}: only Pulumi's official installer is expected"
    elif program == "sh":
        assert args == [], "sh reads the installer from the pipe"
    elif program in FOREIGN:
        check_foreign(program, args, walk)
    else:
        pytest.fail(f"the README runs {program!r}, which this test does not know how to check")


def check_foreign(program: str, args: list[str], walk: Walk) -> None:
    """Flags may stand before or after the subcommand (`kubectl -n NS get ...`), as these CLIs allow."""
    table = FOREIGN[program]
    takes_value = {flag: value for syntax in table.values() for flag, value in syntax.flags.items()}
    words_and_arguments: list[str] = []
    flags: dict[str, str | None] = {}
    tokens = iter(args)
    for token in tokens:
        if token.startswith("-") and token != "-":
            name, has_value, inline = token.partition("=")
            assert name in takes_value, f"{program} {' '.join(args)}: unknown flag {name}"
            flags[name] = inline if has_value else (next(tokens, None) if takes_value[name] else None)
            assert not takes_value[name] or flags[name] is not None, f"{program} {name} needs a value"
        else:
            words_and_arguments.append(token)
    found = [w for w in table if tuple(words_and_arguments[: len(w)]) == w]
    assert found, f"{program} {' '.join(args)}: not a declared {program} subcommand"
    words = max(found, key=len)
    syntax, positionals = table[words], words_and_arguments[len(words) :]
    unknown = set(flags) - set(syntax.flags)
    assert not unknown, f"{program} {' '.join(words)} has no flag {sorted(unknown)}"
    low, high = syntax.positionals
    assert low <= len(positionals) <= high, f"{program} {' '.join(args)}: {len(positionals)} arguments"
    if program == "pulumi" and words == ("config", "set"):
        check_config_set(positionals, "--path" in flags, walk)
    if program == "docker" and words == ("build",):
        dockerfile = flags.get("-f") or flags.get("--file") or "Dockerfile"
        assert (REPO_ROOT / dockerfile).is_file(), dockerfile
        assert (REPO_ROOT / positionals[0]).is_dir(), positionals[0]


def check_config_set(positionals: list[str], path: bool, walk: Walk) -> None:
    key = positionals[0]
    namespace, _, name = key.partition(":")
    top = re.split(r"[.\[]", name, maxsplit=1)[0]
    declared = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())["config"]
    if namespace == "grace":
        assert top in declared, f"pulumi config set {key}: grace:{top} is not declared in Pulumi.yaml"
        assert path or top == name, f"pulumi config set {key}: a nested key needs --path"
    else:
        assert namespace == "kubernetes", f"pulumi config set {key}: unknown namespace"
        assert name in KUBERNETES_PROVIDER_KEYS, f"kubernetes:{name} is not a Kubernetes provider setting"
    walk.config_sets.append((key, positionals[1] if len(positionals) > 1 else None, path))


@contextlib.contextmanager
def parse_only() -> Iterator[None]:
    """argparse parses for real, then stops the program: nothing after the parse runs."""
    original = argparse.ArgumentParser.parse_args

    def parse_args(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> argparse.Namespace:
        raise Parsed(original(self, *args, **kwargs))

    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_args):
        yield


def parse_own(module_name: str, args: list[str], walk: Walk) -> None:
    """Our command parses exactly these arguments (paths relative to the walk's working directory)."""
    main = importlib.import_module(module_name).main
    stderr = io.StringIO()
    previous = Path.cwd()
    os.chdir(walk.cwd)
    try:
        with parse_only(), contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = main(args)
        if code == 0 and args == ["--help"]:
            return  # a dispatcher's own usage text
        pytest.fail(f"{module_name} {' '.join(args)} did not parse its arguments with argparse (exit {code})")
    except Parsed as parsed:
        namespace = parsed.args[0]
    except SystemExit as exit_:
        if exit_.code != 0:
            pytest.fail(f"{module_name} {' '.join(args)}: {stderr.getvalue().strip()}")
        return
    except Exception as err:  # noqa: BLE001 - any refusal is the finding; say which command
        pytest.fail(f"{module_name} {' '.join(args)}: {type(err).__name__}: {err}")
    finally:
        os.chdir(previous)
    # What this step writes, a later step reads: `pull --to results/`, then `check results/`.
    for option in ("to", "out"):
        target = getattr(namespace, option, None)
        if isinstance(target, Path) and not target.suffix:
            (walk.cwd / target).mkdir(parents=True, exist_ok=True)


# --- the tests ---------------------------------------------------------------------------------------


def test_the_readme_stays_short() -> None:
    assert len(TEXT.splitlines()) <= MAX_README_LINES


def test_the_path_is_numbered_steps_each_with_a_command_and_what_to_expect() -> None:
    steps = path_steps()
    assert len(steps) >= 10
    numbers = [int(re.match(r"^(\d+)\.", step.title).group(1)) for step in steps]  # type: ignore[union-attr]
    assert numbers == list(range(1, len(steps) + 1))
    for step in steps:
        assert any(b.language in readme.SHELL_LANGUAGES for b in step.blocks), f"{step.title}: no command"
        assert "Expected:" in step.prose, f"{step.title}: says nothing of what to expect"


def test_the_path_visits_the_campaign_landmarks_in_order() -> None:
    shown = "\n".join(" ".join(command) for block, command in commands() if PATH_SECTION in block.headings)
    landmarks = [
        "pulumi version", "pulumi login", "pulumi stack init nrp", "kubernetes:context",
        "--secret grace:hfToken", "docker push", "grace preflight --stack nrp", "pulumi preview", "pulumi up",
        "grace status --stack nrp", "grace results pull --stack nrp", "grace results check",
        "grace results report", "pulumi destroy --exclude-protected",
    ]  # fmt: skip
    positions = [shown.find(landmark) for landmark in landmarks]
    assert -1 not in positions, [m for m, p in zip(landmarks, positions, strict=True) if p == -1]
    assert positions == sorted(positions)


def test_every_command_in_the_readme_exists_and_parses(tmp_path: Path) -> None:
    walk = Walk(variables={}, cwd=tmp_path, config_sets=[])
    checked = 0
    for _block, command in commands():
        check(command, walk)
        checked += 1
    assert checked >= 25


def test_every_grace_command_is_in_the_readme() -> None:
    shown = {command[1] for _, command in commands() if command[0] in {"grace", ".venv/bin/grace"}}
    assert set(COMMANDS) <= shown, f"undocumented: {sorted(set(COMMANDS) - shown)}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_grace_command_explains_its_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = importlib.import_module(COMMANDS[command][0])
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    assert "exit code" in capsys.readouterr().out.lower()


def test_the_stack_the_readme_configures_renders(tmp_path: Path) -> None:
    walk = Walk(variables={}, cwd=tmp_path, config_sets=[])
    for _block, command in commands():
        check(command, walk)
    stack = yaml.safe_load((REPO_ROOT / "Pulumi.nrp.yaml").read_text())["config"]
    settings = copy.deepcopy(stack)
    secrets = set()
    for key, value, path in walk.config_sets:
        if not key.startswith("grace:"):
            continue
        if value is None:
            secrets.add(key)  # prompted for: a secret the reader types
            continue
        if path:
            head, *rest = key.split(".")
            node = settings.setdefault(head, {})
            for part in rest[:-1]:
                node = node.setdefault(part, {})
            node[rest[-1]] = value
        else:
            settings[key] = yaml.safe_load(value)
    assert secrets == {"grace:hfToken", "grace:deepseekApiKey"}
    extra = tmp_path / "readme-stack.yaml"
    extra.write_text(yaml.safe_dump({"config": settings}))
    rendered = render("nrp", [extra])
    job_image = next(v for k, v, _ in walk.config_sets if k == "grace:images.job")
    assert rendered.config.images.job == job_image
    assert set(rendered.placeholder_secrets) >= {"hfToken"}
    # The preview step quotes the render's resource count and the summary Pulumi adds its stack to.
    flat = " ".join(TEXT.split())
    quoted = r"\+ (\d+) to create`? \(the (\d+) resources `grace render`"
    counted = re.search(quoted, flat)
    assert counted is not None, "the preview step no longer quotes the resource count"
    resources = len(rendered.run.resources)
    assert (int(counted.group(1)), int(counted.group(2))) == (resources + 1, resources)


def test_the_gpu_hours_the_readme_quotes_are_what_grace_render_prints() -> None:
    """The README is the one document that quotes the plan's cost (the others point to it or to render's
    first line): every figure it gives is the committed nrp stack's, read from the render."""
    plan = render("nrp").plan
    flat = " ".join(TEXT.split())
    hours = re.findall(r"(\d[\d,]*\.\d) (?:planned )?GPU-hours", flat)
    assert hours, "the README no longer quotes the planned GPU-hours"
    assert set(hours) == {f"{plan['gpuHours']['totals']['configuredGpuHours']:,.1f}"}, plan["headline"]
    samples = {str(s["samplesPerRow"]) for s in plan["gpuHours"]["assumptions"]["sampling"].values()}
    assert set(re.findall(r"at (\d+) samples per row", flat)) <= samples


def test_the_preflight_step_runs_against_a_recorded_cluster(tmp_path: Path) -> None:
    """The README's preflight line, run as a process with the README's $KUBECONFIG pointing at recorded
    API responses: one line per check, and exit 0 exactly when no check failed (what its step promises)."""
    own = {"grace", ".venv/bin/grace"}
    (preflight,) = [command for _, command in commands() if command[0] in own and command[1] == "preflight"]
    with KubeApi(PASSING) as api:
        environment = {**os.environ, "KUBECONFIG": str(api.write_kubeconfig(tmp_path))}
        result = subprocess.run(
            [sys.executable, "-m", "grace_infra", *preflight[1:]],
            cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    lines = result.stdout.splitlines()
    assert result.stderr == ""
    assert lines[-1].startswith("preflight: ")
    assert {line.split()[0] for line in lines[:-1]} <= {"PASS", "FAIL", "SKIP"}
    failed = sum(line.startswith("FAIL") for line in lines[:-1])
    assert (result.returncode == 0) == (failed == 0), lines
    assert api.requests, "preflight never reached the recorded API server"


def test_the_documented_model_example_validates() -> None:
    text = (REPO_ROOT / "docs" / "model-servers.md").read_text(encoding="utf-8")
    (example,) = [b for b in readme.blocks(text) if b.language == "yaml" and "grace:models" in b.text]
    models = yaml.safe_load(example.text)["grace:models"]
    stack = yaml.safe_load((REPO_ROOT / "Pulumi.nrp.yaml").read_text())["config"]
    raw = {key.removeprefix("grace:"): value for key, value in stack.items() if key.startswith("grace:")}
    served = GraceConfig.parse({**raw, "models": models}).served_models()
    assert [m.key for m in served] == [m["key"] for m in models]


def _documents() -> list[Path]:
    return [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("document", _documents(), ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(document: Path) -> None:
    broken = []
    base = document.parent
    for section in readme.sections(document.read_text(encoding="utf-8")):
        if section.level <= 2:
            # A page's "For the README" section is written to be pasted into README.md: its links are
            # relative to the repository root.
            base = REPO_ROOT if section.title == FOR_THE_README else document.parent
        broken += [target for target in readme.links(section) if not _resolves(target, base, document)]
    assert broken == []


def _resolves(target: str, base: Path, document: Path) -> bool:
    if re.match(r"^[a-z]+:", target):
        return True  # https:, mailto:
    path, _, anchor = target.partition("#")
    file = (base / path).resolve() if path else document
    if not file.exists():
        return False
    if anchor and file.suffix == ".md":
        return anchor in {readme.slug(s.title) for s in readme.sections(file.read_text(encoding="utf-8"))}
    return True

