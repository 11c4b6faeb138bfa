"""The run engine every pipeline shares: input table, output lock, checkpoint and resume, samples and
seeds, the meta file, superseding a changed run, waiting for an input, signals, progress and metrics.
A pipeline only says how one row becomes requests and columns (pipeline.py, the base class every
pipeline extends).

Imports constants, errors and server/; imported by pipelines/ and the command line.
"""
