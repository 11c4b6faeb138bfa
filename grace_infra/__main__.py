"""`python -m grace_infra render ...`: see grace_infra/render.py."""

from grace_infra.render import main

raise SystemExit(main())
