"""The base class every pipeline extends: what the runner asks of a pipeline, and the defaults of the
hooks a pipeline may leave alone.

A pipeline says how one row becomes requests and columns; the runner (worker.run.runner) does everything
else. It must give its `name`, the input columns it reads, the columns it adds, its `parameters()` and
`process()`. The hooks below have defaults that suit a pipeline asking one answer per row with nothing
to learn from the server first; override the ones that do not.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from worker.run.sampling import Sample, derive_seed
from worker.server.client import ModelClient

__all__ = ["DEFAULT_ERROR_COLUMN", "Pipeline"]

DEFAULT_ERROR_COLUMN = "error"


class Pipeline(ABC):
    """One subcommand's work on one row; the runner owns input, checkpoint, concurrency and output."""

    name: str  # the subcommand, e.g. "query"; recorded in the checkpoint, meta and metrics
    error_column: str = DEFAULT_ERROR_COLUMN  # "" on success, the failure's one-line message otherwise

    @property
    @abstractmethod
    def required_columns(self) -> Sequence[str]:
        """Input columns the pipeline reads; missing ones are an InputError."""

    @property
    @abstractmethod
    def output_columns(self) -> Sequence[str]:
        """Columns added after the input's, in order; must include error_column."""

    @abstractmethod
    def parameters(self) -> Mapping[str, Any]:
        """Everything that changes the answers (model, prompts, sampling). JSON-serialisable.

        Recorded in the meta file and the checkpoint header: resuming with different parameters is refused.
        """

    @abstractmethod
    async def process(
        self, row_index: int, row: Mapping[str, str], client: ModelClient, sample: Sample
    ) -> Mapping[str, Any]:
        """The added columns of one sample of one row (error column excluded).

        `sample.seed` is the seed to send with this sample's requests, so N samples of one row differ and a
        rerun reproduces each of them.

        Raise RowFailure (optionally with partial `columns`) for a permanent per-row failure; client errors
        (RequestRejected, RetryableError after the last retry) may also be left to propagate: the runner
        records them on the row, and tells transport failures (sent again by the next run) from the row's
        own by what the client saw, whatever the pipeline wrapped them in. Any other exception is a bug
        and stops the run (the checkpoint keeps the finished rows).
        """

    # ---- optional hooks ----------------------------------------------------------------------------------

    @property
    def samples_per_row(self) -> int:
        """Answers per input row; each is its own output row (1: no sampling)."""
        return 1

    @property
    def base_seed(self) -> int:
        """With the row and sample index, fixes every sample's seed (`sample_seed`)."""
        return 0

    def sample_seed(self, row_index: int, sample_index: int) -> int:
        """The seed of one sample of one row: derived from the base seed and both indices by default
        (worker.run.sampling.derive_seed), so every (row, sample) has its own."""
        return derive_seed(self.base_seed, row_index, sample_index)

    @property
    def provenance_columns(self) -> Sequence[str]:
        """Output columns holding JSON evidence (raw distributions, token ids, prompts as sent); the
        output puts them after every analysis column. None by default."""
        return ()

    async def prepare(self, client: ModelClient) -> None:  # noqa: B027 - an optional hook: nothing by default
        """One-time probing before the first row (e.g. tokenizing answer options). May raise InputError.
        Nothing by default."""

    def server_findings(self) -> Mapping[str, Any]:
        """What `prepare` learned from the server (e.g. how the answer options tokenize), recorded in the
        meta file's `server` section; not a parameter, so never in the checkpoint header. None by default."""
        return {}
