"""`python -m worker extract`: Experiment 1 free text -> schema-valid columns, or an explicit failure per row.

For each Experiment 1 row the extractor model is shown the study's questions and the recorded reply and
asked for the study's JSON object. The reply is judged (`worker.studies.schema_check.judge_reply`); a
blank, cut-off, unreadable or schema-violating reply is re-asked up to `--max-retries` times, each time
telling the model exactly what was wrong. Every row ends with either the schema's fields (null where the
reply states nothing) or `extraction_errors` holding the last error; `extraction_attempts` counts the
extraction requests sent for the row and `extraction_warnings` lists broken cross-field rules. Every
Experiment 1 column is kept, in order; nothing is dropped or invented.

Which structured-output form the server enforces is detected once, before the rows
(`worker.pipelines.extraction.backend`). Checkpointing, transport retries, progress, metrics, the meta
file and exit codes are the shared runner's (`worker.run.runner`).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema.protocols import Validator

from worker.contract import DEEPSEEK_API_KEY_ENV
from worker.errors import InputError, RequestRejected, RetryableError, RowFailure
from worker.pipelines.extraction.backend import BackendChoice, ChatClient, detect_backend
from worker.run.input_wait import wait_for_input
from worker.run.pipeline import Pipeline
from worker.run.sampling import Sample
from worker.server.chat_completions import ChatReply, answered_chat
from worker.server.chat_messages import MessageBuilder, probe_system_role
from worker.server.client import ModelClient
from worker.studies.definition import load_study, resolve_study_path
from worker.studies.extraction_section import (
    ATTEMPTS_COLUMN,
    ERRORS_COLUMN,
    METHOD_COLUMN,
    SELF_CODED_COLUMN,
    STATUS_COLUMNS,
    WARNING_SEPARATOR,
    WARNINGS_COLUMN,
    ExtractionSpec,
    load_extraction,
)
from worker.studies.rule_coder import PARSER_METHOD
from worker.studies.schema_check import (
    AttemptFailure,
    Backend,
    FailureKind,
    Parsed,
    correction_messages,
    cross_field_warnings,
    format_instructions,
    judge_reply,
    make_validator,
    response_format_for,
    schema_name,
)

__all__ = [
    "ExtractPipeline",
    "ExtractionPlan",
    "RowOutcome",
    "add_arguments",
    "build",
    "resolve_arguments",
]

log = logging.getLogger(__name__)

# DeepSeek's hosted API: the model name the Job uses (its key's variable: worker/contract.py).
DEEPSEEK_MODEL = "deepseek-chat"
# Experiment 1's finish_reason column (worker.pipelines.query), read when present.
EXP1_FINISH_COLUMN = "finish_reason"
# The Experiment 1 column naming the model that wrote the replies (worker query writes it).
STUDIED_MODEL_COLUMN = "model_name"
EXP1_TRUNCATED_WARNING = (
    "the Experiment 1 reply was cut off at its token limit (finish_reason=length): "
    "values it did not reach are null"
)
# "auto" on the command line: probe the server for the strongest form it enforces.
AUTO_BACKEND = "auto"


@dataclass(frozen=True)
class RowOutcome:
    """How one row ended."""

    fields: dict[str, Any]  # every schema field, None where the reply states nothing or on failure
    method: str = ""  # who coded the row: "parser" or the extractor model's name; "" when nobody could
    error: str = ""  # empty on success, else the last failure as one sentence
    attempts: int = 0  # extraction requests sent for the row (each with its own transport retries)
    warnings: tuple[str, ...] = field(default=())
    self_coded: bool = False  # the coder is the model whose replies these are

    @property
    def ok(self) -> bool:
        return not self.error

    def columns(self) -> dict[str, Any]:
        """The columns added to the Experiment 1 row, in output order."""
        return {
            **self.fields,
            METHOD_COLUMN: self.method,
            SELF_CODED_COLUMN: self.self_coded,
            ERRORS_COLUMN: self.error,
            ATTEMPTS_COLUMN: self.attempts,
            WARNINGS_COLUMN: WARNING_SEPARATOR.join(self.warnings),
        }


@dataclass(frozen=True)
class ExtractionPlan:
    """The per-run decisions every row shares: the backend, the request form, and how replies are judged."""

    spec: ExtractionSpec
    choice: BackendChoice
    validator: Validator | None  # None with --no-validate: replies are parsed, not checked
    max_reasks: int
    model_name: str = ""  # the extractor model, recorded in extraction_method on the rows it codes
    # What the server's chat template accepts (worker.server.chat_messages).
    chat: MessageBuilder = field(default_factory=MessageBuilder)

    @classmethod
    def build(
        cls,
        spec: ExtractionSpec,
        choice: BackendChoice,
        *,
        validate: bool,
        max_reasks: int,
        model_name: str = "",
        chat: MessageBuilder | None = None,
    ) -> ExtractionPlan:
        return cls(
            spec=spec,
            choice=choice,
            validator=make_validator(spec.schema) if validate else None,
            max_reasks=max_reasks,
            model_name=model_name,
            chat=chat or MessageBuilder(),
        )

    def request_params(self) -> dict[str, Any]:
        params = self.spec.section.generation.request_params()
        response_format = response_format_for(
            self.choice.backend, self.spec.schema, schema_name(self.spec.schema, self.spec.study.name)
        )
        if response_format is not None:
            params["response_format"] = response_format
        return params

    def messages(self, row: Mapping[str, str]) -> list[dict[str, str]]:
        messages = self.spec.render(dict(row))
        instructions = format_instructions(self.choice.backend, self.spec.schema, self.spec.example)
        if instructions:
            if messages[0]["role"] == "system":
                messages[0] = {"role": "system", "content": f"{messages[0]['content']}\n\n{instructions}"}
            else:
                messages.insert(0, {"role": "system", "content": instructions})
        return messages

    def empty_fields(self) -> dict[str, Any]:
        return dict.fromkeys(self.spec.fields)

    async def extract(
        self, client: ChatClient, row: Mapping[str, str], seed: int | None = None
    ) -> RowOutcome:
        """The parser first; otherwise ask the extractor model, judge, re-ask. Raises only for a run-fatal
        refusal (unknown model, rejected key)."""
        columns = self.spec.section.reply_columns
        if not any(str(row.get(column) or "").strip() for column in columns):
            return RowOutcome(self.empty_fields(), error=_no_response_error(row, columns))
        parsed = self.spec.parser.code(row)
        if parsed is not None:
            warnings = cross_field_warnings(self.spec.section.checks, parsed)
            return RowOutcome(parsed, method=PARSER_METHOD, warnings=tuple(warnings))
        return await self._ask_model(client, row, seed)

    async def _ask_model(self, client: ChatClient, row: Mapping[str, str], seed: int | None) -> RowOutcome:
        base = self.messages(row)
        params = self.request_params()
        if seed is not None:
            params["seed"] = seed  # the sample's own seed (worker.run.sampling), recorded in its seed column
        messages = base
        attempts = 0
        previous: AttemptFailure | None = None
        while True:
            attempts += 1
            try:
                reply = await client.chat(self.chat.fit(messages), expect=answered_chat, **params)
            except RequestRejected as err:
                if err.fatal:  # unknown model, bad key: every row would fail alike; the runner stops
                    raise
                return self._request_failed(err, attempts, previous)
            except RetryableError as err:
                return self._request_failed(err, attempts, previous)
            answer: ChatReply = reply.expected
            content = answer.content
            verdict = judge_reply(content, answer.finish_reason, self.spec.schema, self.validator)
            if isinstance(verdict, AttemptFailure) and verdict.kind is FailureKind.BLANK and answer.reasoning:
                # A reasoning model that used its whole budget thinking: say so, the fix is --max-tokens.
                verdict = AttemptFailure(
                    verdict.kind,
                    f"{verdict.message}; the model spent its tokens on reasoning (raise --max-tokens)",
                )
            if isinstance(verdict, Parsed):
                warnings = [
                    *_exp1_warnings(row),
                    *cross_field_warnings(self.spec.section.checks, verdict.fields),
                ]
                return RowOutcome(
                    verdict.fields,
                    method=self.model_name,
                    attempts=attempts,
                    warnings=tuple(warnings),
                    self_coded=row.get(STUDIED_MODEL_COLUMN) == self.model_name,
                )
            if attempts > self.max_reasks:
                return RowOutcome(
                    self.empty_fields(), error=_final_error(verdict, attempts), attempts=attempts
                )
            log.debug("re-asking (attempt %d): %s", attempts + 1, verdict.message)
            messages = base + correction_messages(verdict, content)
            previous = verdict

    def _request_failed(self, err: Exception, attempts: int, previous: AttemptFailure | None) -> RowOutcome:
        # A re-ask can fail where the first request did not (it is longer: the echoed reply may push it
        # past the context length); the reply that caused the re-ask is part of the story.
        error = f"request: {err}"
        if previous is not None:
            error += f" (while re-asking after {previous.kind}: {previous.message})"
        return RowOutcome(self.empty_fields(), error=error, attempts=attempts)


def _exp1_warnings(row: Mapping[str, str]) -> list[str]:
    # A reply Experiment 1 cut off may simply not have reached a question: its nulls mean "not reached",
    # not "not stated", and the analysis should be able to tell.
    if row.get(EXP1_FINISH_COLUMN) == "length":
        return [EXP1_TRUNCATED_WARNING]
    return []


def _final_error(failure: AttemptFailure, attempts: int) -> str:
    return f"{failure.kind}: {failure.message} (after {attempts} attempt{'s' if attempts != 1 else ''})"


def _no_response_error(row: Mapping[str, str], reply_columns: tuple[str, ...]) -> str:
    # Experiment 1's own failure explains why there is nothing to extract; keep its words.
    exp1_error = str(row.get("error", "") or "").strip()
    empty = f"{' and '.join(reply_columns)} {'is' if len(reply_columns) == 1 else 'are'} empty"
    reason = f"Experiment 1 failed on this row: {exp1_error}" if exp1_error else empty
    return f"no_response: nothing to extract ({reason})"


class ExtractPipeline(Pipeline):
    """The `extract` pipeline for the shared runner: one ExtractionPlan, fixed in `prepare()`.

    One coding per Experiment 1 row (the default `samples_per_row`): each of that file's rows is already
    one sample of the studied model, and a coder that answered differently on a second try would be
    measuring itself.
    """

    name = "extract"
    error_column = ERRORS_COLUMN

    def __init__(
        self,
        spec: ExtractionSpec,
        *,
        model_name: str,
        requested_backend: Backend | None,
        validate: bool,
        max_reasks: int,
        base_seed: int = 0,
    ) -> None:
        self.spec = spec
        self._base_seed = base_seed
        self.model_name = model_name
        self.requested_backend = requested_backend
        self.validate = validate
        self.max_reasks = max_reasks
        # The reply columns first, so a missing one is named first; then the prompt's other columns.
        replies = spec.section.reply_columns
        others = sorted(spec.row_columns - set(replies))
        self._required_columns = (*replies, *others)
        self._output_columns = (*spec.fields, *STATUS_COLUMNS)
        self._plan: ExtractionPlan | None = None

    @property
    def required_columns(self) -> tuple[str, ...]:
        return self._required_columns

    @property
    def output_columns(self) -> tuple[str, ...]:
        return self._output_columns

    @property
    def base_seed(self) -> int:
        return self._base_seed

    def parameters(self) -> dict[str, Any]:
        """What changes the extracted values (the checkpoint refuses a rerun where any of it differs).

        The *requested* backend is a parameter; what the probe found is not (a server restarted with other
        flags may answer differently, and every row is validated against the same schema either way): it
        is a server finding, recorded in the meta file. No secret is ever part of either.
        """
        section = self.spec.section
        return {
            "study": self.spec.study.name,
            "design": self.spec.study.design,
            "model_name": self.model_name,
            "reply_columns": list(section.reply_columns),
            "parser": [rule.model_dump() for rule in section.parser],
            "schema_file": str(self.spec.schema_file),
            "schema_sha256": self.spec.schema_sha256,
            "prompt": section.prompt.model_dump(),
            "text_replacements": dict(self.spec.study.text_replacements),
            "example": self.spec.example,
            "generation": section.generation.request_params(),
            "checks": [check.model_dump() for check in section.checks],
            "backend_requested": str(self.requested_backend or AUTO_BACKEND),
            "validate": self.validate,
            "max_reasks": self.max_reasks,
        }

    def server_findings(self) -> dict[str, Any]:
        """The structured-output probe's outcome and what the chat template accepts, for the meta file."""
        if self._plan is None:
            return {}
        return {"structured_output": self._plan.choice.as_meta(), **self._plan.chat.findings()}

    async def prepare(self, client: ModelClient) -> None:
        chat = await probe_system_role(client)
        choice = await detect_backend(client, self.requested_backend)
        log.info("extract: using %s (%s)", choice.backend, "; ".join(choice.evidence))
        if not self.validate:
            log.warning("extract: --no-validate: replies are parsed but not checked against the schema")
        if choice.backend is not Backend.JSON_SCHEMA and self.spec.example is None:
            log.warning(
                "extract: no example object for the %s prompt (--schema replaced the study's)", choice.backend
            )
        self._plan = ExtractionPlan.build(
            self.spec,
            choice,
            validate=self.validate,
            max_reasks=self.max_reasks,
            model_name=self.model_name,
            chat=chat,
        )

    async def process(
        self,
        row_index: int,
        row: Mapping[str, str],
        client: ModelClient,
        sample: Sample,
    ) -> dict[str, Any]:
        if self._plan is None:
            raise RuntimeError("ExtractPipeline.process() before prepare()")
        outcome = await self._plan.extract(client, row, sample.seed)
        columns = outcome.columns()
        del columns[ERRORS_COLUMN]  # the runner owns the error column
        if not outcome.ok:
            raise RowFailure(row_index, outcome.error, columns=columns)
        return columns


