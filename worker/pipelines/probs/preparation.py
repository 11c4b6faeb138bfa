"""What Experiment 2 learns from the server once, before the first row: one `ProbsSetup`.

In order, because each step needs the one before it:
1. whether the chat template takes a system message (worker.server.chat_messages);
2. whether the server tokenizes at all: a probe conversation rendered by `/tokenize`. Without it (a
   hosted API) the setup is the approximate chat fallback and nothing else is asked;
3. the token ids of the answer prefix (and, after reasoning, of the analysis channel's opening, its end
   token and the final-channel header);
4. how every option's surface variants tokenize right after the rendered probe and the prefix, which
   decides per question whether first-token is exact (answer_tokens.plan_options);
5. whether the server scores requested token ids at any rank (only when first-token is used);
6. whether --temperature changes the log-probabilities the server returns.
Everything learned goes into the meta file (`findings`); none of it is a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.errors import InputError, RequestRejected
from worker.pipelines.probs.answer_tokens import OptionPlan, plan_options, surface_variants
from worker.pipelines.probs.first_token import (
    check_first_tokens_distinct,
    server_scores_requested_ids,
    top_by_token_id,
)
from worker.pipelines.probs.probs_config import Method, ProbsConfig
from worker.pipelines.probs.prompt_tokens import chat_prompt_ids, detokenize, text_ids
from worker.pipelines.probs.reasoning import ReasoningMode
from worker.server.chat_messages import MessageBuilder, probe_system_role
from worker.server.client import ModelClient
from worker.server.completions import COMPLETIONS_PATH, completion_request
from worker.studies.probability_section import OptionSpec, Question

__all__ = ["ProbsSetup", "ReasoningTokens", "planned_method", "prepare_scoring"]

# A short fixed conversation whose rendering shows what the chat template puts before the answer.
PROBE_USER_MESSAGE = "Answer with one word."


@dataclass(frozen=True)
class ReasoningTokens:
    """after-reasoning: the token ids around the generated analysis, for this model."""

    analysis_prefix: tuple[int, ...]  # opens the analysis channel right after the generation prompt
    analysis_end: tuple[int, ...]  # closes it: one special token, the generation's stop token
    answer_prefix: tuple[int, ...]  # opens the answer after the analysis


@dataclass(frozen=True)
class ProbsSetup:
    """What prepare() learned from the server; fixed before the first row."""

    chat: MessageBuilder  # what the server's chat template accepts
    findings: dict[str, Any]  # the meta file's server.pipeline_findings
    tokenize_available: bool = True  # False: the approximate chat fallback scores every question
    # Between the generation prompt and the answer. After reasoning: the prefix an empty analysis would
    # leave, used to plan the options; each row's own analysis goes between its pieces (reasoning_tokens).
    answer_prefix_ids: tuple[int, ...] = ()
    reasoning_tokens: ReasoningTokens | None = None  # after-reasoning only
    plans: Mapping[str, OptionPlan] = field(default_factory=dict)  # question name -> its options' tokens
    scores_requested_ids: bool = False  # the server honours logprob_token_ids


def planned_method(requested: Method, plan: OptionPlan) -> Method:
    """The method a question is scored by before any row: auto takes first-token only where it is exact."""
    if requested is Method.AUTO:
        return Method.FIRST_TOKEN if plan.first_token_exact else Method.CONTINUATION
    return requested


async def prepare_scoring(
    config: ProbsConfig, questions: Sequence[Question], client: ModelClient
) -> ProbsSetup:
    """Learn from the server what scoring needs (the module docstring has the steps)."""
    chat = await probe_system_role(client)
    probe = [{"role": "user", "content": PROBE_USER_MESSAGE}]
    if questions[0].system:
        probe.insert(0, {"role": "system", "content": questions[0].system})
    try:
        probe_ids = await chat_prompt_ids(probe, client, chat=chat, reasoning_effort=config.reasoning_effort)
    except RequestRejected as err:
        if err.status != 404 or err.fatal:
            raise
        return _chat_fallback(config, chat)
    # Asked in every mode; after reasoning the prefix is replaced below, and this one request goes unused.
    prefix_ids = tuple(await text_ids(config.direct_prefix, client))
    reasoning_tokens = await _reasoning_tokens(config, client)
    if reasoning_tokens is not None:
        # Options are planned (and the server probed) after an empty analysis: the answer prefix ends
        # in a special token, so what comes before it does not change how the options tokenize.
        prefix_ids = (
            *reasoning_tokens.analysis_prefix,
            *reasoning_tokens.analysis_end,
            *reasoning_tokens.answer_prefix,
        )
    context = await detokenize([*probe_ids, *prefix_ids], client)
    plans = await _plans(config, questions, context, client)
    uses_first_token = any(
        planned_method(config.method, plans[q.name]) is Method.FIRST_TOKEN for q in questions
    )
    scores_requested_ids = uses_first_token and await server_scores_requested_ids(
        probe_ids, prefix_ids, client
    )
    findings = {
        "approximate": False,
        "first_token_reads": _first_token_reads(
            config, uses_first_token, scores_requested_ids=scores_requested_ids
        ),
        **chat.findings(),
        "answer_prefix_token_ids": list(prefix_ids),
        # Per question before any row; a row's own <q>_method says what was used (auto may rescore a
        # first-token row by continuation when a variant falls outside the top N).
        "planned_methods": {q.name: planned_method(config.method, plans[q.name]).value for q in questions},
        "option_tokens": {q.name: plans[q.name].describe() for q in questions},
        "temperature": await _probe_temperature(config, [*probe_ids, *prefix_ids], client),
    }
    return ProbsSetup(
        chat=chat,
        findings=findings,
        answer_prefix_ids=prefix_ids,
        reasoning_tokens=reasoning_tokens,
        plans=plans,
        scores_requested_ids=scores_requested_ids,
    )


def _chat_fallback(config: ProbsConfig, chat: MessageBuilder) -> ProbsSetup:
    findings = {
        **chat.findings(),
        "method": Method.CHAT_TOP_LOGPROBS.value,
        "approximate": True,
        "why": (
            "The server has no /tokenize endpoint, so the prompt's token ids and the options' "
            "tokenization are unknown: probabilities come from chat completions' top_logprobs "
            "matched by text; options longer than one token, and options outside the top "
            f"{config.top_logprobs}, are reported absent; no answer prefix is applied."
        ),
    }
    return ProbsSetup(chat=chat, findings=findings, tokenize_available=False)


async def _reasoning_tokens(config: ProbsConfig, client: ModelClient) -> ReasoningTokens | None:
    """The reasoning format's pieces in this model's tokens (after-reasoning only)."""
    reasoning_format = config.format
    if config.mode is not ReasoningMode.AFTER_REASONING or reasoning_format is None:
        return None
    analysis_prefix = tuple(await text_ids(reasoning_format.analysis_prefix, client))
    analysis_end = tuple(await text_ids(reasoning_format.analysis_end, client))
    if len(analysis_end) != 1:
        # vLLM stops at ANY of the stop token ids: a multi-token end would cut the reasoning short.
        raise InputError(
            f"--reasoning-format {reasoning_format.name}: {reasoning_format.analysis_end} is "
            f"{len(analysis_end)} tokens for this model, not one special token; the "
            f"model does not speak {reasoning_format.name}."
        )
    answer_prefix = tuple(await text_ids(reasoning_format.answer_prefix_after_reasoning, client))
    return ReasoningTokens(analysis_prefix, analysis_end, answer_prefix)


async def _plans(
    config: ProbsConfig, questions: Sequence[Question], context: str, client: ModelClient
) -> dict[str, OptionPlan]:
    """Each question's option plan; questions with the same options share one (tokenized once)."""
    by_options: dict[tuple[str, ...], OptionPlan] = {}
    plans: dict[str, OptionPlan] = {}
    for question in questions:
        key = tuple(o.text for o in question.options)
        if key not in by_options:
            by_options[key] = await _plan_for(config, question.options, context, client)
        plans[question.name] = by_options[key]
        if config.method is Method.FIRST_TOKEN and not by_options[key].first_token_exact:
            check_first_tokens_distinct(question, by_options[key])
    return plans


