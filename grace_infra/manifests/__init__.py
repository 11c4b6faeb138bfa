"""Pure builders of the Kubernetes objects the stack creates, as plain camelCase dicts: the vLLM pod
(vllm_server.py), the experiment Jobs (worker_job.py), the weight downloads (download_job.py), claims,
the studies ConfigMap, monitoring objects, the complete-rerun gate (completion_gate.py), the CPU gate
that resumes the suspended extraction Job (extraction_gate.py), lifecycle
annotations (job_lifecycle.py), security waivers and names. A test calls them without Pulumi.

Imports config/ and planning/; imported by nrp_rules.py, components/ and commands/.
"""
