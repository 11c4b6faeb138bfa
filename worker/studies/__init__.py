"""Study files (`jobs/studies/<name>.yaml`) as validated models: prompts and sampling (definition.py),
Experiment 2's probability questions (probability_section.py), and the extraction section
(extraction_section.py) with its schema check (schema_check.py) and the deterministic coder of
exact-format replies (rule_coder.py). Pure: nothing here talks to a server.

Imports constants and errors; imported by pipelines/ and by the stack's planning (grace_infra.planning),
which measures prompts with this code.
"""
