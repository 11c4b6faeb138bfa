"""What the stack and the worker must agree on, written once; `grace_infra` and `worker` both import it.

The stack builds the Jobs that run the worker: it sets the worker's environment, mounts files where the
worker looks for them, starts its subcommands, keys the Jobs' podFailurePolicy on its exit codes, opens
its metrics port, and reads the files it leaves beside each output (`grace results`). Each of those
names and numbers is here, with the reason for its value. The job image ships `worker/` alone, so the
contract lives in the worker package and the stack imports it, never the other way round.

The meta file `<output>.meta.json` is a typed model here too (`RunMeta`): the runner writes it; the
runner, `check-outputs`, extraction's wait for its input and `grace results` read it. `same_run` is the
one decision whether a meta file or a checkpoint header was made by a given run.

Layer 0 of the worker: imports nothing of ours.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

__all__ = [
    "AFTER_JOBS_ENV",
    "CHECKPOINT_SUFFIX",
    "CHECK_OUTPUTS_COMMAND",
    "CONTAINER_STUDIES_DIR",
    "DEEPSEEK_API_KEY_ENV",
    "DEFAULT_DESIGN",
    "DESIGNS",
    "EXIT_INPUT",
    "EXIT_OK",
    "EXIT_ROWS_FAILED",
    "EXIT_SERVER_START_FAILED",
    "EXIT_SERVER_UNAVAILABLE",
    "EXIT_SIGNAL_BASE",
    "EXIT_STORAGE",
    "FINISHED_EXIT_CODES",
    "LOG_FILE_ENV",
    "LOG_LEVEL_ENV",
    "META_SUFFIX",
    "METRICS_PORT",
    "MISSING_INPUT_HELP_ENV",
    "RESUME_JOB_ENV",
    "RUN_COMMAND",
    "SERVER_START_ATTEMPTS_ENV",
    "SERVER_START_FAILED_ENV",
    "SERVER_START_STATE_ENV",
    "STUDIES_DIR_ENV",
    "STUDIES_MOUNT",
    "STUDIES_SUBDIR",
    "WAIT_FOR_INPUTS_COMMAND",
    "WEIGHTS_MARKER_ENV",
    "WEIGHTS_MARKER_FIELDS",
    "WEIGHTS_MARKER_FILE",
    "MetaClient",
    "MetaInput",
    "MetaRows",
    "RunMeta",
    "RunStatus",
    "same_run",
]

# ---- Environment variables the worker reads ------------------------------------------------------------

LOG_LEVEL_ENV = "LOG_LEVEL"  # DEBUG, INFO, WARNING or ERROR; the Jobs set grace:jobs.logLevel
LOG_FILE_ENV = "GRACE_LOG_FILE"  # also append the log here (the Jobs point it at the logs PVC)
# The weight download's marker (repo, revision, resolved commit): job-mode Jobs mount their sidecar's
# weights read-only and name the file here, and every meta file records it.
WEIGHTS_MARKER_ENV = "GRACE_WEIGHTS_MARKER"
# The Job's "how to provide it" for an input file on the input claim, appended to a "no such file"
# error (worker/run/input_table.py).
MISSING_INPUT_HELP_ENV = "GRACE_MISSING_INPUT_HELP"
# The DeepSeek API key: `extract` falls back to it for the external endpoint, and the stack fills it
# from its Secret by reference and names it in `--api-key-env`.
DEEPSEEK_API_KEY_ENV = "DEEPSEEK_API_KEY"
# Where `--study NAME` looks first (colon-separated; a run by hand), before CONTAINER_STUDIES_DIR.
STUDIES_DIR_ENV = "GRACE_STUDIES_DIR"
# Job mode: the file the vLLM sidecar's start wrapper writes when its start budget is spent
# (grace_infra/payloads/server_start.py, which keeps its own copies of these names; a test compares).
# A worker that finds it exits EXIT_SERVER_START_FAILED before anything else, printing its one line.
SERVER_START_FAILED_ENV = "GRACE_SERVER_START_FAILED"
# The wrapper's inputs: failed starts allowed, and its state file (an emptyDir outliving restarts).
SERVER_START_ATTEMPTS_ENV = "GRACE_SERVER_START_ATTEMPTS"
SERVER_START_STATE_ENV = "GRACE_SERVER_START_STATE"
# The extraction gate's resume step (grace_infra/payloads/resume_job.py): the suspended Job to resume,
# and the Jobs (comma-separated) that must finish first because they mount the same weights claim.
RESUME_JOB_ENV = "GRACE_RESUME_JOB"
AFTER_JOBS_ENV = "GRACE_AFTER_JOBS"

# ---- Paths inside the pod ------------------------------------------------------------------------------

# The studies ConfigMap (study files, schemas, small inputs, task lists) is mounted here read-only with
# the layout of the repository's jobs/ folder, so `--study NAME` finds NAME.yaml in its studies/ folder.
STUDIES_MOUNT = "/etc/grace"
STUDIES_SUBDIR = "studies"
CONTAINER_STUDIES_DIR = f"{STUDIES_MOUNT}/{STUDIES_SUBDIR}"
# Designs of the studies: each is a folder of study files under studies/ (jobs/studies/<design>/), one
# study file per study. `researchers` sends the requests the researchers' own scripts send; `chat` is
# Grace's chat-template design. A bare `--study NAME` means the default design's NAME.
DESIGNS = ("researchers", "chat")
DEFAULT_DESIGN = "researchers"
# The download's marker on the weights claim (grace_infra/payloads/download_weights.py writes it last,
# atomically; that program is shipped as text and imports nothing, so it keeps its own copy of the
# name, which a test compares with this one). The worker copies these fields into its meta file.
WEIGHTS_MARKER_FILE = ".grace-weights.json"
WEIGHTS_MARKER_FIELDS = ("repo", "revision", "commit")  # requested repo and revision, resolved commit

# ---- Files beside the output CSV (the worker writes them; `grace results` reads them) ------------------

CHECKPOINT_SUFFIX = ".partial.jsonl"  # one JSON line per finished row (worker/run/checkpoint.py)
META_SUFFIX = ".meta.json"  # what ran, on which input, how it ended: RunMeta below

# ---- What the Jobs run ---------------------------------------------------------------------------------

# The job image's entry point is `python -m worker`: a Job's args start at the subcommand.
RUN_COMMAND = "run"  # `run --tasks FILE`: a job-mode Job runs every task of one model's list
CHECK_OUTPUTS_COMMAND = "check-outputs"  # the job-mode init container: is every task already done?
# The extraction gate's init container: wait until every task's --input is complete for its
# --wait-for-digest (the same check extract makes), then exit 0 so the gate resumes the GPU Job.
WAIT_FOR_INPUTS_COMMAND = "wait-for-inputs"
# Prometheus metrics. Not vLLM's 8000: in job mode the sidecar shares the pod's network namespace.
METRICS_PORT = 9090

# ---- Exit codes ----------------------------------------------------------------------------------------
# In `python -m worker --help` and docs/never-losing-a-row.md; the Jobs' podFailurePolicy keys on them
# (grace_infra/manifests/job_lifecycle.py), and `grace results check` reads them from the meta files.

EXIT_OK = 0
EXIT_INPUT = 2  # bad input or arguments, unknown model, output locked by another worker: a rerun cannot help
EXIT_ROWS_FAILED = 3  # output complete, some rows carry an error
EXIT_STORAGE = 4  # the output's filesystem is full or read-only; the checkpoint keeps every finished row
EXIT_SERVER_UNAVAILABLE = 5  # no server within --wait-timeout (start or outage); a rerun resumes
# Job mode: the vLLM sidecar spent its start budget without ever answering /health (a bad flag, an OOM at
# load, a load slower than its budget); another pod would meet the same, so the Job fails at once.
EXIT_SERVER_START_FAILED = 6
EXIT_SIGNAL_BASE = 128  # killed-by-signal convention: SIGTERM 143, SIGINT 130
# The codes of a run that wrote its output: every row done, ok or carrying its error.
FINISHED_EXIT_CODES = frozenset({EXIT_OK, EXIT_ROWS_FAILED})


# ---- The meta file -------------------------------------------------------------------------------------


class RunStatus(StrEnum):
    """The meta file's `status`: how the run that wrote it ended. Readers keep any other text as is (a
    newer worker may add a status), so the model's field is a plain string."""

    COMPLETE = "complete"  # the output is in place; `exit_code` is 0 or 3
    INTERRUPTED = "interrupted"  # a stop signal; `interrupted_by` names it
    SERVER_UNAVAILABLE = "server_unavailable"  # no server within --wait-timeout
    STORAGE_ERROR = "storage_error"  # the output's filesystem is full or read-only


