"""The pipelines, one subcommand each: query.py (Experiment 1's raw answers), probs/ (Experiment 2's
probability distributions) and extraction/ (free text coded into schema-valid columns).

Import every layer below; imported only by the command line, which loads a pipeline when its
subcommand runs.
"""
