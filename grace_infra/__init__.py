"""Grace's stack: the NRP deployment for LLM experiments as one Pulumi program, and the `grace` commands.

Layers, lowest first; a module imports only from its own layer or the ones before it (tests/unit/
test_layout.py checks this, and that only components/ and commands/ import Pulumi):

    constants.py, errors.py   every fixed number and name; the typed errors
    payloads/                 programs shipped into containers as text (import nothing of ours)
    nrp/                      NRP's cluster as data, each fact with its public source
    config/                   the stack configuration: one pydantic model, the model catalog, stack files
    planning/                 the experiment matrix, workloads, GPU-hours and pod sizes: data, no resources
    manifests/                pure Kubernetes dict builders a test calls without Pulumi
    nrp_rules.py              NRP's usage rules over the config, the plan and the manifests
    components/               the Pulumi ComponentResources and the stack that builds them
    commands/                 `grace render|preflight|status|results`; commands/cli.py dispatches

What the stack and the worker must agree on (the worker's environment names, paths, exit codes and
subcommands, the meta file as a typed model) is the worker's `worker/contract.py`, imported from any
layer; the job image ships the worker alone, so the contract lives there.
"""
