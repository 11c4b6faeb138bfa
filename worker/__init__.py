"""Grace worker: runs a study's rows against an OpenAI-compatible model server (`python -m worker -h`).

Layers, lowest first; a module imports only from its own layer or the ones before it (tests/unit/
test_layout.py checks this):

    contract.py               what the stack and the worker agree on (environment names, paths, exit
                              codes, subcommands, the meta file as a typed model); the stack imports it
    constants.py, errors.py   the worker's own fixed numbers and names; the typed errors
    server/                   the HTTP client, its options, each endpoint's request builder and reply parser
    run/                      the run engine every pipeline shares: input, lock, checkpoint, meta, signals
    studies/                  study files as validated models: prompts, probability questions, extraction
    pipelines/                query (Experiment 1), probs (Experiment 2), extraction
    commands/, cli.py         the command line: subcommands, `run --tasks`, `check-outputs`

Public surface for pipeline authors: `worker.run.pipeline.Pipeline`, `worker.run.runner.run_pipeline`,
`worker.server.client.ModelClient`, `worker.errors`, `worker.studies.definition.load_study`,
`worker.cli` (subcommand table). The job image ships this package alone (jobs/Dockerfile).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"  # keep in step with pyproject.toml; recorded in every <output>.meta.json
