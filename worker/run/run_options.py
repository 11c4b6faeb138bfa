"""The options every pipeline run shares, as one validated model built from the common CLI flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from worker import constants as c
from worker import contract
from worker.server.client_options import ClientOptions

__all__ = ["RunOptions"]


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
        default=contract.METRICS_PORT, ge=0, le=65535, description="Prometheus port; 0 disables metrics."
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
        "dated folder (worker/run/supersede.py) instead of refusing to run.",
    )

    @model_validator(mode="after")
    def _output_is_not_input(self) -> RunOptions:
        if self.output.resolve() == self.input.resolve():
            raise ValueError(f"--output {self.output} is the input file; choose another path.")
        return self

    @property
    def checkpoint_path(self) -> Path:
        return self.output.with_name(self.output.name + contract.CHECKPOINT_SUFFIX)

    @property
    def meta_path(self) -> Path:
        return self.output.with_name(self.output.name + contract.META_SUFFIX)
