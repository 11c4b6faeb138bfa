"""`python -m grace_infra render`: the whole stack, offline, as files a person can read.

Loads Pulumi.yaml's defaults, `Pulumi.<stack>.yaml` and any `--config-file` overrides (later files
replace whole top-level keys, like `pulumi config set`), fills the Pulumi secrets with placeholders,
runs `__main__.py` under Pulumi's mocks (nothing can reach a cluster) and writes:

    DIR/manifests/<Kind>_<metadata.name>.yaml   one object each, as the provider would receive it
    DIR/resources.json                          every registered resource and its options
    DIR/plan.json                               GPUs, requests/limits, totals vs quota, findings

Everything is computed before anything is written, then written into a temporary directory beside
DIR that replaces DIR only on success: an invalid config leaves no file and no half-written DIR.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from grace_infra import constants as c
from grace_infra.cli import HelpFormatter, add_config_file_argument, add_stack_argument
from grace_infra.config import GraceConfig
from grace_infra.errors import GraceError
from grace_infra.input_files import offline_input_files
from grace_infra.offline import PROJECT_ROOT, OfflineRun, run_offline
from grace_infra.plan import build_plan, summary
from grace_infra.policy import check_config
from grace_infra.stack import DEEPSEEK_API_KEY_KEY, HF_TOKEN_KEY, SECRET_KEYS

__all__ = ["RenderInputError", "Rendered", "load_raw_config", "main", "render", "write_render"]

EXIT_OK = 0
EXIT_USAGE = 2  # bad config, policy violation, unreadable input: one line on stderr, nothing written
SECRET_PLACEHOLDER = "offline-render-placeholder"  # noqa: S105 (stands in for a secret; never a real one)
MANIFESTS_DIR = "manifests"
RESOURCES_FILE = "resources.json"
PLAN_FILE = "plan.json"
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when present: 10x faster, same output
# What a previous render leaves; --out may replace a directory holding only these.
_RENDER_ENTRIES = frozenset({MANIFESTS_DIR, RESOURCES_FILE, PLAN_FILE})


class RenderInputError(GraceError):
    """A stack or config file that cannot be read, or an --out that must not be replaced."""


@dataclass
class Rendered:
    """What one render produced, in memory."""

    config: GraceConfig
    run: OfflineRun
    plan: dict[str, Any]
    placeholder_secrets: list[str]  # config keys filled with SECRET_PLACEHOLDER
    input_substitutions: list[str] = field(default_factory=list)  # input_files.offline_input_files notes


# --- reading config ------------------------------------------------------------------------------


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RenderInputError(f"{path} does not exist.") from None
    except (OSError, yaml.YAMLError) as exc:
        detail = str(exc).replace("\n", " ")
        raise RenderInputError(f"{path} cannot be read as YAML: {detail}") from None


def _grace_keys(mapping: Any, path: Path) -> dict[str, Any]:
    """`grace:*` entries of a stack-style mapping, without the prefix; other namespaces are ignored."""
    if not isinstance(mapping, Mapping):
        raise RenderInputError(f"{path} must be a mapping of grace:<key> settings, optionally under config:.")
    prefix = f"{c.PULUMI_CONFIG_NAMESPACE}:"
    entries = {}
    for raw_key, value in mapping.items():
        key = str(raw_key)
        if key.startswith(prefix):
            entries[key.removeprefix(prefix)] = value
        elif ":" not in key:
            entries[key] = value  # a bare key is in the project's namespace, as in Pulumi.yaml
    return entries


def project_defaults(project_file: Path) -> dict[str, Any]:
    """Defaults declared in Pulumi.yaml, which the Pulumi CLI applies to keys a stack leaves unset."""
    document = _read_yaml(project_file) or {}
    declared = document.get("config") or {}
    return {
        key: spec["default"]
        for key, spec in declared.items()
        if isinstance(spec, Mapping) and "default" in spec and spec["default"] not in ("", None)
    }


def load_raw_config(
    stack: str, config_files: Sequence[Path] = (), project_root: Path = PROJECT_ROOT
) -> tuple[dict[str, Any], set[str]]:
    """The stack's `grace:*` values as the engine would pass them, and the keys that are secrets.

    A value stored encrypted (`{secure: ...}`, from `pulumi config set --secret`) cannot be decrypted
    offline: its key is returned as a secret and its value dropped.
    """
    stack_file = project_root / f"Pulumi.{stack}.yaml"
    if not stack_file.is_file():
        raise RenderInputError(f"--stack {stack}: {stack_file.name} does not exist in {project_root}.")
    raw = project_defaults(project_root / "Pulumi.yaml")
    documents = []
    for path in (stack_file, *config_files):
        document = _read_yaml(path) or {}
        is_stack_style = isinstance(document, Mapping) and "config" in document
        documents.append((path, (document["config"] or {}) if is_stack_style else document))
    secrets: set[str] = set()
    for path, mapping in documents:
        for key, value in _grace_keys(mapping, path).items():
            if isinstance(value, Mapping) and set(value) == {"secure"}:
                secrets.add(key)
                raw.pop(key, None)
            else:
                raw[key] = value
                secrets.discard(key)
    return raw, secrets


def needed_secrets(config: GraceConfig) -> set[str]:
    """Secrets this config cannot work without (checked by policy.check_secrets under a real stack)."""
    needed = set()
    if any(model.gated for model in config.served_models()):
        needed.add(HF_TOKEN_KEY)
    if config.jobs.deepseek_endpoint:
        needed.add(DEEPSEEK_API_KEY_KEY)
    return needed


# --- rendering -----------------------------------------------------------------------------------


def render(stack: str = c.DEFAULT_STACK, config_files: Sequence[Path] = ()) -> Rendered:
    """Run the program offline; raises GraceError (ConfigError, PolicyViolation, ...) on bad input."""
    raw, secrets = load_raw_config(stack, config_files)
    raw, input_notes = offline_input_files(raw, PROJECT_ROOT)
    undecryptable = sorted(secrets - set(SECRET_KEYS))
    if undecryptable:
        raise RenderInputError(
            f"grace:{undecryptable[0]} is stored encrypted and cannot be decrypted offline; pass its value "
            "in a --config-file."
        )
    plain = {k: v for k, v in raw.items() if k not in SECRET_KEYS}
    config = GraceConfig.parse(plain)  # the one-line error before any Pulumi machinery runs
    given = {key for key in SECRET_KEYS if raw.get(key)}  # a plaintext value in an extra file
    filled = sorted((secrets | needed_secrets(config) | given) & set(SECRET_KEYS))
    run = run_offline(
        {**plain, **dict.fromkeys(filled, SECRET_PLACEHOLDER)},
        secret_keys=[f"{c.PULUMI_CONFIG_NAMESPACE}:{key}" for key in filled],
        stack=stack,
    )
    plan = build_plan(config, check_config(config))
    return Rendered(
        config=config, run=run, plan=plan, placeholder_secrets=filled, input_substitutions=input_notes
    )


def manifest_filename(manifest: Mapping[str, Any]) -> str:
    return f"{manifest['kind']}_{manifest['metadata']['name']}.yaml"


def _dump_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False) + "\n"


def _fill(directory: Path, rendered: Rendered) -> int:
    manifests = directory / MANIFESTS_DIR
    manifests.mkdir()
    written = 0
    for manifest in rendered.run.manifests():
        target = manifests / manifest_filename(manifest)
        if target.exists():
            # Two objects of one kind and name would overwrite each other; that is a program bug.
            raise RuntimeError(f"two rendered objects would both be written to {target.name}")
        # Sorted keys: two renders of the same stack are byte-identical, so `diff -r` shows real changes
        # (apiVersion, kind, metadata, spec happen to sort in their usual order).
        target.write_text(yaml.dump(manifest, Dumper=_DUMPER, sort_keys=True), encoding="utf-8")
        written += 1
    (directory / RESOURCES_FILE).write_text(
        _dump_json([resource.to_json() for resource in rendered.run.resources]), encoding="utf-8"
    )
    (directory / PLAN_FILE).write_text(_dump_json(rendered.plan), encoding="utf-8")
    return written


def _check_replaceable(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise RenderInputError(f"--out {out} exists and is not a directory; choose another path.")
    foreign = sorted(entry.name for entry in out.iterdir() if entry.name not in _RENDER_ENTRIES)
    if foreign:
        raise RenderInputError(
            f"--out {out} holds files a render did not write ({', '.join(foreign[:3])}); "
            "choose an empty or new directory."
        )


def write_render(rendered: Rendered, out: Path) -> int:
    """Write the render into `out`, replacing a previous render there; returns the manifest count."""
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        written = _fill(staging, rendered)
        if out.exists():
            previous = out.with_name(f"{staging.name}.previous")
            out.rename(previous)
            try:
                staging.rename(out)
            except OSError:
                previous.rename(out)  # put the previous render back rather than leave no render
                raise
            shutil.rmtree(previous)
        else:
            staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return written


# --- command line --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grace render",
        description="Render the stack offline into manifests, resources.json and plan.json.",
        epilog=(
            f"writes DIR/{MANIFESTS_DIR}/<Kind>_<name>.yaml, DIR/{RESOURCES_FILE} and DIR/{PLAN_FILE}; "
            "nothing reaches a cluster. "
            f"exit codes: {EXIT_OK} rendered; {EXIT_USAGE} bad config, NRP rule violation or unreadable "
            "file (one line on stderr, nothing written)."
        ),
        formatter_class=HelpFormatter,
    )
    add_stack_argument(parser)
    add_config_file_argument(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        rendered = render(args.stack, args.config_file)
        written = write_render(rendered, args.out)
    except GraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for warning in rendered.run.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for note in rendered.input_substitutions:
        print(f"note: {note}", file=sys.stderr)
    print(summary(rendered.plan))
    if rendered.placeholder_secrets:
        names = ", ".join(f"grace:{key}" for key in rendered.placeholder_secrets)
        print(f"\nsecrets filled with placeholders (redacted in every file): {names}")
    print(
        f"wrote {written} manifests, {RESOURCES_FILE} ({len(rendered.run.resources)} resources) and "
        f"{PLAN_FILE} to {args.out}"
    )
    return EXIT_OK
