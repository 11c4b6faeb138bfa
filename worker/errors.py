"""The worker's typed errors. Every failure the worker expects is one of these; anything else is a bug.

    WorkerError                      base; never raised itself
    ├── InputError                   the user's input or arguments are wrong          -> exit 2
    │   │ (missing/unreadable/empty file, undecodable bytes, missing columns, unknown study,
    │   │  a checkpoint or output from a different run, bad flag values)
    │   └── OutputLocked             another live worker holds the output's lock      -> exit 2
    ├── StorageError                 the output's filesystem refused a write (full,   -> exit 4
    │                                over quota, read-only); carries `path`
    ├── ServerUnavailable            no healthy server after --wait-timeout, at the   -> exit 5
    │                                start or during an outage mid-run
    ├── RequestRejected              400/404/413/422 (any non-retryable 4xx): the request is wrong;
    │                                not retried; carries `status` and the server's `message`.
    │                                404 unknown model and 401/403 abort the run (exit 2); the
    │                                others are recorded on the row.
    ├── RetryableError               worth another attempt: connection error, attempt deadline,
    │                                408/409/429 (with `retry_after`), 5xx
    ├── ResponseError                a 2xx whose body is not what the API or the request promises
    │                                (truncated or non-JSON, no `choices`, no logprobs/prompt_logprobs
    │                                asked for, no token ids, a message with neither content nor
    │                                reasoning); retried like RetryableError because a cut connection,
    │                                a proxy page or a server mid-restart is its usual cause
    ├── UnusableReply                a complete reply that says something the row cannot use (an empty
    │                                final answer after the reasoning hit max_tokens, reasoning that
    │                                never closed): not retried, recorded on the row
    └── RowFailure                   one row failed permanently; carries `row_index` and `cause`
                                     and is recorded in the row's `error` column -> exit 3

Which of ResponseError and UnusableReply a reply is follows one rule: would the same request plausibly
succeed if it were sent again? A field the request asked for and the body lacks says the server or the
path to it misbehaved this time (yes: ResponseError, retried, and after the last retry a transport failure
the next run sends again). A complete reply whose content does not serve the row says what the model does
with this prompt, and the same prompt, seed and budget give the same answer (no: UnusableReply, a
row-specific failure kept until --retry-failed). Every request states what its reply must contain as an
`expect` callable the client runs inside its retry loop (worker.server.client), so this is decided in one
place.

Pipelines raise RowFailure (or let RequestRejected through); the runner decides what a failure means for
the exit code. Errors carry one sentence a researcher can act on, because `str(error)` is what the CLI
prints and what the `error` column holds.

A pydantic ValidationError (a flag, a study file, the stack's configuration) reaches a user through
`validation_problem` alone, the one place that reads pydantic's error records (the stack uses it too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "InputError",
    "OutputLocked",
    "RequestRejected",
    "ResponseError",
    "RetryableError",
    "RowFailure",
    "ServerUnavailable",
    "StorageError",
    "UnusableReply",
    "ValidationProblem",
    "WorkerError",
    "validation_problem",
]

# What pydantic puts before the message of a ValueError raised in a validator; the sentence after it is
# ours, written for the user.
PYDANTIC_VALUE_ERROR_PREFIX = "Value error, "


class WorkerError(Exception):
    """Base of every error the worker raises on purpose.

    `attempts` is how many HTTP attempts were made before this error was final (set by the client), so a
    failed row still reports its attempt count.
    """

    attempts: int = 0


class InputError(WorkerError):
    """The input file, the study, the arguments or an existing checkpoint/output are not usable."""


class OutputLocked(InputError):  # noqa: N818 - reads as the situation it reports
    """Another worker (named in the message) is writing the same output."""


class StorageError(WorkerError):
    """The filesystem refused writing `path` (no space, quota, read-only); the message says the free space."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class ServerUnavailable(WorkerError):  # noqa: N818 - domain names every pipeline uses
    """The model server did not become healthy within --wait-timeout."""


class RequestRejected(WorkerError):  # noqa: N818 - domain names every pipeline uses
    """The server refused the request as invalid (400/404/413/422). Sending it again cannot help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message

    @property
    def unknown_model(self) -> bool:
        """True when the server says the model does not exist (vLLM: "The model `x` does not exist.")."""
        return self.status == 404 and "model" in self.message.lower()

    @property
    def fatal(self) -> bool:
        """True when every later row would be refused the same way (unknown model, bad credentials)."""
        return self.unknown_model or self.status in {401, 403}


class RetryableError(WorkerError):
    """A transient failure; `retry_after` is the server's Retry-After in seconds when it sent one."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ResponseError(RetryableError):
    """A successful status with a body that is not what the API promises."""


class UnusableReply(WorkerError):  # noqa: N818 - reads as the reply it describes
    """A complete reply whose content cannot serve the row; the same request would get the same reply."""


class RowFailure(WorkerError):  # noqa: N818 - domain names every pipeline uses
    """Row `row_index` failed permanently; `cause` is the last error. Its message goes into `error`.

    `columns` are output columns worth keeping on a failed row (e.g. `attempts`, or a raw response that did
    not parse), so a failure is still evidence.
    """

    def __init__(
        self, row_index: int, cause: BaseException | str, *, columns: Mapping[str, object] | None = None
    ) -> None:
        super().__init__(str(cause))
        self.row_index = row_index
        self.cause = cause
        self.columns = dict(columns or {})


@dataclass(frozen=True)
class ValidationProblem:
    """The first problem of a pydantic ValidationError, in the words a user should read."""

    location: tuple[str | int, ...]  # the key path of the bad value; () for a rule over the whole object
    message: str  # the validator's own sentence, or pydantic's ("Input should be ...")
    value: Any  # the rejected input
    kind: str  # pydantic's error type: "missing", "value_error", "greater_than_equal", ...

    @property
    def key(self) -> str:
        """The location as a dotted key path ("" for the object itself)."""
        return ".".join(str(part) for part in self.location)

    @property
    def field(self) -> str:
        """The name of the field the bad value was given for ("" for the object itself)."""
        return str(self.location[-1]) if self.location else ""

    @property
    def sentence(self) -> str:
        """The message ending in exactly one full stop: pydantic's own messages have none, our validators'
        sentences already end in one."""
        return self.message if self.message.endswith((".", "?", "!")) else f"{self.message}."

    def for_flag(self, flag: str) -> str:
        """The problem as one sentence about a command-line flag: `--flag 'value': message.`"""
        return f"{flag} {self.value!r}: {self.sentence}"


def validation_problem(err: ValidationError) -> ValidationProblem:
    """The first problem of `err`, with pydantic's "Value error, " prefix removed from the message."""
    first = err.errors(include_url=False)[0]
    message = str(first["msg"]).removeprefix(PYDANTIC_VALUE_ERROR_PREFIX)
    return ValidationProblem(
        location=tuple(first["loc"]), message=message, value=first.get("input"), kind=first["type"]
    )
