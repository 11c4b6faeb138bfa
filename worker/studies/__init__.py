"""Study files (`jobs/studies/<design>/<name>.yaml`) as validated models: prompts and sampling
(definition.py), Experiment 2's probability questions (probability_section.py), the extraction section
(extraction_section.py) with its schema check (schema_check.py) and the deterministic coder of
exact-format replies (rule_coder.py), and every difference between two designs of a study
(design_diff.py). Pure: nothing here talks to a server.

Imports constants, errors and the contract; imported by pipelines/ and by the stack's planning and
commands (grace_infra.planning measures prompts with this code, `grace studies diff` compares designs).
"""