async def _plan_for(
    config: ProbsConfig, options: Sequence[OptionSpec], context: str, client: ModelClient
) -> OptionPlan:
    """Tokenize every variant right after the generation prompt, as the model would write it."""
    base = await text_ids(context, client)
    sequences: dict[str, dict[str, list[int]]] = {}
    for option in options:
        sequences[option.label] = {}
        for text in surface_variants(option.text, config.variants):
            full = await text_ids(context + text, client)
            if full[: len(base)] == base and len(full) > len(base):
                sequences[option.label][text] = full[len(base) :]
            else:
                # The variant merges with the prompt's last token; scored on its own tokens instead.
                sequences[option.label][text] = await text_ids(text, client)
    return plan_options(sequences)


def _first_token_reads(config: ProbsConfig, uses_first_token: bool, *, scores_requested_ids: bool) -> str:
    if not uses_first_token:
        return "not used: every question is scored by continuation"
    if scores_requested_ids:
        return "the options' own token ids (logprob_token_ids): exact at any rank"
    return f"the top {config.top_logprobs} candidates only"


async def _probe_temperature(
    config: ProbsConfig, prompt_ids: list[int], client: ModelClient
) -> dict[str, Any]:
    """Ask the server whether --temperature changes the log-probabilities it returns."""
    finding: dict[str, Any] = {"requested": config.temperature}
    if config.temperature == 1.0:
        finding["scaled_by_server"] = "not measurable at temperature 1.0"
        return finding
    tops = []
    for temperature in (1.0, config.temperature):
        body = completion_request(
            client.options.model_name,
            prompt_ids,
            max_tokens=1,
            logprobs=config.top_logprobs,
            temperature=temperature,
            token_ids_as_keys=True,
        )
        tops.append((await client.post_json(COMPLETIONS_PATH, body, expect=top_by_token_id)).expected)
    shared = set(tops[0]) & set(tops[1])
    scaled = any(abs(tops[0][t] - tops[1][t]) > 1e-4 for t in shared)
    finding["scaled_by_server"] = scaled
    finding["note"] = (
        "the returned log-probabilities depend on temperature (server logprobs_mode processed)"
        if scaled
        else "the server returns raw log-probabilities; temperature does not change the numbers"
    )
    return finding
