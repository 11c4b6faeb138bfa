"""`python -m worker probs` (Experiment 2): the pipeline (probs_pipeline.py) and its settings
(probs_config.py); what it learns from the server before the first row (preparation.py) and prompts in
token ids (prompt_tokens.py); the scoring methods it chooses from, each giving a QuestionResult
(question_result.py): first_token.py, continuation.py and the approximate chat_top_logprobs.py; the
researchers' own rule, which a study file selects and which gives its own result (joint_completion.py);
how a question's answer options are written as tokens for one model (answer_tokens.py), and reading the
answer of a reasoning model (reasoning.py)."""
