"""The runner all pipelines share: input, lock, checkpoint/resume, concurrency, signals, output, meta.

A pipeline only says how one row becomes requests and how the responses become columns (`Pipeline`, in
worker/run/pipeline.py); `run_pipeline` does the rest and returns the process exit code. Each input row is
asked `samples_per_row` times; each (row, sample) is one work item, one checkpoint line and one output row
carrying `sample` and `seed` (worker.run.sampling).

Exit codes (worker.constants; docs/never-losing-a-row.md has what each means for a rerun):
  0    every row succeeded;
  2    nothing usable could be done: bad input or arguments, unknown model, another worker holds the
       output. Nothing is written (or, when the server refuses the run mid-way, the checkpoint keeps
       every finished row);
  3    the output is complete but some rows carry an error (in the pipeline's error column);
  4    the output's filesystem is full or read-only; the checkpoint keeps every finished row;
  5    no server within --wait-timeout, at the start or during an outage; finished rows are kept;
  130  SIGINT, 143 SIGTERM: stopped cleanly, finished rows kept, the meta file records the interruption.

Memory stays bounded by the requests in flight: the input is streamed, the checkpoint is indexed by byte
offset (9 bytes per work item), and the output is built from the checkpoint in one streaming pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import logging
import math
import os
import sys
import time
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from worker import __version__, contract
from worker import constants as c
from worker.contract import MetaClient, MetaInput, MetaRows, RunMeta, RunStatus
from worker.errors import (
    InputError,
    RequestRejected,
    RowFailure,
    ServerUnavailable,
    StorageError,
    WorkerError,
)
from worker.run import completeness, supersede
from worker.run.atomic_files import atomic_writer, remove_stale_temporaries, storage_error, write_atomically
from worker.run.checkpoint import (
    CheckpointIndex,
    CheckpointReader,
    CheckpointWriter,
    ItemKey,
    ItemState,
    load_checkpoint,
    make_header,
)
from worker.run.input_table import InputTable, read_input
from worker.run.metrics import RunMetrics
from worker.run.output_lock import LockWaitStopped, hold_output_lock
from worker.run.pipeline import DEFAULT_ERROR_COLUMN, Pipeline
from worker.run.progress import Progress
from worker.run.run_options import RunOptions
from worker.run.sampling import Sample
from worker.run.shutdown import StopSignals
from worker.server.client import ModelClient, tally_requests

__all__ = ["DEFAULT_ERROR_COLUMN", "SAMPLE_COLUMNS", "Pipeline", "report_fatal", "run_pipeline"]

log = logging.getLogger(__name__)

# The runner's own columns, between the input's and a pipeline's: which answer of the row this is, and
# the seed its requests carried.
SAMPLE_COLUMNS = ("sample", "seed")

T = TypeVar("T")


def run_pipeline(pipeline: Pipeline, options: RunOptions) -> int:
    """Run `pipeline` over `options.input`; the exit code. Fatal problems print one line."""
    signals = StopSignals()
    with signals.installed():
        try:
            return asyncio.run(_Run(pipeline, options, signals).execute())
        except StorageError as err:
            report_fatal(pipeline.name, err)
            return contract.EXIT_STORAGE
        except ServerUnavailable as err:
            report_fatal(pipeline.name, err)
            return contract.EXIT_SERVER_UNAVAILABLE
        except WorkerError as err:
            report_fatal(pipeline.name, err)
            return contract.EXIT_INPUT


def report_fatal(command: str, err: BaseException) -> None:
    """The one line a user sees for a fatal error, on stderr (also the Job's log)."""
    message = " ".join(str(err).split())  # one line even when a server message has newlines
    prefix = f"worker {command}" if command else "worker"
    print(f"{prefix}: error: {message}", file=sys.stderr, flush=True)


class _Interrupted(Exception):  # noqa: N818 - a control-flow signal inside the runner, never raised out
    """Raised inside the run when a stop signal arrived; execute() turns it into the exit code."""


@dataclass
class _Run:
    pipeline: Pipeline
    options: RunOptions
    signals: StopSignals
    metrics: RunMetrics = field(default_factory=RunMetrics)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    rows_phase_s: float = 0.0  # first row sent to last row written: the run minus setup and output
    server: dict[str, Any] = field(default_factory=dict)  # the meta file's `server` section
    resumed: int = 0  # work items finished by earlier runs
    supersedes: dict[str, Any] | None = None  # the run this one moved aside (worker/run/supersede.py)
    left_work: bool = False  # a stop signal made a worker leave items unstarted

    # ---- sampling -----------------------------------------------------------------------------------

    @property
    def samples_per_row(self) -> int:
        return self.pipeline.samples_per_row

    def sample(self, key: ItemKey) -> Sample:
        row_index, sample_index = key
        return Sample(index=sample_index, seed=self.pipeline.sample_seed(row_index, sample_index))

    def sample_columns(self, table: InputTable) -> tuple[str, ...]:
        """`sample` and `seed`, unless a single-answer run reads an input that already has them.

        Such an input is a sampled run's output (extraction over N answers per row): its `sample` and
        `seed` say which answer each row is, and a second pair would only say "the first of one".
        """
        if self.samples_per_row == 1 and set(SAMPLE_COLUMNS) <= set(table.columns):
            return ()
        return SAMPLE_COLUMNS

    @property
    def parameters(self) -> dict[str, Any]:
        """The pipeline's parameters plus the model name (every answer depends on it) and the sampling."""
        return completeness.run_parameters(self.pipeline, self.options)

    # ---- the run --------------------------------------------------------------------------------------

    async def execute(self) -> int:
        self.signals.attach()
        pipeline, options = self.pipeline, self.options
        table = read_input(options.input, pipeline.required_columns, options.limit)
        self._check_columns(table)
        header = make_header(pipeline.name, table.sha256, self.parameters)
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(
                    hold_output_lock(
                        options.output,
                        wait_s=options.wait_for_lock_s,
                        stop_requested=lambda: self.signals.stop_requested,
                    )
                )
            except LockWaitStopped:
                print(
                    f"worker {pipeline.name}: stopped by {self.signals.name} while waiting for another "
                    f"worker's lock on {options.output}; nothing was written.",
                    file=sys.stderr,
                    flush=True,
                )
                return self.signals.exit_code
            # Lifecycle hooks: a finished run of exactly this experiment whose checkpoint is gone ends
            # here, before any server is contacted (worker/run/completeness.py; with the checkpoint, the
            # resume below finds nothing pending and contacts no server either); another run's files
            # are moved aside (worker/run/supersede.py).
            recorded = None
            if not options.checkpoint_path.exists():
                recorded = completeness.complete_run(options, header, rows=table.rows)
            if recorded is not None:
                completeness.record_plan_digest(options, recorded)
                log.info("%s: %s is already complete for this input and these parameters",
                         pipeline.name, options.output)  # fmt: skip
                return recorded.exit_code or contract.EXIT_OK  # 0 or 3: complete_run checked it
            self.supersedes = supersede.move_aside_if_foreign(
                options, header, started_at=self.started_at
            ) or supersede.carried_record(options, header)
            self._check_output_is_ours()
            remove_stale_temporaries(options.output)
            remove_stale_temporaries(options.meta_path)
            index = load_checkpoint(
                options.checkpoint_path,
                header,
                rows=table.rows,
                samples_per_row=self.samples_per_row,
                error_column=pipeline.error_column,
            )
            return await self._run_locked(table, header, index)

    async def _run_locked(self, table: InputTable, header: Mapping[str, Any], index: CheckpointIndex) -> int:
        options = self.options
        total = table.rows * self.samples_per_row
        pending = sum(1 for _ in index.pending(retry_failed=options.retry_failed))
        self.resumed = total - pending
        if self.resumed:
            log.info(
                "resuming from %s: %d of %d rows already done", options.checkpoint_path, self.resumed, total
            )
        self.server = {"endpoint": _without_credentials(options.client.base_url)}
        if pending:
            self.metrics.serve(options.metrics_port)
            try:
                await self._process(table, header, index, pending)
            except _Interrupted:
                return self._record_stop(
                    table, index, RunStatus.INTERRUPTED, self.signals.exit_code, self._stop_line(index)
                )
            except ServerUnavailable as err:
                self._record_stop(
                    table, index, RunStatus.SERVER_UNAVAILABLE, contract.EXIT_SERVER_UNAVAILABLE, str(err)
                )
                raise
            except StorageError as err:
                self._record_stop(table, index, RunStatus.STORAGE_ERROR, contract.EXIT_STORAGE, str(err))
                raise
            finally:
                self.metrics.stop()
        else:
            # Nothing to send: keep what the run that did the work learned about its server.
            self.server = _previous_server(options.meta_path) or {
                **self.server,
                "note": "not contacted: every row was already in the checkpoint",
            }
        return self._finish(table, index)

    def _check_columns(self, table: InputTable) -> None:
        pipeline = self.pipeline
        if pipeline.error_column not in pipeline.output_columns:
            raise TypeError(
                f"pipeline {pipeline.name}: output_columns must include {pipeline.error_column!r}"
            )
        added = [*self.sample_columns(table), *pipeline.output_columns]
        clash = [column for column in added if column in table.columns]
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

    async def _unless_stopped(self, work: Awaitable[T]) -> T:
        """`work`'s result, or _Interrupted as soon as a stop signal arrives (the work is cancelled)."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.signals.wait_for_stop())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if not task.done() or task.cancelled():
            raise _Interrupted
        return task.result()

    async def _process(
        self, table: InputTable, header: Mapping[str, Any], index: CheckpointIndex, pending: int
    ) -> None:
        """Probe the server, then process every pending item; fills self.server for the meta file."""
        pipeline, options = self.pipeline, self.options
        ok = index.count(ItemState.OK)
        kept_failures = 0 if options.retry_failed else index.count(ItemState.ROW_FAILED)
        total = table.rows * self.samples_per_row
        progress = Progress(pipeline.name, total, ok=ok, failed=kept_failures)
        self.metrics.rows_total.labels(pipeline.name).set(total)
        async with ModelClient(
            options.client, observer=self.metrics, outage_wait_s=options.wait_timeout_s
        ) as client:

            async def setup() -> tuple[Any, Any]:
                await client.wait_until_healthy(options.wait_timeout_s)
                facts = await asyncio.gather(client.version(), self._model_entry(client))
                await pipeline.prepare(client)
                return facts

            version, model = await self._unless_stopped(setup())
            writer = CheckpointWriter.open(options.checkpoint_path, header)
            log.info(
                "%s: %d rows to do, %d requests in flight, model %s at %s",
                pipeline.name,
                pending,
                options.client.batch_size,
                options.client.model_name,
                _without_credentials(options.client.base_url),
            )
            rows_started = time.monotonic()
            try:
                await self._process_items(client, writer, table, index, progress)
            finally:
                try:
                    await writer.aclose()
                finally:
                    progress.close()
                    self.rows_phase_s = time.monotonic() - rows_started
                    self.server |= {"version": version, "model": model, "outages_waited_out": client.outages}
        # What a pipeline learned from the server in prepare() (e.g. how the options tokenize, which
        # method was exact); it is not a parameter, so it never enters the checkpoint header.
        findings = pipeline.server_findings()
        if findings:
            self.server["pipeline_findings"] = findings

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

    def _work(self, table: InputTable, index: CheckpointIndex) -> Iterator[tuple[ItemKey, dict[str, str]]]:
        """Pending items with their input rows, streamed in input order."""
        redo = {ItemState.PENDING, ItemState.TRANSPORT_FAILED}
        if self.options.retry_failed:
            redo.add(ItemState.ROW_FAILED)
        for row_index, row in enumerate(table.records()):
            for sample_index in range(self.samples_per_row):
                key = (row_index, sample_index)
                if index.state(key) in redo:
                    yield key, row

    async def _process_items(
        self,
        client: ModelClient,
        writer: CheckpointWriter,
        table: InputTable,
        index: CheckpointIndex,
        progress: Progress,
    ) -> None:
        work = self._work(table, index)  # shared by the workers; next() never awaits, so no two take one

        async def item_worker() -> None:
            for key, row in work:
                if self.signals.stop_requested:
                    self.left_work = True
                    return
                columns, state = await self._one_item(client, key, row)
                offset = writer.append(key, columns, state)
                index.record(key, state, offset=offset)
                progress.row_finished(state is ItemState.OK)
                status = "ok" if state is ItemState.OK else "failed"
                self.metrics.rows.labels(self.pipeline.name, status).inc()

        workers = [asyncio.create_task(item_worker()) for _ in range(self.options.client.batch_size)]
        try:
            await self._supervise(workers)
        except RequestRejected as err:
            # Only run-fatal refusals escape _one_item: every later row would be refused the same way.
            raise InputError(
                f"the server refused the run ({err}); {index.count(ItemState.OK)} finished rows are kept in "
                f"{self.options.checkpoint_path.name}."
            ) from err

    async def _supervise(self, workers: list[asyncio.Task[None]]) -> None:
        """Wait for the workers; on a stop signal give them SHUTDOWN_GRACE_S, on an error stop them all."""
        stop = asyncio.ensure_future(self.signals.wait_for_stop())
        try:
            running = set(workers)
            while running:
                done, running = await asyncio.wait({*running, stop}, return_when=asyncio.FIRST_COMPLETED)
                running.discard(stop)
                for task in done - {stop}:
                    if task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                if stop.done() and running:
                    await self._drain(running)
                    raise _Interrupted
            if self.left_work:
                raise _Interrupted  # a signal came as the last rows finished: some were never started
        finally:
            stop.cancel()
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _drain(self, running: set[asyncio.Task[None]]) -> None:
        """Let the requests in flight finish for up to SHUTDOWN_GRACE_S (a second signal: not at all)."""
        log.warning(
            "%s received: taking no more rows; %d requests in flight get up to %g s to finish",
            self.signals.name,
            len(running),
            c.SHUTDOWN_GRACE_S,
        )
        abandon = asyncio.ensure_future(self.signals.wait_for_abandon())
        all_done = asyncio.gather(*running, return_exceptions=True)
        waiters: set[asyncio.Future[Any]] = {all_done, abandon}
        try:
            await asyncio.wait(waiters, timeout=c.SHUTDOWN_GRACE_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            abandon.cancel()
        unfinished = [task for task in running if not task.done()]
        if unfinished:
            log.warning("abandoning %d requests in flight; the next run sends them again", len(unfinished))
        for task in running:
            if task.done() and not task.cancelled() and isinstance(task.exception(), StorageError):
                raise task.exception()  # type: ignore[misc]

    async def _one_item(
        self, client: ModelClient, key: ItemKey, row: Mapping[str, str]
    ) -> tuple[dict[str, Any], ItemState]:
        """The item's columns (with the error column) and its state for the checkpoint."""
        pipeline = self.pipeline
        tally = tally_requests()  # this task's requests, and those of tasks the pipeline starts
        try:
            added = await pipeline.process(key[0], row, client, self.sample(key))
        except RowFailure as err:
            columns, failed = {**err.columns, pipeline.error_column: _one_line(err)}, True
        except RequestRejected as err:
            if err.fatal:
                raise
            columns, failed = {pipeline.error_column: _one_line(err)}, True
        except ServerUnavailable:
            raise
        except WorkerError as err:
            columns, failed = {pipeline.error_column: _one_line(err)}, True
        else:
            unknown = set(added) - set(pipeline.output_columns)
            if unknown:
                raise TypeError(f"pipeline {pipeline.name} returned undeclared column(s) {sorted(unknown)}")
            columns, failed = {**added, pipeline.error_column: ""}, False
        if client.unavailable is not None:
            raise client.unavailable  # the outage outlasted --wait-timeout, whatever the pipeline made of it
        if not failed:
            return columns, ItemState.OK
        # A request that gave up after every retry means the server, not the row, was the problem.
        return columns, ItemState.TRANSPORT_FAILED if tally.gave_up else ItemState.ROW_FAILED

    # ---- the end of a run -------------------------------------------------------------------------------

    def _output_columns(self, table: InputTable) -> tuple[list[str], list[str]]:
        """(sample columns, pipeline columns) in output order: analysis columns first, JSON evidence last."""
        provenance = set(self.pipeline.provenance_columns)
        added = list(self.pipeline.output_columns)
        ordered = [column for column in added if column not in provenance] + [
            column for column in added if column in provenance
        ]
        return list(self.sample_columns(table)), ordered

    def _finish(self, table: InputTable, index: CheckpointIndex) -> int:
        """Write the output (its existence means complete) from the checkpoint, then the meta file."""
        pipeline, options = self.pipeline, self.options
        failed = index.count(ItemState.ROW_FAILED) + index.count(ItemState.TRANSPORT_FAILED)
        exit_code = contract.EXIT_ROWS_FAILED if failed else contract.EXIT_OK
        # A meta file beside the new output must describe it: the old one goes first.
        with contextlib.suppress(FileNotFoundError):
            options.meta_path.unlink()
        self._write_output(table, index)
        self._write_meta(table, index, status=RunStatus.COMPLETE, exit_code=exit_code)
        total = index.rows * index.samples_per_row
        log.info(
            "%s: wrote %s (%d rows: %d ok, %d failed)",
            pipeline.name,
            options.output,
            total,
            total - failed,
            failed,
        )
        return exit_code

    def _write_output(self, table: InputTable, index: CheckpointIndex) -> None:
        """One streaming pass over the input; each item's columns are read back from its checkpoint line."""
        sample_columns, added = self._output_columns(table)
        reader = CheckpointReader(self.options.checkpoint_path)
        try:
            self.options.output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise storage_error(self.options.output, err) from err
        try:
            with atomic_writer(self.options.output) as handle:
                # RFC 4180 line ends: the csv module quotes a field only for the delimiter, the quote and the
                # characters of the line terminator. With "\n" a lone "\r" in a model's answer (the tiny
                # test model writes them) went out unquoted and readers split the row in two; with "\r\n"
                # both characters force quoting.
                out = csv.writer(handle, lineterminator="\r\n")
                out.writerow([*table.columns, *sample_columns, *added])
                for row_index, row in enumerate(table.records()):
                    values = [row[column] for column in table.columns]
                    for sample_index in range(self.samples_per_row):
                        key = (row_index, sample_index)
                        columns = reader.columns(index.offset(key))
                        identity = [sample_index, self.sample(key).seed] if sample_columns else []
                        out.writerow([*values, *identity, *(_cell(columns.get(column)) for column in added)])
        finally:
            reader.close()

    def _record_stop(
        self, table: InputTable, index: CheckpointIndex, status: RunStatus, exit_code: int, message: str
    ) -> int:
        """A run that ends without an output: the meta file says why and how far it got (best effort).

        Only when the run left a checkpoint: a run that stopped before its first row has nothing to describe.
        """
        if self.options.checkpoint_path.exists():
            with contextlib.suppress(StorageError):
                self._write_meta(table, index, status=status, exit_code=exit_code, message=message)
        if status is RunStatus.INTERRUPTED:
            print(f"worker {self.pipeline.name}: {message}", file=sys.stderr, flush=True)
        return exit_code

    def _stop_line(self, index: CheckpointIndex) -> str:
        total = index.rows * index.samples_per_row
        done = total - index.count(ItemState.PENDING)
        return (
            f"stopped by {self.signals.name}: {done} of {total} rows are in "
            f"{self.options.checkpoint_path.name}; rerun the same command to resume."
        )

    def _write_meta(
        self,
        table: InputTable,
        index: CheckpointIndex,
        *,
        status: RunStatus,
        exit_code: int,
        message: str = "",
    ) -> None:
        meta = self._meta(table, index, status=status, exit_code=exit_code, message=message)
        write_atomically(self.options.meta_path, meta.to_json())

    def _meta(
        self, table: InputTable, index: CheckpointIndex, *, status: RunStatus, exit_code: int, message: str
    ) -> RunMeta:
        options, client = self.options, self.options.client
        finished_at = datetime.now(UTC)
        row_failed, transport_failed = (
            index.count(ItemState.ROW_FAILED),
            index.count(ItemState.TRANSPORT_FAILED),
        )
        meta = RunMeta(
            pipeline=self.pipeline.name,
            worker_version=__version__,
            command_line=list(options.command_line),
            input=MetaInput(
                path=str(options.input),
                sha256=table.sha256,
                rows_in_file=table.file_rows,
                rows_processed=table.rows,
                limit=options.limit,
                samples_per_row=self.samples_per_row,
            ),
            server=self.server,
            weights=weights_marker(),
            parameters=self.parameters,
            client=MetaClient(
                model_name=client.model_name,
                batch_size=client.batch_size,
                timeout_s=client.timeout_s,
                max_retries=client.max_retries,
            ),
            started_at=self.started_at.isoformat(),
            finished_at=finished_at.isoformat(),
            duration_s=round((finished_at - self.started_at).total_seconds(), 3),
            rows_phase_s=round(self.rows_phase_s, 3),
            rows=MetaRows(
                ok=index.count(ItemState.OK),
                failed=row_failed + transport_failed,
                failed_row_specific=row_failed,
                failed_transport=transport_failed,
                not_done=index.count(ItemState.PENDING),
                from_checkpoint=self.resumed,
            ),
            plan_digest=options.plan_digest,
            supersedes=self.supersedes,
            status=status,
            exit_code=exit_code,
        )
        # Keys only a stopped run has: a key never set is not written (RunMeta.to_json).
        stopped: dict[str, str] = {}
        if message:
            stopped["message"] = " ".join(message.split())
        if status is RunStatus.INTERRUPTED:
            stopped["interrupted_by"] = self.signals.name
        return meta.model_copy(update=stopped)


def weights_marker() -> dict[str, Any] | None:
    """The checkpoint the server loaded (repo, requested revision, resolved commit), when the pod can
    read the download's marker; None otherwise (a persistent server's pod is not the worker's)."""
    path = os.environ.get(contract.WEIGHTS_MARKER_ENV)
    if not path:
        return None
    try:
        recorded = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict):
        return None
    return {key: recorded.get(key) for key in contract.WEIGHTS_MARKER_FIELDS}


def _previous_server(meta_path: Path) -> dict[str, Any] | None:
    meta = RunMeta.read(meta_path)
    return meta.server if meta is not None else None


def _cell(value: Any) -> Any:
    """A checkpoint value as a CSV cell: missing, null and NaN become empty, structures become JSON."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
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
