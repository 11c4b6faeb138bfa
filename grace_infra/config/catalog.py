"""The model catalog: what each model needs to be served correctly.

The numbers come from each model's Hugging Face `config.json` (heads, layers, context) and the
researchers' original sizing (GPUs, tensor parallel size, weights PVC size). A stack entry with a catalog
key takes these as defaults and may override any field; an entry with any other key defines a new model by
setting every field without a default here (see `config.ModelConfig`).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Dtype(StrEnum):
    """vLLM `--dtype` values the catalog uses."""

    AUTO = "auto"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    FLOAT32 = "float32"


class ReasoningEffort(StrEnum):
    """How much a reasoning model thinks before it answers: the values vLLM's harmony renderer accepts
    (vllm/entrypoints/openai/parser/harmony_utils.py REASONING_EFFORT)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Exp2ReasoningMode(StrEnum):
    """Where experiment 2 reads a reasoning model's answer (worker/pipelines/probs/reasoning.py)."""

    DIRECT = "direct"  # right after the generation prompt: a forced answer with no reasoning
    AFTER_REASONING = "after-reasoning"  # after the model's own generated analysis channel


class ServingMode(StrEnum):
    """How a model's vLLM server lives (docs/model-servers.md, "Serving modes")."""

    # StatefulSet + Service for the whole campaign (the researchers' original design)
    PERSISTENT = "persistent"
    JOB = "job"  # native sidecar inside the model's experiment Job; GPUs released when the work ends