def _unreadable_as_none(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A value of the wrong type (a hand edit) reads as None, as a missing key does."""
    try:
        return handler(value)
    except ValidationError:
        return None


def _unreadable_as_empty(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A section that is not an object (missing, null, a hand edit) reads as a section with no keys."""
    try:
        return handler(value)
    except ValidationError:
        return handler({})


# JSON types only, never coerced: "3" is not an exit code, true is not a count. A value of another type
# is None, so a reader compares it as missing instead of crashing on it.
_Text = Annotated[StrictStr | None, WrapValidator(_unreadable_as_none)]
_Count = Annotated[StrictInt | None, WrapValidator(_unreadable_as_none)]
_Seconds = Annotated[StrictFloat | None, WrapValidator(_unreadable_as_none)]
_Object = Annotated[dict[str, Any] | None, WrapValidator(_unreadable_as_none)]


class _Section(BaseModel):
    # Unknown keys are kept (a newer worker's file, a note added by hand) and written back after the
    # known ones; `model_fields_set` says which keys the file had.
    model_config = ConfigDict(extra="allow", frozen=True)


class MetaInput(_Section):
    """The meta file's `input`: which file, which contents, how many rows."""

    path: _Text = Field(default=None, description="--input as given.")
    sha256: _Text = Field(default=None, description="SHA-256 of the input file's bytes.")
    rows_in_file: _Count = Field(default=None, description="Data rows of the input file.")
    rows_processed: _Count = Field(default=None, description="Rows this run covers (--limit may cut).")
    limit: _Count = Field(default=None, description="--limit, or null.")
    samples_per_row: _Count = Field(default=None, description="Answers per input row (1 unless sampling).")


class MetaClient(_Section):
    """The meta file's `client`: how the server was asked (no API key: it is never recorded)."""

    model_name: _Text = Field(default=None, description="--model-name sent in every request.")
    batch_size: _Count = Field(default=None, description="Requests in flight at once.")
    timeout_s: _Seconds = Field(default=None, description="Deadline per attempt, seconds.")
    max_retries: _Count = Field(default=None, description="Retries after the first attempt.")


class MetaRows(_Section):
    """The meta file's `rows`: work items (row x sample) by outcome. A missing count is 0."""

    ok: _Count = Field(default=0, description="Succeeded.")
    failed: _Count = Field(default=0, description="failed_row_specific + failed_transport.")
    failed_row_specific: _Count = Field(
        default=0, description="The row's own failure (a prompt over the context, a bad answer): kept as "
        "the row's result unless the next run has --retry-failed.",
    )
    failed_transport: _Count = Field(
        default=0, description="The server could not be reached or kept failing: the next run sends these."
    )
    not_done: _Count = Field(
        default=0, description="Never finished (the run stopped): the next run sends these."
    )
    from_checkpoint: _Count = Field(default=0, description="Finished by earlier runs of the same command.")


class RunMeta(_Section):
    """`<output>.meta.json`: what ran, on which input, with which parameters, and how it ended.

    Fields are in the order the runner writes them; a file is written with only the keys that were set
    (`message` and `interrupted_by` only on a run that stopped, `plan_digest_history` only once a later
    plan digest was recorded). Reading never fails on an object: a value of the wrong type is None and a
    section that is not an object is empty (see `_Text`), so a hand-edited or partial file reads as
    "not this run" or "not complete", never as a crash.
    """

    pipeline: _Text = Field(default=None, description="The subcommand: query, probs, extract.")
    worker_version: _Text = Field(default=None, description="worker.__version__ of the writer.")
    command_line: Annotated[list[StrictStr] | None, WrapValidator(_unreadable_as_none)] = Field(
        default=None, description="argv as typed."
    )
    input: Annotated[MetaInput, WrapValidator(_unreadable_as_empty)] = Field(default_factory=MetaInput)
    server: _Object = Field(
        default=None, description="The server as found: endpoint, version, models, the pipeline's findings."
    )
    weights: _Object = Field(
        default=None, description="The download's marker (WEIGHTS_MARKER_FIELDS), or null without one."
    )
    parameters: _Object = Field(
        default=None, description="Everything that changes the answers; the checkpoint header holds the same."
    )
    client: Annotated[MetaClient, WrapValidator(_unreadable_as_empty)] = Field(default_factory=MetaClient)
    started_at: _Text = Field(default=None, description="ISO 8601, UTC.")
    finished_at: _Text = Field(default=None, description="ISO 8601, UTC.")
    duration_s: _Seconds = Field(default=None, description="started_at to finished_at.")
    rows_phase_s: _Seconds = Field(default=None, description="First row sent to last row written.")
    rows: Annotated[MetaRows, WrapValidator(_unreadable_as_empty)] = Field(default_factory=MetaRows)
    plan_digest: _Text = Field(
        default=None, description="--plan-digest: the deployment's digest of this run's plan, or null."
    )
    supersedes: _Object = Field(
        default=None, description="The run this one moved aside (worker/run/supersede.py), or null."
    )
    status: _Text = Field(default=None, description="A RunStatus value (others are kept as written).")
    exit_code: _Count = Field(default=None, description="The process exit code (EXIT_*).")
    message: _Text = Field(default=None, description="Why a stopped run stopped, one line.")
    interrupted_by: _Text = Field(default=None, description="The signal's name, e.g. SIGTERM.")
    plan_digest_history: Annotated[list[dict[str, Any]] | None, WrapValidator(_unreadable_as_none)] = Field(
        default=None, description="Earlier plan digests of this finished run: previous, recorded_at."
    )

    @classmethod
    def from_json(cls, text: str | bytes) -> RunMeta:
        """The model of a meta file's text; ValueError when the text is not one JSON object."""
        document = json.loads(text)
        if not isinstance(document, dict):
            # ValueError, as json.loads raises for any other content that is not a meta file.
            raise ValueError(f"expected a JSON object, found {type(document).__name__}")  # noqa: TRY004
        return cls.model_validate(document)

    @classmethod
    def read(cls, path: Path) -> RunMeta | None:
        """The meta file at `path`; None when it is missing, unreadable or not a JSON object."""
        try:
            return cls.from_json(path.read_bytes())
        except (OSError, ValueError):
            return None

    def to_json(self) -> str:
        """The file's text: the keys that were set, in field order (then unknown keys as read), two-space
        indent, non-ASCII as is, a final newline."""
        return json.dumps(self.model_dump(exclude_unset=True), indent=2, ensure_ascii=False) + "\n"

    @property
    def finished(self) -> bool:
        """The run wrote its output: status complete with exit code 0 or 3."""
        return self.status == RunStatus.COMPLETE and self.exit_code in FINISHED_EXIT_CODES


def _as_json(value: Any) -> Any:
    # Files hold JSON: compare through JSON, so a tuple equals a list (and, as in Python, 1 equals 1.0).
    return json.loads(json.dumps(value, sort_keys=True))


def same_run(recorded: RunMeta | Mapping[str, Any] | None, header: Mapping[str, Any]) -> bool:
    """Whether `recorded` was made by the run `header` describes (a checkpoint header:
    worker/run/checkpoint.make_header's `checkpoint` format, `pipeline`, `input_sha256`, `parameters`).

    `recorded` is one of two things, compared differently on purpose:
      a checkpoint header (a mapping) must equal `header` whole, its format number included: a resume
        appends to that file, so a checkpoint of another format is another run's;
      a meta file (RunMeta) records no checkpoint format (its output is a CSV whatever the checkpoint's
        format was), so only the pipeline, the input's SHA-256 and the parameters are compared.
    None (a missing or unreadable file) is never the same run.
    """
    if recorded is None:
        return False
    if isinstance(recorded, RunMeta):
        recorded = {
            "pipeline": recorded.pipeline,
            "input_sha256": recorded.input.sha256,
            "parameters": recorded.parameters,
        }
        header = {key: header.get(key) for key in recorded}
    return bool(_as_json(dict(recorded)) == _as_json(dict(header)))
