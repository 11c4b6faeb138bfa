"""Every fixed number and name of the stack in one place, each with the reason it has its value."""

from __future__ import annotations

PROJECT = "grace"
PULUMI_CONFIG_NAMESPACE = "grace"
DEFAULT_STACK = "nrp"

# Names people type in kubectl and that other objects reference: fixed, never auto-named.
NAMESPACE_DEFAULT = "grace-experiments"
INPUT_PVC = "grace-input-data"
OUTPUT_PVC = "grace-output-data"
LOGS_PVC = "grace-logs"
WEIGHTS_PVC_PREFIX = "grace-model-weights-"
HF_TOKEN_SECRET = "huggingface-token"
HF_TOKEN_SECRET_KEY = "token"
DEEPSEEK_SECRET = "deepseek-api-key"
DEEPSEEK_SECRET_KEY = "api-key"
SA_MODEL_SERVER = "grace-model-server"
SA_QUERY_JOB = "grace-query-job"
SA_EXTRACTION_JOB = "grace-extraction-job"
STUDIES_CONFIGMAP = "grace-studies"
MODEL_SERVER_PREFIX = "vllm-"

# Mount points inside pods (the worker's CLI paths are built from these).
INPUT_MOUNT = "/input"
OUTPUT_MOUNT = "/output"
LOGS_MOUNT = "/logs"
WEIGHTS_MOUNT = "/model-weights"
STUDIES_MOUNT = "/etc/grace"

# vLLM's OpenAI-compatible server.
VLLM_PORT = 8000
VLLM_PORT_NAME = "http"
VLLM_MIN_MAX_LOGPROBS = 20  # experiment 2 reads the top-20 alternatives; vLLM's default cap is 20
WORKER_METRICS_PORT = 9090
WORKER_METRICS_PORT_NAME = "metrics"

# NRP usage rules (https://nrp.ai/documentation/userdocs/start/policies/).
NRP_LIMIT_TO_REQUEST_MAX_RATIO = 1.2  # a limit may exceed its request by at most 20 %
NRP_MAX_GPUS_STATEFUL_POD = 2  # Deployments/StatefulSets: at most 2 GPUs per pod without an exception
NRP_MAX_GPUS_ANY_POD = 8  # no pod may ask for more than 8 GPUs
NRP_MAX_WORKLOAD_DAYS = 14  # long-running workloads are deleted after two weeks
NRP_IDLE_GPU_UTILISATION = 0.40  # GPUs used under 40 % of what is requested count against the user
NRP_FORBIDDEN_STORAGE_CLASSES = frozenset({"rook-cephfs-ucsd"})  # may be purged without notice
NRP_BLOCK_STORAGE_CLASSES = frozenset({"rook-ceph-block"})  # RBD: ReadWriteOnce only

# Recommended labels (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/).
LABEL_PROJECT = "project"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
COMPONENT_MODEL_SERVER = "model-server"
COMPONENT_QUERY_JOB = "query-job"
COMPONENT_EXTRACTION_JOB = "extraction-job"
