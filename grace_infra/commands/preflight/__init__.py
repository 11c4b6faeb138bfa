"""`grace preflight --stack nrp [--context CTX]`: check the live cluster against the stack before `pulumi up`.

The render proves the manifests are well formed; only the cluster knows whether the namespace, quota,
storage classes, GPU nodes, CRDs and secrets they rely on are there. One line per check (PASS, FAIL
with the fix, or SKIP when the stack does not need it), then a summary line.

Exit codes: 0 every check passed or was skipped; 2 a check failed, the stack config is invalid, or the
cluster cannot be reached (one line, no traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from grace_infra.commands.arguments import (
    HelpFormatter,
    add_cluster_arguments,
    add_config_file_argument,
    add_stack_argument,
)
from grace_infra.commands.kube_client import Cluster, ClusterUnreachable, connect
from grace_infra.commands.plan_report import build_plan
from grace_infra.commands.preflight.checks import CHECKS, CheckResult, Outcome, StackFacts, run_checks
from grace_infra.config.input_files import offline_input_files
from grace_infra.config.stack_config import GraceConfig
from grace_infra.config.stack_files import HF_TOKEN_KEY, PROJECT_ROOT, SECRET_KEYS, load_raw_config
from grace_infra.errors import GraceError

__all__ = ["CHECKS", "CheckResult", "main", "stack_facts"]

EXIT_OK = 0
EXIT_FAILED = 2


def stack_facts(stack: str, config_files: Sequence[Path] = ()) -> StackFacts:
    """The stack's config and plan, read exactly as `grace render` reads them."""
    raw, encrypted = load_raw_config(stack, config_files)
    # The cluster checks do not read the study CSVs; `render` and `pulumi up` name a missing one.
    raw, _ = offline_input_files(raw, PROJECT_ROOT)
    config = GraceConfig.parse({k: v for k, v in raw.items() if k not in SECRET_KEYS})
    return StackFacts(
        config=config,
        plan=build_plan(config),
        hf_token_set=HF_TOKEN_KEY in encrypted or bool(raw.get(HF_TOKEN_KEY)),
    )


def format_report(results: list[CheckResult], context: str, host: str) -> str:
    width = max(len(r.check) for r in results)
    failed = sum(1 for r in results if r.outcome == Outcome.FAIL)
    passed = sum(1 for r in results if r.outcome == Outcome.PASS)
    skipped = len(results) - failed - passed
    verdict = "ready for pulumi up" if not failed else "fix the FAIL lines before pulumi up"
    summary = (
        f"preflight: {passed} passed, {failed} failed, {skipped} skipped on context {context} ({host}): "
        f"{verdict}"
    )
    return "\n".join([*(r.line(width) for r in results), summary])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grace preflight",
        description="Check the live cluster against the stack before pulumi up (read-only).",
        epilog=(
            f"exit codes: {EXIT_OK} every check passed or was skipped; {EXIT_FAILED} a check failed, the "
            "stack config is invalid, or the cluster cannot be reached (one line on stderr)."
        ),
        formatter_class=HelpFormatter,
    )
    add_stack_argument(parser)
    add_config_file_argument(parser)
    add_cluster_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        facts = stack_facts(args.stack, args.config_file)
        api, context, host = connect(args.context, args.kubeconfig, stack=args.stack)
        with api:
            results = run_checks(Cluster(api), facts)
    except (GraceError, ClusterUnreachable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(format_report(results, context, host))
    return EXIT_OK if all(r.outcome != Outcome.FAIL for r in results) else EXIT_FAILED
