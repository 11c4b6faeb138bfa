"""Run the Pulumi program offline under Pulumi's mocks and record what it asks for.

Facts this module relies on (measured with pulumi 3.272):
- `Mocks.new_resource` receives the camelCase manifest the provider would receive; numbers arrive
  as floats and secret values wrapped in Pulumi's secret signature object.
- Resource options (protect, retainOnDelete, parent, dependencies) are NOT visible to
  `new_resource`; they are on the `RegisterResource` request, which `RecordingMonitor` captures.
- `set_mocks(..., project=, stack=)` makes `pulumi.Config("grace")` resolve values set with
  `set_all_config` (strings; objects JSON-encoded).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import runpy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from grace_infra import constants as c
from grace_infra.config.stack_files import PROJECT_ROOT

PROGRAM = PROJECT_ROOT / "__main__.py"

# Pulumi marks secret values in serialized properties with this signature key/value.
SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"  # noqa: S105 (a protocol marker)
SECRET_SIG_VALUE = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105 (a protocol marker)
REDACTED = "[secret]"


@dataclass
class RecordedResource:
    """One registered Pulumi resource, with the options the engine would see."""

    urn: str
    type: str
    name: str
    parent: str
    depends_on: list[str]
    protect: bool
    retain_on_delete: bool
    custom: bool
    inputs: dict[str, Any] = field(default_factory=dict)
    secret_inputs: bool = False  # some input value was a Pulumi secret
    provider: str = ""  # "<provider urn>::<id>" when an explicit provider is used, else ""
    create_timeout: str = ""  # customTimeouts.create ("84m"), "" when Pulumi's default applies
    ignore_changes: list[str] = field(default_factory=list)  # ignoreChanges property paths
    replace_on_changes: list[str] = field(default_factory=list)  # the replace_on_changes option
    delete_before_replace: bool = False  # the delete_before_replace option

    def to_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "parent": self.parent,
            "dependsOn": self.depends_on,
            "protect": self.protect,
            "retainOnDelete": self.retain_on_delete,
            "replaceOnChanges": self.replace_on_changes,
            "custom": self.custom,
        }


@dataclass
class OfflineRun:
    """Everything one offline run of the program registered, in registration order."""

    resources: list[RecordedResource]
    warnings: list[str]

    def of_type(self, type_token: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.type == type_token]

    def manifests(self) -> list[dict[str, Any]]:
        """Kubernetes objects (those with apiVersion/kind), secrets redacted, integers as integers."""
        return [
            r.inputs for r in self.resources if r.custom and "kind" in r.inputs and "apiVersion" in r.inputs
        ]

    def manifest(self, kind: str, name: str) -> dict[str, Any]:
        for m in self.manifests():
            if m["kind"] == kind and m.get("metadata", {}).get("name") == name:
                return m
        raise KeyError(f"no {kind} named {name!r} was rendered")

    def by_urn(self, urn: str) -> RecordedResource:
        return next(r for r in self.resources if r.urn == urn)


def _redact(value: Any) -> Any:
    """Every scalar of a secret value replaced by REDACTED, keeping its shape: a secret `stringData`
    stays a mapping of its (non-secret) keys, so the manifest still validates."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG_KEY) == SECRET_SIG_VALUE:
            return _redact(value.get("value"))
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return REDACTED