# ---------------------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("extract options")
    group.add_argument(
        "--deepseek-endpoint",
        help="Extract with the DeepSeek API at this URL instead of --model-endpoint (the model defaults to "
        f"{DEEPSEEK_MODEL}, the key to ${DEEPSEEK_API_KEY_ENV}).",
    )
    group.add_argument(
        "--schema",
        type=Path,
        help="JSON Schema file replacing the study's (default: the study's extraction.schema).",
    )
    group.add_argument(
        "--validate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Validate every reply against the schema and re-ask on failure (default: on).",
    )
    group.add_argument(
        "--backend",
        choices=[AUTO_BACKEND, *(str(backend) for backend in Backend)],
        default=AUTO_BACKEND,
        help="Structured-output form: auto probes the server for the strongest one it enforces (default).",
    )
    group.add_argument(
        "--wait-for-input",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="Wait up to SECONDS for --input to appear (Experiment 1 writes it atomically when complete).",
    )
    group.add_argument(
        "--wait-for-digest",
        metavar="DIGEST",
        help="With --wait-for-input: also wait until --input's meta file records this plan digest "
        "(the Experiment 1 run the deployment planned; worker/run/input_wait.py).",
    )
    group.add_argument(
        "--max-tokens", type=int, help="Reply token budget (default: the study's extraction max_tokens)."
    )


