"""Worker commands besides the pipelines: `check-outputs` (check_outputs.py), the job-mode init
container that decides whether a rerun has anything left to do, and `wait-for-inputs`
(wait_for_inputs.py), the extraction gate's wait on a CPU pod. Imports every layer."""
