"""`python -m worker probs` (Experiment 2): the pipeline (probs_pipeline.py), how a question's answer
options are written as tokens for one model (answer_tokens.py), and reading the answer of a reasoning
model (reasoning.py)."""
