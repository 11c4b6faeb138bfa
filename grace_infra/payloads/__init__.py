"""Programs that run inside containers, not here: each file's source is read as text and shipped as
`python3 -c <source>` (manifests/download_job.py, manifests/completion_gate.py). They run in the pinned
vLLM image, so they import only the standard library and what that image has, and nothing of ours.
"""