def resolve_arguments(args: argparse.Namespace) -> None:
    """Fill the common flags from extract's own, before the CLI validates them (worker.cli hook).

    --deepseek-endpoint wins over --model-endpoint (the Job passes both when DeepSeek is configured). The
    key variable defaults to $DEEPSEEK_API_KEY when that is set, or always with --deepseek-endpoint (a
    hosted API needs a key); vLLM without --api-key accepts the placeholder.
    """
    if args.deepseek_endpoint:
        if args.model_endpoint and args.model_endpoint != args.deepseek_endpoint:
            log.info("extract: --deepseek-endpoint %s replaces --model-endpoint", args.deepseek_endpoint)
        args.model_endpoint = args.deepseek_endpoint
        args.model_name = args.model_name or DEEPSEEK_MODEL
        args.api_key_env = args.api_key_env or DEEPSEEK_API_KEY_ENV
    if not args.model_endpoint:
        raise InputError(
            "extract needs --model-endpoint (a vLLM server) or --deepseek-endpoint (DeepSeek API)."
        )
    if not args.model_name:
        raise InputError("extract needs --model-name (the served model that extracts).")
    if args.api_key_env is None and os.environ.get(DEEPSEEK_API_KEY_ENV):
        args.api_key_env = DEEPSEEK_API_KEY_ENV


