"""Worker commands besides the pipelines: `check-outputs` (check_outputs.py), the job-mode init
container that decides whether a rerun has anything left to do. Imports every layer."""
