"""`python -m grace_infra <command>`: the same as the `grace` command (grace_infra/cli.py)."""

from grace_infra.cli import main

raise SystemExit(main())
