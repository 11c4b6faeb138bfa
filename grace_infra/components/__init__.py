"""The Pulumi ComponentResources (`grace:index:<Noun>`): GraceFoundation, GraceStorage,
VllmModelServer, WeightsDownload, ExperimentJob, ExtractionGate (resume_gate.py), the experiment
matrix, and stack.py, which builds
them as one dependency graph for `__main__.py`. Each registers what manifests/ builds.

Imports every layer below it and Pulumi; imported by `__main__.py`, commands/offline.py (through the
program) and the tests.
"""
