"""What the stack will run and what it costs, as data: the experiment matrix (matrix.py), the study
files the Jobs read (study_bundle.py), each cell's requests in tokens (workload.py), GPU speed
(gpu_performance.py, serving_speed.py), the GPU-hour plan (gpu_hours.py), pod sizes (sizing.py) and
each run's plan digest (run_digest.py). No resources and no Pulumi.

Imports config/ and nrp.cluster_facts, and the worker's study models (worker.studies) so prompts are
measured with the worker's own code; imported by manifests/, nrp_rules.py, components/ and commands/.
"""
