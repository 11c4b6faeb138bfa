"""Programs that run inside containers, not here: each file's source is read as text and shipped as
`python3 -c <source>` (manifests/download_job.py, manifests/completion_gate.py, manifests/vllm_server.py:
the sidecar's start budget in server_start.py; manifests/extraction_gate.py: resume_job.py, in the job
image). They run in pinned images, so they import only the standard library and what that image has,
and nothing of ours.
"""
