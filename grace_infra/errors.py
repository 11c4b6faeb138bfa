"""The typed errors of the Pulumi program.

    GraceError                  anything the program refuses, with a one-line message for the user
    ├── ConfigError             a `grace:*` value is invalid (also a ValueError, as pydantic expects)
    └── PolicyViolation         the config is valid but breaks an NRP usage rule (see nrp_rules.py)

`python -m grace_infra render` turns every GraceError into exit code 2 and its one line; under
`pulumi preview` the message is what the engine prints. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["ConfigError", "GraceError", "PolicyViolation"]


class GraceError(Exception):
    """A problem the user can fix; `str(err)` is one sentence naming the key or model and the value."""


class ConfigError(GraceError, ValueError):
    """An invalid stack configuration; `str(err)` names the `grace:` key and the problem."""


class PolicyViolation(GraceError):  # noqa: N818 (the domain's name for it, used across the components)
    """The stack would break an NRP usage rule (https://nrp.ai/documentation/userdocs/start/policies/)."""
