"""Grace worker: runs a study's rows against an OpenAI-compatible model server (see `python -m worker -h`).

Public surface for pipeline authors: `worker.runner.Pipeline` / `run_pipeline`, `worker.client.ModelClient`,
`worker.errors`, `worker.studies.load_study`, `worker.cli` (subcommand table).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"  # keep in step with pyproject.toml; recorded in every <output>.meta.json