class ModelSpec(BaseModel):
    """One servable model. Field names are the stack config's keys in snake_case."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(description="Short name: the vLLM served model name and the suffix of every object.")
    hf_repo: str = Field(description="Hugging Face repository id of the instruction-tuned checkpoint.")
    revision: str = Field(
        default="main",
        description="Hugging Face revision to download; pin a commit SHA for reproducible runs.",
    )
    gated: bool = Field(description="The repository needs an accepted licence and a token with access.")
    params_billion: float = Field(gt=0, description="Total parameters, in billions (for the fit check).")
    active_params_billion: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Parameters one token passes through, in billions, for a mixture-of-experts model (the GPU-hour "
            "plan's prompt-reading cost); unset: every parameter (a dense model)."
        ),
    )
    weights_gb: float = Field(gt=0, description="Size of the checkpoint's weights in GB (10^9 bytes).")
    num_attention_heads: int = Field(gt=0, description="Attention heads; tensor parallel size divides it.")
    num_kv_heads: int = Field(gt=0, description="Key/value heads (grouped-query attention).")
    num_layers: int = Field(gt=0, description="Transformer layers (for the KV-cache estimate).")
    head_dim: int = Field(gt=0, description="Per-head dimension (for the KV-cache estimate).")
    gpus: int = Field(gt=0, description="GPUs per server pod.")
    tensor_parallel_size: int = Field(gt=0, description="vLLM --tensor-parallel-size; equals gpus.")
    dtype: Dtype = Field(description="vLLM --dtype. Gemma-2 must be bfloat16: float16 overflows.")
    kv_cache_bytes_per_element: int = Field(
        default=2, gt=0, description="Bytes per KV-cache element (2 for bf16/fp16 caches)."
    )
    max_model_len: int = Field(gt=0, description="vLLM --max-model-len, in tokens.")
    gpu_memory_utilization: float = Field(
        default=0.90, gt=0, le=1, description="vLLM --gpu-memory-utilization."
    )
    weights_pvc_gi: int = Field(gt=0, description="Size of the model's RBD weights PVC, in GiB.")
    cpu_request: float = Field(gt=0, description="vLLM container CPU request, in cores.")
    memory_request_gi: int | None = Field(
        default=None,
        gt=0,
        description=(
            "vLLM container memory request, in GiB; unset: 2x the estimate of what the loaded server "
            "holds in host memory (planning/sizing.py, vllm_host_memory_estimate_gi)."
        ),
    )
    extra_args: tuple[str, ...] = Field(
        default=(),
        description=(
            "Extra vLLM arguments for this model. gpt-oss on A100-class GPUs (no native MXFP4) uses "
            "its own attention backend settings; put them here."
        ),
    )
    extra_env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for the vLLM container."
    )
    tiktoken_files: tuple[str, ...] = Field(
        default=(),
        description=(
            "tiktoken vocabulary files vLLM loads at start-up outside the checkpoint (gpt-oss's harmony "
            "encoding); the download Job stages them so the server needs no internet."
        ),
    )
    stop: tuple[str, ...] = Field(
        default=(),
        description=(
            "Stop strings the researchers' design sends with every completion request: the model family's "
            "end-of-turn markers, as their src/utils/model_config.py lists them (none for gpt-oss, whose "
            "entries there are placeholders). The chat design sends none: the chat template ends a turn."
        ),
    )
    answer_prefix: str = Field(
        default="",
        description=(
            "Text appended after the chat template's generation prompt before the answer is read "
            "(experiment 2). For gpt-oss it is the harmony final-channel header, so the probability is "
            "read at the answer and not at the first reasoning token."
        ),
    )
    reasoning_tokens: int = Field(
        default=0,
        ge=0,
        description=(
            "Tokens a reasoning model spends before it answers (gpt-oss's analysis channel). The Jobs add "
            "them to the study's max_tokens for exp1 and extraction, or the answer would be cut off."
        ),
    )
    reasoning_format: str | None = Field(
        default=None,
        description="The model's reasoning format (harmony for gpt-oss); None: the model does not reason.",
    )
    reasoning_effort: ReasoningEffort | None = Field(
        default=None,
        description=(
            "Reasoning effort sent with every experiment 1 request and to the chat template in experiment 2; "
            "set explicitly for reasoning models so the server's default cannot change the measurement."
        ),
    )
    exp2_reasoning_mode: Exp2ReasoningMode = Field(
        default=Exp2ReasoningMode.AFTER_REASONING,
        description=(
            "Experiment 2 on a reasoning model: direct (the answer right after the generation prompt, no "
            "reasoning) or after-reasoning (the model's analysis channel is generated first)."
        ),
    )
    load_budget_s: int = Field(
        gt=0, description="Seconds the server may take to load weights from Ceph before it is restarted."
    )
    planned_reasoning_tokens: int = Field(
        default=0,
        ge=0,
        description=(
            "Tokens the GPU-hour plan expects a reasoning model to write before each answer; the budget it "
            "may use (reasoning_tokens) bounds the Jobs' deadlines instead."
        ),
    )
    throughput_rps: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Requests/s you MEASURED one server sustain on this workload; set, it replaces the plan's "
            "datasheet estimate for this model (grace_infra/planning/serving_speed.py)."
        ),
    )

    @property
    def active_params(self) -> float:
        """Parameters one token passes through (all of them for a dense model), in billions."""
        return self.active_params_billion or self.params_billion

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token of context takes: K and V x layers x KV heads x head dim x bytes."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.kv_cache_bytes_per_element


# gpt-oss speaks the harmony format: the model first writes an analysis channel; the answer starts
# after this header (https://cookbook.openai.com/articles/openai-harmony).
HARMONY_FINAL_PREFIX = "<|channel|>final<|message|>"
# Room for gpt-oss's analysis channel before the final answer. Its chat template's default effort ("medium")
# commonly writes a few hundred to about a thousand tokens for a short question; 2048 leaves headroom.
GPT_OSS_REASONING_TOKENS = 2048
# What the GPU-hour plan expects gpt-oss to write in its analysis channel per request. Not measured on
# these prompts (no GPU here): the nearest published measurement is 50 short questions at HIGH effort
# (cpldcpu/LRMTokenEconomy, data/output_queries_gptoss.json, both models, 5 samples each), whose reasoning
# took 47 tokens on average and 114 at most; the Jobs ask for "low". 256 is over twice that maximum. The
# Jobs' deadlines use the whole budget above instead, and every output row records completion_tokens, so
# a pilot run measures the real figure (set plannedReasoningTokens to it).
GPT_OSS_PLANNED_REASONING_TOKENS = 256

# gpt-oss's reasoning effort in the chat design, set explicitly: our choice. The researchers' gpt-oss
# entries are placeholders written before its release (src/utils/model_config.py: "TBD when released",
# is_reasoning_model=False "Update if reasoning-enabled"), and their raw completion prompts render no
# harmony system message, so their design (Grace's default) sends no effort at all. In the chat design
# "low" is the least reasoning harmony offers, and an explicit value keeps a server default from changing
# what is measured.
GPT_OSS_REASONING_EFFORT = ReasoningEffort.LOW

# gpt-oss on A100 (Ampere: no native MXFP4, no FlashAttention 3): vLLM's gpt-oss recipe runs it with the
# TRITON_ATTN backend (the one with attention-sink support there) and Marlin MXFP4 MoE kernels. Pinning the
# backend keeps auto-selection from changing between vLLM releases; on H100 this backend also works.
GPT_OSS_AMPERE_ARGS = ("--attention-backend=TRITON_ATTN",)

# openai_harmony's o200k_harmony encoding reads o200k_base.tiktoken (openai/harmony,
# src/tiktoken_ext/public_encodings.rs, vocab_file_name).
GPT_OSS_TIKTOKEN_FILES = ("o200k_base.tiktoken",)

# The stop strings of the researchers' design, per model family (tgmorton/knowledge-politeness-llms at
# e41db28, src/utils/model_config.py:37,49,61,74; its gpt-oss entries set none).
GEMMA_2_STOP = ("<end_of_turn>",)
LLAMA_3_STOP = ("<|eot_id|>", "<|end_of_text|>")

# gpt-oss's parameters, total and active per token (a mixture of experts): 20.9B/3.6B and 116.8B/5.1B
# (OpenAI, "gpt-oss-120b & gpt-oss-20b Model Card", 2025, table 1).
CATALOG: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in (
        ModelSpec(
            key="gemma-2-2b", hf_repo="google/gemma-2-2b-it", gated=True,
            params_billion=2.6, weights_gb=5.2, num_attention_heads=8, num_kv_heads=4, num_layers=26,
            head_dim=256, gpus=1, tensor_parallel_size=1, dtype=Dtype.BFLOAT16, max_model_len=4096,
            weights_pvc_gi=10, cpu_request=4, load_budget_s=600,
            stop=GEMMA_2_STOP,
        ),
        ModelSpec(
            key="gemma-2-9b", hf_repo="google/gemma-2-9b-it", gated=True,
            params_billion=9.2, weights_gb=18.5, num_attention_heads=16, num_kv_heads=8, num_layers=42,
            head_dim=256, gpus=1, tensor_parallel_size=1, dtype=Dtype.BFLOAT16, max_model_len=4096,
            weights_pvc_gi=25, cpu_request=6, load_budget_s=900,
            stop=GEMMA_2_STOP,
        ),
        ModelSpec(
            key="gemma-2-27b", hf_repo="google/gemma-2-27b-it", gated=True,
            params_billion=27.2, weights_gb=54.5, num_attention_heads=32, num_kv_heads=16, num_layers=46,
            head_dim=128, gpus=2, tensor_parallel_size=2, dtype=Dtype.BFLOAT16, max_model_len=4096,
            weights_pvc_gi=70, cpu_request=8, load_budget_s=1500,
            stop=GEMMA_2_STOP,
        ),
        ModelSpec(
            key="llama-3-70b", hf_repo="meta-llama/Meta-Llama-3-70B-Instruct", gated=True,
            params_billion=70.6, weights_gb=141.0, num_attention_heads=64, num_kv_heads=8, num_layers=80,
            head_dim=128, gpus=4, tensor_parallel_size=4, dtype=Dtype.BFLOAT16, max_model_len=8192,
            weights_pvc_gi=160, cpu_request=16, load_budget_s=2700,
            stop=LLAMA_3_STOP,
        ),
        ModelSpec(
            key="gpt-oss-20b", hf_repo="openai/gpt-oss-20b", gated=False,
            params_billion=21.0, active_params_billion=3.6, weights_gb=13.8,
            num_attention_heads=64, num_kv_heads=8, num_layers=24,
            head_dim=64, gpus=1, tensor_parallel_size=1, dtype=Dtype.AUTO, max_model_len=8192,
            weights_pvc_gi=15, cpu_request=6, load_budget_s=900,
            answer_prefix=HARMONY_FINAL_PREFIX, extra_args=GPT_OSS_AMPERE_ARGS,
            reasoning_tokens=GPT_OSS_REASONING_TOKENS, reasoning_format="harmony",
            planned_reasoning_tokens=GPT_OSS_PLANNED_REASONING_TOKENS,
            reasoning_effort=GPT_OSS_REASONING_EFFORT, tiktoken_files=GPT_OSS_TIKTOKEN_FILES,
        ),
        ModelSpec(
            key="gpt-oss-120b", hf_repo="openai/gpt-oss-120b", gated=False,
            params_billion=117.0, active_params_billion=5.1, weights_gb=65.3,
            num_attention_heads=64, num_kv_heads=8, num_layers=36,
            head_dim=64, gpus=2, tensor_parallel_size=2, dtype=Dtype.AUTO, max_model_len=8192,
            weights_pvc_gi=70, cpu_request=8, load_budget_s=1800,
            answer_prefix=HARMONY_FINAL_PREFIX, extra_args=GPT_OSS_AMPERE_ARGS,
            reasoning_tokens=GPT_OSS_REASONING_TOKENS, reasoning_format="harmony",
            planned_reasoning_tokens=GPT_OSS_PLANNED_REASONING_TOKENS,
            reasoning_effort=GPT_OSS_REASONING_EFFORT, tiktoken_files=GPT_OSS_TIKTOKEN_FILES,
        ),
    )
}

