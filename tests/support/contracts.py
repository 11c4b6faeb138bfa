"""What users rely on, written once for every test that checks it (independent of the worker's code)."""

# The reply columns of the repository's studies: Study 1 asks three questions in one conversation,
# Study 2 one question.
STUDY1_REPLY_COLUMNS = ("response_story", "response_speech", "response_knowledge")
STUDY2_REPLY_COLUMNS = ("model_response",)


def query_added_columns(reply_columns: tuple[str, ...]) -> tuple[str, ...]:
    """The columns `worker query` adds after the input's own, in this order."""
    return (
        "model_name",
        *reply_columns,
        *(f"{column}_reasoning" for column in reply_columns),
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


QUERY_ADDED_COLUMNS = query_added_columns(STUDY1_REPLY_COLUMNS)

# The runner's columns between the input's and a pipeline's: which of a row's N answers, and its seed.
SAMPLE_COLUMNS = ("sample", "seed")
