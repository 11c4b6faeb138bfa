"""What users rely on, written out once for every test that checks it.

Each tuple is stated from what users read, never computed the way the worker computes it: a copy of
the worker's own derivation would agree with any change to it. The `query` columns are docs/worker.md's
table "Output of `query`", row by row; the reply columns are the studies' (Study 1's three replies
follow the researchers' GPT-4 file `Analysis/data/study1_annotated.csv`, with `response_speech`
spelled as docs/design-decisions.md records).
"""

# The reply columns of the repository's studies: Study 1 asks three questions in one conversation,
# Study 2 one question.
STUDY1_REPLY_COLUMNS = ("response_story", "response_speech", "response_knowledge")
STUDY2_REPLY_COLUMNS = ("model_response",)

# The columns `worker query` adds after the input's own (and the runner's sample columns), in order:
# the model's name, each turn's reply, each turn's reasoning, then the row's record.
QUERY_RECORD_COLUMNS = (
    "finish_reason",
    "finish_reasons",
    "prompt_tokens",
    "completion_tokens",
    "conversation",
    "prompt_token_ids",
    "response_timestamp",
    "processing_time_ms",
    "attempts",
    "error",
)
STUDY1_QUERY_ADDED_COLUMNS = (
    "model_name",
    "response_story",
    "response_speech",
    "response_knowledge",
    "response_story_reasoning",
    "response_speech_reasoning",
    "response_knowledge_reasoning",
    *QUERY_RECORD_COLUMNS,
)
STUDY2_QUERY_ADDED_COLUMNS = (
    "model_name",
    "model_response",
    "model_response_reasoning",
    *QUERY_RECORD_COLUMNS,
)

# The runner's columns between the input's and a pipeline's: which of a row's N answers, and its seed.
SAMPLE_COLUMNS = ("sample", "seed")

# The researchers' design (jobs/studies/researchers/, the completion form): each request's reply column,
# as their scripts name them, then the row's record. docs/worker.md's table for the completion form.
RESEARCHERS_REPLY_COLUMNS = {
    "study1": ("response_quantity", "response_knowledge"),
    "study2": ("response",),
}
COMPLETION_RECORD_COLUMNS = (
    "model_name",
    "finish_reason",
    "finish_reasons",
    "prompt_tokens",
    "completion_tokens",
    "prompts",
    "response_timestamp",
    "processing_time_ms",
    "attempts",
    "error",
)
