"""The layout shows the layers: each module imports only its own layer or the ones before it, only the
component and command packages import Pulumi, and the commands that read a stack start without it.

The layers are the ones grace_infra/__init__.py and worker/__init__.py draw; this file is where they are
enforced, read from the imports of every module (ast), not from a list kept by hand elsewhere.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("grace_infra", "worker")
PULUMI_ROOTS = frozenset({"pulumi", "pulumi_kubernetes"})
# Entries a package's top level may hold: "at most about a dozen", each with one job.
MAX_TOP_LEVEL_ENTRIES = 13
# The same module name in both packages is allowed only where it means the same thing in each: the
# package's entry points, its constants and its error hierarchy.
SHARED_FILE_NAMES = frozenset({"__init__.py", "__main__.py", "cli.py", "constants.py", "errors.py"})

# Module prefix -> layer, lowest first. The longest matching prefix decides.
LAYERS: dict[str, int] = {
    "grace_infra": 0,
    "grace_infra.constants": 0,
    "grace_infra.errors": 0,
    "grace_infra.payloads": 0,
    "grace_infra.nrp": 0,  # the package docstring
    "grace_infra.nrp.cluster_facts": 0,
    "grace_infra.config": 1,
    "grace_infra.planning": 2,
    "grace_infra.manifests": 3,
    "grace_infra.nrp_rules": 4,
    "grace_infra.components": 5,
    "grace_infra.commands": 6,
    "grace_infra.commands.cli": 6,
    "grace_infra.__main__": 6,
    "worker": 0,
    "worker.constants": 0,
    "worker.errors": 0,
    "worker.contract": 0,
    "worker.server": 1,
    "worker.run": 2,
    "worker.studies": 3,
    "worker.pipelines": 4,
    "worker.commands": 5,
    "worker.cli": 5,
    "worker.__main__": 5,
}
# The stack imports the contract both sides agree on (worker/contract.py: environment, paths, exit codes,
# the meta file), measures prompts with the worker's own study code (refusing what it refuses, with its
# errors, worded by the worker's one validation formatter), checks a study CSV with the worker's own input
# reader (`grace studies check`) and writes files the worker's way; nothing else crosses the packages,
# and the worker (shipped alone in the job image) never imports the stack.
CROSS_PACKAGE = {
    "grace_infra": (
        "worker.studies", "worker.errors", "worker.contract", "worker.run.atomic_files",
        "worker.run.input_table",
    ),
}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            yield _module_name(path), path


def _layer(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer of tests/unit/test_layout.py")


def _imports(path: Path) -> Iterator[str]:
    """Every module an import statement names (for `from m import x`, both m and m.x: x may be a module)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (REPO / relative).with_suffix(".py").is_file() or (REPO / relative / "__init__.py").is_file()


def _upward_imports() -> list[str]:
    found = []
    for module, path in _modules():
        own_package = module.split(".")[0]
        for target in _imports(path):
            if target.split(".")[0] != own_package or not _is_module(target):
                continue
            if _layer(target) > _layer(module):
                found.append(f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})")
    return found


def test_no_module_imports_a_later_layer() -> None:
    assert _upward_imports() == []


def test_the_layer_check_sees_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The check must be able to fail: a planning module importing a component is reported.
    fake = tmp_path / "grace_infra"
    (fake / "planning").mkdir(parents=True)
    (fake / "components").mkdir()
    (fake / "components" / "thing.py").write_text("")
    (fake / "planning" / "bad.py").write_text("from grace_infra.components import thing\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", ("grace_infra",))
    assert _upward_imports() == [
        "grace_infra.planning.bad (layer 2) imports grace_infra.components.thing (layer 5)"
    ]


def test_the_packages_cross_only_where_the_stack_reads_the_workers_study_code() -> None:
    crossing = []
    for module, path in _modules():
        own = module.split(".")[0]
        allowed = CROSS_PACKAGE.get(own, ())
        for target in _imports(path):
            root = target.split(".")[0]
            if root in PACKAGES and root not in {own, target} and not target.startswith(allowed):
                crossing.append(f"{module} imports {target}")
    assert crossing == []


def test_only_components_and_commands_import_pulumi() -> None:
    importing = sorted(
        module
        for module, path in _modules()
        if any(target.split(".")[0] in PULUMI_ROOTS for target in _imports(path))
        and not module.startswith(("grace_infra.components", "grace_infra.commands"))
    )
    assert importing == []


@pytest.mark.parametrize(
    "argv",
    [["status", "--help"], ["results", "check", "--help"], ["results", "--help"]],
    ids=" ".join,
)
def test_commands_that_read_a_stack_start_without_pulumi(argv: list[str]) -> None:
    program = (
        "import sys\n"
        "from grace_infra.commands.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(PULUMI_ROOTS)!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_render_does_load_pulumi_so_the_check_above_can_fail() -> None:
    program = (
        "import sys\nimport grace_infra.commands.render\n"
        "print('pulumi' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.stdout.strip() == "True", done.stderr


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_has_about_a_dozen_top_level_entries(package: str) -> None:
    entries = sorted(p.name for p in (REPO / package).iterdir() if p.name != "__pycache__")
    assert len(entries) <= MAX_TOP_LEVEL_ENTRIES, entries


def test_every_module_and_folder_says_what_it_holds() -> None:
    missing = [
        str(path.relative_to(REPO))
        for _, path in _modules()
        if ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) is None
    ]
    folders = [
        str(folder.relative_to(REPO))
        for package in PACKAGES
        for folder in (REPO / package).rglob("*")
        if folder.is_dir() and folder.name != "__pycache__" and not (folder / "__init__.py").is_file()
    ]
    assert (missing, folders) == ([], [])


def test_no_file_name_means_two_things_across_the_packages() -> None:
    names = {package: {p.name for p in (REPO / package).rglob("*.py")} for package in PACKAGES}
    assert names["grace_infra"] & names["worker"] <= SHARED_FILE_NAMES
    for package in PACKAGES:
        paths = [p.name for p in (REPO / package).rglob("*.py") if p.name not in SHARED_FILE_NAMES]
        assert sorted(n for n in set(paths) if paths.count(n) > 1) == [], package
