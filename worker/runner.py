"""The runner all pipelines share: input, checkpoint/resume, concurrency, progress, metrics, output, meta.

A pipeline only says how one row becomes requests and how the responses become columns (`Pipeline`);
`run_pipeline` does the rest and returns the process exit code:
  0  every row succeeded;
  3  the output is complete but some rows carry an error (in the pipeline's error column);
  2  nothing usable could be done: bad input or arguments, no server, unknown model. Nothing is written
     (or, when the model vanishes mid-run, the checkpoint keeps every finished row for the rerun).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from worker import __version__
from worker import constants as c
from worker.checkpoint import CheckpointWriter, load_checkpoint, make_header
from worker.client import ModelClient
from worker.errors import InputError, RequestRejected, RowFailure, WorkerError
from worker.metrics import RunMetrics
from worker.options import RunOptions
from worker.progress import Progress
from worker.table import InputTable, frame_to_csv, read_input, write_atomically

__all__ = ["DEFAULT_ERROR_COLUMN", "Pipeline", "report_fatal", "run_pipeline"]

log = logging.getLogger(__name__)

DEFAULT_ERROR_COLUMN = "error"


@runtime_checkable
class Pipeline(Protocol):
    """What a pipeline module builds from its arguments. Everything else is the runner's job.

    Optional: an attribute `server_findings` (a JSON-serialisable dict filled by `prepare`, e.g. how the
    answer options tokenize) is recorded in the meta file's `server` section; it is not a parameter.
    """

    name: str  # the subcommand, e.g. "query"; recorded in the checkpoint, meta and metrics
    required_columns: Sequence[str]  # input columns the pipeline reads; missing ones are an InputError
    output_columns: Sequence[str]  # columns added after the input's, in order; must include error_column
    error_column: str  # "" on success, the failure's one-line message otherwise

    def parameters(self) -> Mapping[str, Any]:
        """Everything that changes the answers (model, prompts, sampling). JSON-serialisable.

        Recorded in the meta file and the checkpoint header: resuming with different parameters is refused.
        """
        ...

    async def prepare(self, client: ModelClient) -> None:
        """One-time probing before the first row (e.g. tokenizing answer options). May raise InputError."""
        ...

    async def process(self, row_index: int, row: Mapping[str, str], client: ModelClient) -> Mapping[str, Any]:
        """The added columns of one row (error column excluded).

        Raise RowFailure (optionally with partial `columns`) for a permanent per-row failure; client errors
        (RequestRejected, RetryableError after the last retry) may also be left to propagate: the runner
        records them on the row. Any other exception is a bug and stops the run (the checkpoint keeps the
        finished rows).
        """
        ...


def run_pipeline(pipeline: Pipeline, options: RunOptions) -> int:
    """Run `pipeline` over `options.input`; the exit code (0, 2 or 3). Fatal problems print one line."""
    try:
        return asyncio.run(_Run(pipeline, options).execute())
    except WorkerError as err:
        report_fatal(pipeline.name, err)
        return c.EXIT_INPUT


def report_fatal(command: str, err: BaseException) -> None:
    """The one line a user sees for a fatal error, on stderr (also the Job's log)."""
    message = " ".join(str(err).split())  # one line even when a server message has newlines
    prefix = f"worker {command}" if command else "worker"
    print(f"{prefix}: error: {message}", file=sys.stderr, flush=True)


@dataclass
class _Outcome:
    columns: dict[str, Any]
    ok: bool


@dataclass
class _Run:
    pipeline: Pipeline
    options: RunOptions
    metrics: RunMetrics = field(default_factory=RunMetrics)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    rows_phase_s: float = 0.0  # first row sent to last row written: the run minus setup and output

    @property
    def parameters(self) -> dict[str, Any]:
        """The pipeline's parameters plus the model name: every answer depends on the model."""
        return {"model_name": self.options.client.model_name, **self.pipeline.parameters()}

    async def execute(self) -> int:
        pipeline, options = self.pipeline, self.options
        table = read_input(options.input, pipeline.required_columns, options.limit)
        self._check_columns(table)
        header = make_header(pipeline.name, table.sha256, self.parameters)
        self._check_output_is_ours()
        done = load_checkpoint(options.checkpoint_path, header)
        rows = len(table.frame)
        finished = {index: columns for index, columns in done.items() if index < rows}
        pending = [index for index in range(rows) if index not in finished]
        if finished:
            log.info(
                "resuming from %s: %d of %d rows already done", options.checkpoint_path, len(finished), rows
            )

        server: dict[str, Any] = {"endpoint": _without_credentials(options.client.base_url)}
        if pending:
            self.metrics.serve(options.metrics_port)
            try:
                server |= await self._process(table, pending, finished, header)
            finally:
                self.metrics.stop()
        else:
            # Nothing to send: keep what the run that did the work learned about its server.
            server = _previous_server(options.meta_path) or {
                **server,
                "note": "not contacted: every row was already in the checkpoint",
            }
        return self._finish(table, finished, server, resumed=rows - len(pending))

    def _check_columns(self, table: InputTable) -> None:
        pipeline = self.pipeline
        if pipeline.error_column not in pipeline.output_columns:
            raise TypeError(
                f"pipeline {pipeline.name}: output_columns must include {pipeline.error_column!r}"
            )
        clash = [column for column in pipeline.output_columns if column in table.frame.columns]
        if clash:
            raise InputError(
                f"--input {self.options.input}: already has column(s) {', '.join(clash)} that "
                f"`{pipeline.name}` adds; rename them in the input or use another pipeline."
            )

    def _check_output_is_ours(self) -> None:
        """Never overwrite an output this run cannot account for: only a checkpoint proves it is ours."""
        output = self.options.output
        if output.is_dir():
            raise InputError(f"--output {output}: is a directory; give a file path.")
        if output.exists() and not self.options.checkpoint_path.exists():
            raise InputError(
                f"--output {output} already exists and has no checkpoint {self.options.checkpoint_path.name} "
                "beside it; choose another --output or remove the old file."
            )

    async def _process(
        self,
        table: InputTable,
        pending: list[int],
        finished: dict[int, dict[str, Any]],
        header: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Probe the server, then process every pending row; returns the server facts for the meta file."""
        pipeline, options = self.pipeline, self.options
        ok = sum(1 for columns in finished.values() if not columns.get(pipeline.error_column))
        progress = Progress(pipeline.name, len(table.frame), ok=ok, failed=len(finished) - ok)
        self.metrics.rows_total.labels(pipeline.name).set(len(table.frame))
        async with ModelClient(options.client, observer=self.metrics) as client:
            await client.wait_until_healthy(options.wait_timeout_s)
            version, model = await asyncio.gather(client.version(), self._model_entry(client))
            await pipeline.prepare(client)
            try:
                writer = CheckpointWriter.open(options.checkpoint_path, header)
            except OSError as err:
                raise InputError(
                    f"--output {options.output}: cannot write beside it ({err.strerror})."
                ) from err
            records = table.frame.to_dict("records")
            log.info(
                "%s: %d rows to do, %d requests in flight, model %s at %s",
                pipeline.name,
                len(pending),
                options.client.batch_size,
                options.client.model_name,
                _without_credentials(options.client.base_url),
            )
            rows_started = time.monotonic()
            try:
                await self._process_rows(
                    client, writer, records, pending, finished=finished, progress=progress
                )
            finally:
                await writer.aclose()
                progress.close()
                self.rows_phase_s = time.monotonic() - rows_started
        facts: dict[str, Any] = {"version": version, "model": model}
        # Optional (issue 6): what a pipeline learned from the server in prepare() (e.g. how the options
        # tokenize, which method was exact), recorded in the meta file; it is not a parameter, so it never
        # enters the checkpoint header.
        findings = getattr(pipeline, "server_findings", None)
        if findings:
            facts["pipeline_findings"] = findings
        return facts

    async def _model_entry(self, client: ModelClient) -> dict[str, Any] | None:
        """The server's entry for --model-name; InputError when the server says it has no such model."""
        try:
            return await client.model_entry()
        except RequestRejected as err:
            if err.unknown_model:
                raise InputError(f"--model-name {self.options.client.model_name}: {err.message}") from err
            # A server without /v1/models (some hosted APIs): the first row's request will tell.
            log.warning("cannot list the server's models (%s); not checking --model-name", err)
            return None

    async def _process_rows(
        self,
        client: ModelClient,
        writer: CheckpointWriter,
        records: list[dict[str, str]],
        pending: list[int],
        *,
        finished: dict[int, dict[str, Any]],
        progress: Progress,
    ) -> None:
        todo = iter(pending)  # shared by the row workers; next() never awaits, so no two take one row

        async def row_worker() -> None:
            for index in todo:
                outcome = await self._one_row(client, index, records[index])
                writer.append(index, outcome.columns)
                finished[index] = outcome.columns
                progress.row_finished(outcome.ok)
                self.metrics.rows.labels(self.pipeline.name, "ok" if outcome.ok else "failed").inc()

        workers = min(self.options.client.batch_size, len(pending))
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(row_worker())
        except* RequestRejected as rejected:
            # Only run-fatal refusals escape _one_row: every later row would be refused the same way.
            err = rejected.exceptions[0]
            assert isinstance(err, RequestRejected)
            raise InputError(
                f"the server refused the run ({err}); {len(finished)} finished rows are kept in "
                f"{self.options.checkpoint_path.name}."
            ) from err

    async def _one_row(self, client: ModelClient, index: int, row: Mapping[str, str]) -> _Outcome:
        pipeline = self.pipeline
        try:
            added = await pipeline.process(index, row, client)
        except RowFailure as err:
            return _Outcome({**err.columns, pipeline.error_column: _one_line(err)}, ok=False)
        except RequestRejected as err:
            if err.fatal:
                raise
            return _Outcome({pipeline.error_column: _one_line(err)}, ok=False)
        except WorkerError as err:
            return _Outcome({pipeline.error_column: _one_line(err)}, ok=False)
        unknown = set(added) - set(pipeline.output_columns)
        if unknown:
            raise TypeError(f"pipeline {pipeline.name} returned undeclared column(s) {sorted(unknown)}")
        return _Outcome({**added, pipeline.error_column: ""}, ok=True)

    def _finish(
        self, table: InputTable, finished: dict[int, dict[str, Any]], server: dict[str, Any], *, resumed: int
    ) -> int:
        """Write the meta file, then the output (its existence means complete); the exit code."""
        pipeline, options = self.pipeline, self.options
        output = table.frame.copy()
        for column in pipeline.output_columns:
            output[column] = [_cell(finished[index].get(column)) for index in range(len(output))]
        failed = sum(1 for index in range(len(output)) if finished[index].get(pipeline.error_column))
        exit_code = c.EXIT_ROWS_FAILED if failed else c.EXIT_OK
        meta = self._meta(table, server, ok=len(output) - failed, failed=failed, resumed=resumed)
        meta["exit_code"] = exit_code
        options.output.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(options.meta_path, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        write_atomically(options.output, frame_to_csv(output))
        log.info(
            "%s: wrote %s (%d rows: %d ok, %d failed)",
            pipeline.name,
            options.output,
            len(output),
            len(output) - failed,
            failed,
        )
        return exit_code

    def _meta(
        self, table: InputTable, server: dict[str, Any], *, ok: int, failed: int, resumed: int
    ) -> dict[str, Any]:
        options, client = self.options, self.options.client
        finished_at = datetime.now(UTC)
        return {
            "pipeline": self.pipeline.name,
            "worker_version": __version__,
            "command_line": list(options.command_line),
            "input": {
                "path": str(options.input),
                "sha256": table.sha256,
                "rows_in_file": table.file_rows,
                "rows_processed": len(table.frame),
                "limit": options.limit,
            },
            "server": server,
            "weights": weights_marker(),
            "parameters": self.parameters,
            "client": {
                "model_name": client.model_name,
                "batch_size": client.batch_size,
                "timeout_s": client.timeout_s,
                "max_retries": client.max_retries,
            },
            "started_at": self.started_at.isoformat(),
            "finished_at": finished_at.isoformat(),
            "duration_s": round((finished_at - self.started_at).total_seconds(), 3),
            "rows_phase_s": round(self.rows_phase_s, 3),
            "rows": {"ok": ok, "failed": failed, "from_checkpoint": resumed},
        }


def weights_marker() -> dict[str, Any] | None:
    """The checkpoint the server loaded (repo, requested revision, resolved commit), when the pod can
    read the download's marker; None otherwise (a persistent server's pod is not the worker's)."""
    path = os.environ.get(c.WEIGHTS_MARKER_ENV)
    if not path:
        return None
    try:
        recorded = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict):
        return None
    return {key: recorded.get(key) for key in ("repo", "revision", "commit")}


def _previous_server(meta_path: Path) -> dict[str, Any] | None:
    try:
        server = json.loads(meta_path.read_text(encoding="utf-8")).get("server")
    except (OSError, ValueError, AttributeError):
        return None
    return server if isinstance(server, dict) else None


def _cell(value: Any) -> Any:
    """A checkpoint value as a CSV cell: missing and null become empty, structures become JSON."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _without_credentials(url: str) -> str:
    """The URL as recorded in logs and meta: no user:password@ part."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