def _clean(value: Any) -> tuple[Any, bool]:
    """Floats that are whole numbers become ints; secrets become REDACTED. Returns (value, had_secret)."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG_KEY) == SECRET_SIG_VALUE:
            return _redact(value.get("value")), True
        had = False
        out = {}
        for k, v in value.items():
            out[k], h = _clean(v)
            had = had or h
        return out, had
    if isinstance(value, list):
        had = False
        items = []
        for v in value:
            item, h = _clean(v)
            items.append(item)
            had = had or h
        return items, had
    if isinstance(value, float) and value.is_integer():
        return int(value), False
    return value, False


class _ManifestMocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        state = dict(args.inputs)
        # The provider fills metadata.name for objects without one; mimic it so outputs resolve.
        return f"{args.name}-id", state

    def call(
        self, args: pulumi.runtime.MockCallArgs  # noqa: ARG002 (the program makes no provider calls)
    ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """A MockMonitor that also records each RegisterResource request's options."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.recorded: list[RecordedResource] = []

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        # Pulumi calls the monitor from executor threads and MockMonitor creates an event loop in each
        # one without ever closing it; their self-pipe sockets then leak (ResourceWarning at exit).
        # Give the call a loop of our own and close it afterwards.
        with _thread_event_loop():
            return self._register(request)

    def _register(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        inputs = pulumi_mocks.rpc.deserialize_properties(request.object, keep_unknowns=True)
        cleaned, had_secret = _clean(inputs)
        self.recorded.append(
            RecordedResource(
                urn=response.urn,
                type=request.type,
                name=request.name,
                parent=request.parent,
                depends_on=list(request.dependencies),
                protect=bool(request.protect),
                retain_on_delete=bool(request.retainOnDelete),
                custom=bool(request.custom),
                inputs=cleaned,
                secret_inputs=had_secret,
                provider=request.provider,
                create_timeout=request.customTimeouts.create if request.HasField("customTimeouts") else "",
                ignore_changes=list(request.ignoreChanges),
                replace_on_changes=list(request.replaceOnChanges),
                delete_before_replace=bool(request.deleteBeforeReplace),
            )
        )
        return response


@contextlib.contextmanager
def _thread_event_loop() -> Iterator[None]:
    """A current event loop for this thread during a block when it has none; closed afterwards."""
    own: asyncio.AbstractEventLoop | None = None
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        own = asyncio.new_event_loop()
        asyncio.set_event_loop(own)
    try:
        yield
    finally:
        if own is not None:
            asyncio.set_event_loop(None)
            own.close()


class _WarningCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def encode_config(raw: Mapping[str, Any]) -> dict[str, str]:
    """Pulumi config values as the engine passes them: strings, objects and lists JSON-encoded."""
    encoded = {}
    for key, value in raw.items():
        full = key if ":" in key else f"{c.PULUMI_CONFIG_NAMESPACE}:{key}"
        encoded[full] = value if isinstance(value, str) else json.dumps(value)
    return encoded


def run_offline(
    config: Mapping[str, Any],
    *,
    secret_keys: list[str] | None = None,
    stack: str = c.DEFAULT_STACK,
    program: Callable[[], None] | None = None,
) -> OfflineRun:
    """Run the program (default: the project's `__main__.py`) under mocks with `config`.

    `config` maps `grace:<key>` (or bare `<key>`) to its value. Exceptions the program raises
    (ConfigError, PolicyViolation, ...) propagate unchanged.
    """
    mocks = _ManifestMocks()
    monitor = RecordingMonitor(mocks)
    logger = logging.getLogger(f"grace.offline.{id(monitor)}")
    logger.propagate = False
    collector = _WarningCollector()
    logger.addHandler(collector)

    def body() -> None:
        if program is not None:
            program()
        else:
            runpy.run_path(str(PROGRAM), run_name="__pulumi_program__")

    # Pulumi's mock runtime is synchronous and uses the thread's current event loop; an earlier
    # asyncio.run() in the same thread (the worker's CLI, in tests) leaves none, so bring one if needed.
    with _thread_event_loop():
        pulumi.runtime.set_all_config(encode_config(config), secret_keys or [])
        pulumi.runtime.set_mocks(
            mocks, project=c.PROJECT, stack=stack, preview=True, logger=logger, monitor=monitor
        )
        settings = pulumi.runtime.settings.SETTINGS
        settings.rpc_manager.clear()
        settings.outputs.clear()
        _sync_await(run_pulumi_func(body))
    return OfflineRun(resources=monitor.recorded, warnings=collector.messages)
