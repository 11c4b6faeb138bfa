"""The `probs` subcommand's own settings, validated once (the shared run options live in
worker.run.run_options), and the scoring methods it can ask for."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from worker.pipelines.probs.answer_tokens import VariantPolicy
from worker.pipelines.probs.reasoning import FORMATS, ReasoningFormat, ReasoningMode

__all__ = [
    "DEFAULT_REASONING_MAX_TOKENS",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_LOGPROBS",
    "MAX_TOP_LOGPROBS",
    "Method",
    "ProbsConfig",
]

# vLLM's --max-logprobs default: a request for more top candidates is refused with a 400.
MAX_TOP_LOGPROBS = 20
DEFAULT_TOP_LOGPROBS = 20  # all vLLM returns: fewer would drop options ranked below the cut
# gpt-oss's analysis channel for a short question: the catalog's reasoning budget
# (grace_infra/config/catalog.py).
DEFAULT_REASONING_MAX_TOKENS = 2048
# vLLM returns raw log-probabilities (logprobs_mode=raw_logprobs) unless the server is started otherwise,
# so temperature does not change them; 1.0 is the value under which "raw" and "processed" agree anyway.
DEFAULT_TEMPERATURE = 1.0


class Method(StrEnum):
    """How an option's probability is read (`--method`), plus the approximate fallback's name."""

    FIRST_TOKEN = "first-token"  # noqa: S105 - a method name, not a secret
    CONTINUATION = "continuation"
    AUTO = "auto"
    CHAT_TOP_LOGPROBS = "chat-top-logprobs"  # never requested; recorded when /tokenize is missing


class ProbsConfig(BaseModel):
    """The `probs` subcommand's own settings (the shared run options live in worker.run.run_options)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Method = Field(default=Method.AUTO, description="first-token, continuation or auto.")
    top_logprobs: int = Field(
        default=DEFAULT_TOP_LOGPROBS, ge=1, le=MAX_TOP_LOGPROBS, description="--logprobs N (first-token)."
    )
    temperature: float = Field(default=DEFAULT_TEMPERATURE, ge=0, description="Sent with every request.")
    answer_prefix: str = Field(default="", description="Text appended after the generation prompt.")
    variants: VariantPolicy = Field(default=VariantPolicy.CASE_AND_SPACE, description="Surface variants.")
    reasoning_format: str | None = Field(
        default=None,
        description="The model's reasoning format (harmony for gpt-oss); None: not a reasoning model.",
    )
    reasoning_mode: ReasoningMode | None = Field(
        default=None, description="direct or after-reasoning; after-reasoning when a format is given."
    )
    reasoning_max_tokens: int = Field(
        default=DEFAULT_REASONING_MAX_TOKENS, gt=0, description="Token budget of the generated reasoning."
    )
    reasoning_effort: str | None = Field(
        default=None, description="Passed to the chat template (gpt-oss writes it into its system message)."
    )

    @model_validator(mode="after")
    def _reasoning_is_consistent(self) -> ProbsConfig:
        if self.reasoning_format is not None and self.reasoning_format not in FORMATS:
            raise ValueError(
                f"--reasoning-format {self.reasoning_format}: unknown (known: {', '.join(FORMATS)})"
            )
        if self.reasoning_mode is not None and self.reasoning_format is None:
            raise ValueError("--reasoning-mode needs --reasoning-format (the model's reasoning format)")
        if self.mode is ReasoningMode.AFTER_REASONING and self.answer_prefix:
            raise ValueError(
                "--answer-prefix applies to --reasoning-mode direct only: after reasoning, the format's own "
                "final-channel header opens the answer"
            )
        return self

    @property
    def format(self) -> ReasoningFormat | None:
        return FORMATS[self.reasoning_format] if self.reasoning_format else None

    @property
    def mode(self) -> ReasoningMode | None:
        """The reasoning mode in force: after-reasoning by default for a reasoning model, None otherwise."""
        if self.reasoning_format is None:
            return None
        return self.reasoning_mode or ReasoningMode.AFTER_REASONING

    @property
    def direct_prefix(self) -> str:
        """What follows the generation prompt when no reasoning is generated."""
        if self.answer_prefix or self.format is None:
            return self.answer_prefix
        return self.format.direct_answer_prefix

    @field_validator("method")
    @classmethod
    def _requestable(cls, method: Method) -> Method:
        if method is Method.CHAT_TOP_LOGPROBS:
            raise ValueError("--method chat-top-logprobs is chosen automatically when /tokenize is missing")
        return method
