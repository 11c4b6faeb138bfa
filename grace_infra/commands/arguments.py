"""The options the `grace` commands share, each written once: the stack, extra config files, the cluster."""

from __future__ import annotations

import argparse
from pathlib import Path

from grace_infra import constants as c

__all__ = ["HelpFormatter", "add_cluster_arguments", "add_config_file_argument", "add_stack_argument"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its --help line, except options whose default is "not given"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def add_stack_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", default=c.DEFAULT_STACK, help="reads Pulumi.<stack>.yaml")


def add_config_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-file", action="append", type=Path, default=[], metavar="EXTRA.yaml",
        help="extra grace:* settings replacing the stack's top-level keys; may be repeated",
    )


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Which cluster a live command reads: the kubeconfig file as kubectl picks it, and the context
    `pulumi up` deploys to (the stack's kubernetes:context) unless --context names another."""
    parser.add_argument(
        "--context", help="kubeconfig context (default: the stack's kubernetes:context, else the current one)"
    )
    parser.add_argument(
        "--kubeconfig", type=Path, help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)"
    )
