"""How to reach the model server, as one validated model built from the common CLI flags: what the
client needs, kept apart from the run so probing code can build a client without a run."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from worker import constants as c

__all__ = ["ClientOptions", "api_key_from_env"]


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
        """The OpenAI base URL, always ending in /v1 (the researchers' plans write both forms)."""
        url = self.endpoint.rstrip("/")
        return url if url.endswith("/v1") else f"{url}/v1"

    @property
    def server_root(self) -> str:
        """Scheme://host:port[/prefix] without /v1: vLLM's /health, /version and /tokenize live here."""
        return self.base_url.removesuffix("/v1")


def api_key_from_env(variable: str | None) -> SecretStr:
    """The API key from `variable`; vLLM without --api-key accepts the placeholder."""
    if variable is None:
        return SecretStr(os.environ.get(c.DEFAULT_API_KEY_ENV) or c.PLACEHOLDER_API_KEY)
    value = os.environ.get(variable)
    if not value:
        raise ValueError(f"--api-key-env {variable}: that environment variable is not set or empty.")
    return SecretStr(value)