def build(args: argparse.Namespace) -> ExtractPipeline:
    """The pipeline from parsed flags; InputError for a bad study, schema or flag, or a missing input."""
    if args.max_retries < 0:
        raise InputError(f"--max-retries {args.max_retries}: must be 0 or more.")
    if args.wait_for_input < 0:
        raise InputError(f"--wait-for-input {args.wait_for_input:g}: must be 0 or more seconds.")
    study_file = resolve_study_path(args.study)
    study = load_study(str(study_file))
    spec = load_extraction(study, study_file, args.schema)
    if args.samples is not None and args.samples != 1:
        raise InputError(
            f"--samples {args.samples}: extraction codes each Experiment 1 row once (each of its rows is "
            "already one sample); use 1."
        )
    updates: dict[str, Any] = {}
    if args.max_tokens is not None:
        if args.max_tokens <= 0:
            raise InputError(f"--max-tokens {args.max_tokens}: must be a positive number of tokens.")
        updates["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        if args.temperature < 0:
            raise InputError(f"--temperature {args.temperature:g}: must be 0 or more.")
        updates["temperature"] = args.temperature
    if updates:
        spec = spec.with_generation(spec.section.generation.model_copy(update=updates))
    wait_for_input(args.input, args.wait_for_input, plan_digest=args.wait_for_digest)
    return ExtractPipeline(
        spec,
        model_name=args.model_name,
        requested_backend=None if args.backend == AUTO_BACKEND else Backend(args.backend),
        validate=args.validate,
        max_reasks=args.max_retries,
        base_seed=study.sampling.base_seed if args.seed is None else args.seed,
    )
