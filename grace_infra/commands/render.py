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
from grace_infra.commands.arguments import HelpFormatter, add_config_file_argument, add_stack_argument
from grace_infra.commands.offline import OfflineRun, run_offline
from grace_infra.commands.plan_report import build_plan, summary
from grace_infra.config.input_files import offline_input_files
from grace_infra.config.stack_config import GraceConfig
from grace_infra.config.stack_files import (
    PROJECT_ROOT,
    SECRET_KEYS,
    load_raw_config,
    needed_secrets,
    provider_settings,
)
from grace_infra.errors import GraceError
from grace_infra.nrp_rules import check_config

__all__ = ["RenderInputError", "Rendered", "main", "render", "write_render"]

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
    """An --out that must not be replaced, or a secret that cannot be decrypted offline."""


@dataclass
class Rendered:
    """What one render produced, in memory."""

    config: GraceConfig
    run: OfflineRun
    plan: dict[str, Any]
    placeholder_secrets: list[str]  # config keys filled with SECRET_PLACEHOLDER
    input_substitutions: list[str] = field(default_factory=list)  # input_files.offline_input_files notes


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
        {**plain, **dict.fromkeys(filled, SECRET_PLACEHOLDER), **provider_settings(stack, config_files)},
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
