"""The options every pipeline run shares, as one validated model built from the common CLI flags."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from worker import constants as c

__all__ = ["ClientOptions", "RunOptions"]


class ClientOptions(BaseModel):
    """How to reach the model server. Kept apart so probing code can build a client without a run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str = Field(description="OpenAI base URL, e.g. http://vllm-x:8000/v1 (a bare host gets /v1).")
    model_name: str = Field(min_length=1, description="Served model name sent in every request.")
    batch_size: int = Field(default=c.DEFAULT_BATCH_SIZE, gt=0, description="Requests in flight at once.")
    timeout_s: float = Field(default=c.DEFAULT_TIMEOUT_S, gt=0, description="Deadline per attempt, seconds.")
    max_retries: int = Field(
        default=c.DEFAULT_MAX_RETRIES, ge=0, description="Retries after the first attempt."
    )
    backoff_base_s: float = Field(
        default=c.BACKOFF_BASE_S, ge=0, description="Delay before the first retry; doubles per retry."
    )
    api_key: SecretStr = Field(
        default=SecretStr(c.PLACEHOLDER_API_KEY), description="Bearer token; never logged or recorded."
    )

    @model_validator(mode="after")
    def _endpoint_is_http(self) -> ClientOptions:
        if not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"--model-endpoint must start with http:// or https://, got {self.endpoint!r}.")
        return self

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, always ending in /v1 (the seed's Jobs pass it both with and without)."""
        url = self.endpoint.rstrip("/")
        return url if url.endswith("/v1") else f"{url}/v1"

    @property
    def server_root(self) -> str:
        """Scheme://host:port[/prefix] without /v1: vLLM's /health, /version and /tokenize live here."""
        return self.base_url.removesuffix("/v1")


class RunOptions(BaseModel):
    """One pipeline run: where rows come from, where they go, and how the run behaves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: Path = Field(description="Input study CSV.")
    output: Path = Field(description="Output CSV; written only when every row is done.")
    client: ClientOptions = Field(description="How to reach the model server.")
    limit: int | None = Field(default=None, gt=0, description="Process only the first N rows (smoke runs).")
    wait_timeout_s: float = Field(
        default=c.DEFAULT_WAIT_TIMEOUT_S, ge=0, description="How long to wait for /health before giving up."
    )
    metrics_port: int = Field(
        default=c.DEFAULT_METRICS_PORT, ge=0, le=65535, description="Prometheus port; 0 disables metrics."
    )
    retry_failed: bool = Field(
        default=False,
        description="Send rows again that failed for their own reason (a 400, an unparseable answer); "
        "rows that failed for transport reasons are always sent again.",
    )
    wait_for_lock_s: float = Field(
        default=0.0, ge=0, description="How long to wait for another worker writing the same output."
    )
    command_line: tuple[str, ...] = Field(default=(), description="argv as typed, recorded in the meta file.")
    plan_digest: str | None = Field(
        default=None,
        description="The digest the deployment planned this run with; recorded in the meta file, where a "
        "later Job (extraction waiting for exp1) checks it.",
    )
    supersede: bool = Field(
        default=False,
        description="Move an output, checkpoint and meta made with other input or parameters aside into a "
        "dated folder (worker/supersede.py) instead of refusing to run.",
    )

    @model_validator(mode="after")
    def _output_is_not_input(self) -> RunOptions:
        if self.output.resolve() == self.input.resolve():
            raise ValueError(f"--output {self.output} is the input file; choose another path.")
        return self

    @property
    def checkpoint_path(self) -> Path:
        return self.output.with_name(self.output.name + c.CHECKPOINT_SUFFIX)

    @property
    def meta_path(self) -> Path:
        return self.output.with_name(self.output.name + c.META_SUFFIX)


def api_key_from_env(variable: str | None) -> SecretStr:
    """The API key from `variable`; vLLM without --api-key accepts the placeholder."""
    if variable is None:
        return SecretStr(os.environ.get(c.DEFAULT_API_KEY_ENV) or c.PLACEHOLDER_API_KEY)
    value = os.environ.get(variable)
    if not value:
        raise ValueError(f"--api-key-env {variable}: that environment variable is not set or empty.")
    return SecretStr(value)
