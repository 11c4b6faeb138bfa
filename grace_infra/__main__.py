"""`python -m grace_infra <command>`: the same as the `grace` command (grace_infra/commands/cli.py)."""

from grace_infra.commands.cli import main

raise SystemExit(main())
