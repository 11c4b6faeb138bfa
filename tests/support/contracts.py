"""What users rely on, written once for every test that checks it (independent of the worker's code)."""

# The columns `worker query` adds after the input's own, in this order.
QUERY_ADDED_COLUMNS = (
    "model_name",
    "model_response",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "response_timestamp",
    "processing_time_ms",
    "attempts",
    "error",
)

# The runner's columns between the input's and a pipeline's: which of a row's N answers, and its seed.
SAMPLE_COLUMNS = ("sample", "seed")
