"""Every fixed number and name of the stack in one place, each with the reason it has its value.

What the worker must agree on too (its environment names, the paths it reads, its exit codes and
subcommands, its metrics port, the files beside an output) is in worker/contract.py, imported here and
by the modules that build or read them."""

from __future__ import annotations

from worker import contract

PROJECT = "grace"
PULUMI_CONFIG_NAMESPACE = "grace"
DEFAULT_STACK = "nrp"
# The stack setting naming the kubeconfig context `pulumi up` deploys to; the grace commands that reach
# the cluster follow it too.
KUBERNETES_CONTEXT_KEY = "kubernetes:context"

# Names people type in kubectl and that other objects reference: fixed, never auto-named.
NAMESPACE_DEFAULT = "grace-experiments"
INPUT_PVC = "grace-input-data"
OUTPUT_PVC = "grace-output-data"
LOGS_PVC = "grace-logs"
WEIGHTS_PVC_PREFIX = "grace-model-weights-"
HF_TOKEN_SECRET = "huggingface-token"  # noqa: S105 (an object name, not a credential)
HF_TOKEN_SECRET_KEY = "token"  # noqa: S105 (an object name, not a credential)
DEEPSEEK_SECRET = "deepseek-api-key"  # noqa: S105 (an object name, not a credential)
DEEPSEEK_SECRET_KEY = "api-key"  # noqa: S105 (an object name, not a credential)
SA_MODEL_SERVER = "grace-model-server"
SA_QUERY_JOB = "grace-query-job"
SA_EXTRACTION_JOB = "grace-extraction-job"
# The one identity with a token in its pods: the extraction gate, whose Role may get and patch exactly
# one Job (manifests/extraction_gate.py).
SA_EXTRACTION_GATE = "grace-extraction-gate"
STUDIES_CONFIGMAP = "grace-studies"
MODEL_SERVER_PREFIX = "vllm-"
# A model key ends object names and label values, which Kubernetes caps at 63 characters (DNS-1123
# label); the longest name built from it is the weights claim's.
KUBERNETES_NAME_MAX_LENGTH = 63
MODEL_KEY_MAX_LENGTH = KUBERNETES_NAME_MAX_LENGTH - len(WEIGHTS_PVC_PREFIX)

# Mount points inside pods (the worker's CLI paths are built from these; the studies ConfigMap's mount
# is where the worker looks for study files: worker/contract.py STUDIES_MOUNT).
INPUT_MOUNT = "/input"
OUTPUT_MOUNT = "/output"
LOGS_MOUNT = "/logs"
WEIGHTS_MOUNT = "/model-weights"

# vLLM's OpenAI-compatible server.
VLLM_PORT = 8000
VLLM_PORT_NAME = "http"
VLLM_MIN_MAX_LOGPROBS = 20  # experiment 2 reads the top-20 alternatives; vLLM's default cap is 20
WORKER_METRICS_PORT_NAME = "metrics"  # the worker's port is worker/contract.py METRICS_PORT

# NRP usage rules (https://nrp.ai/documentation/userdocs/start/policies/).
NRP_LIMIT_TO_REQUEST_MAX_RATIO = 1.2  # a limit may exceed its request by at most 20 %
NRP_MAX_GPUS_STATEFUL_POD = 2  # Deployments/StatefulSets: at most 2 GPUs per pod without an exception
NRP_MAX_GPUS_ANY_POD = 8  # no pod may ask for more than 8 GPUs
NRP_MAX_WORKLOAD_DAYS = 14  # long-running workloads are deleted after two weeks
NRP_IDLE_GPU_UTILISATION = 0.40  # GPUs used under 40 % of what is requested count against the user
# NRP's GPU resources and storage classes are data in nrp/cluster_facts.py, each table with its source.

# `grace results report`: an Experiment 2 distribution is drawn only when the median coverage of its rows
# (the total probability the model gave the allowed answers before renormalising) reaches this. Below it
# the renormalised shares are noise (a coverage near 1e-17 once drew a 100 % bar); a whole sentence
# scored as one continuation (Study 2) carries less mass than one token, so the floor is low. The report
# states it and `--min-coverage` changes it.
RESULTS_MIN_COVERAGE = 1e-4

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
COMPONENT_GATE_JOB = "gate-job"
COMPONENT_WEIGHTS_DOWNLOAD = "weights-download"

# vLLM model server pod (docs/model-servers.md).
VLLM_CONTAINER_NAME = "vllm"
WEIGHTS_DOWNLOAD_CONTAINER_NAME = "download-weights"
WEIGHTS_DOWNLOAD_JOB_PREFIX = "weights-"  # Job weights-<model> fills grace-model-weights-<model>
# The vocabulary vLLM's harmony code (gpt-oss) loads at start-up, staged next to the weights by the
# download Job; TIKTOKEN_ENCODINGS_BASE points vLLM at it so the server never downloads it itself.
TIKTOKEN_DIR = f"{WEIGHTS_MOUNT}/.tiktoken"
# https://github.com/openai/harmony src/tiktoken_ext/public_encodings.rs: file names, public URL and the
# SHA-256 the harmony loader checks a staged file against.
TIKTOKEN_BASE_URL = "https://openaipublic.blob.core.windows.net/encodings/"
TIKTOKEN_SHA256 = {"o200k_base.tiktoken": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"}
# The download's marker on the weights claim: repo, requested revision, resolved commit SHA. Every
# container that mounts the claim finds it here (named in worker/contract.py WEIGHTS_MARKER_ENV).
WEIGHTS_MARKER_PATH = f"{WEIGHTS_MOUNT}/{contract.WEIGHTS_MARKER_FILE}"
VLLM_HEALTH_PATH = "/health"
VLLM_METRICS_PATH = "/metrics"
HF_CACHE_MOUNT = "/tmp"  # noqa: S108  (an emptyDir on node-local disk: HF's cache must never live on CephFS)
HF_HOME = "/tmp/hf-home"  # noqa: S108
HF_CACHE_SIZE_GI = 20  # huggingface_hub's Xet chunk cache alone may grow to 10 GB
# Files a checkpoint repo carries that vLLM never reads: Llama-3-70B's original/ holds a second 140 GB copy
# as .pth, gpt-oss's original/ and metal/ hold two more copies. Skipping them keeps the PVC sizes valid.
WEIGHTS_IGNORE_PATTERNS = ("original/*", "metal/*", "*.pth", "*.gguf")
SHM_MOUNT = "/dev/shm"  # noqa: S108  (an emptyDir mount point, not a temp file)
SHM_SIZE_LIMIT_GI = 8  # NCCL's shared-memory transport between TP ranks; charged to the memory limit
# Host memory of a vLLM server after loading (planning/sizing.vllm_host_memory_gi; docs/model-servers.md,
# "Host memory"). vLLM 0.32 keeps no weights and no KV cache in host memory by default: safetensors are
# memory-mapped from the claim (config/load.py, safetensors_load_strategy None: "memory-mapped (lazy)
# loading" off network filesystems), there is no CPU swap space, and cpu_offload_gb and
# kv_offloading_size default to off. What stays is its processes:
VLLM_HOST_PROCESS_GI = 1.0  # one vLLM process (API server, engine core, a TP worker): 0.50-0.58 GiB RSS
# each, measured on the CPU build serving a tiny model (tests/integration/test_vllm_host_memory.py)
VLLM_HOST_CUDA_GI_PER_GPU = 3.0  # estimate, not measured: the CUDA driver context, cuBLAS/NCCL host state
# and pinned staging buffers of each GPU's process (PyTorch's first CUDA use cost 1.1 GB of host memory
# before lazy module loading, pytorch/pytorch#12873; CUDA 11.7+ loads kernels lazily)
VLLM_HOST_TOKENIZER_GI = 1.0  # estimate: the tokenizer (Gemma-2's 256k vocabulary) in the API server and
# xgrammar's tokenizer tables in the engine core
VLLM_HOST_SHM_GI = 1.0  # estimate, TP > 1: vLLM's shared-memory broadcast to its workers and NCCL's
# bootstrap, in the memory-backed /dev/shm (charged to the container)
# Request = factor x the estimate: NRP flags a pod using under 20 % of its memory request (POLICY_SOURCE),
# so the estimate sits at 50 % of the request, and the rule holds for anything from 0.4x to 2.4x the
# estimate (the limit, 1.2x the request, caps the top), start-up peaks included (torch.compile workers,
# CUDA graph capture).
VLLM_HOST_MEMORY_REQUEST_FACTOR = 2.0
DOWNLOAD_CPU_REQUEST = 2.0  # hf_xet/huggingface_hub download threads
DOWNLOAD_MEMORY_REQUEST_GI = 4
VLLM_CPU_LIMIT_RATIO = NRP_LIMIT_TO_REQUEST_MAX_RATIO  # short CPU bursts (tokenizer, scheduler) allowed
STARTUP_PROBE_PERIOD_S = 10
LIVENESS_PROBE_PERIOD_S = 15
LIVENESS_FAILURE_THRESHOLD = 4  # one minute of failed /health before a restart: a busy server answers late
READINESS_PROBE_PERIOD_S = 10
PROBE_TIMEOUT_S = 5
# `pulumi up` waits for each model's weight download Job (image pull and scheduling, then the download
# at an assumed 100 MB/s from huggingface.co into Ceph RBD: an assumption, not a measurement on NRP; a
# slower link makes the download's await time out). With a model's awaitReadiness it also waits for the
# server's first rollout: pull and scheduling, then the load budget.
AWAIT_MARGIN_S = 900
DOWNLOAD_ASSUMED_MB_PER_S = 100
MONITORING_SCRAPE_INTERVAL = "30s"
# Least privilege for the vLLM image (docs/preflight-and-security.md). vllm/vllm-openai keeps USER root
# but ships a `vllm` user, uid 2000, gid 0, HOME /home/vllm, for non-root runs (vLLM's docker/Dockerfile,
# "Non-root support", https://github.com/vllm-project/vllm/pull/40275). A uid missing from the image's
# /etc/passwd fails at import: torch's compile cache calls getpass.getuser().
VLLM_UID = 2000
VLLM_HOME = "/home/vllm"
# With readOnlyRootFilesystem, vLLM, torch.compile, Triton and FlashInfer write their JIT caches under
# $HOME/.cache and /tmp: both are one node-local emptyDir of this size (an estimate of a few GB per
# model, not measured on NRP). The vLLM container requests it as ephemeral storage, so the scheduler
# counts it and the kubelet does not evict the server under node disk pressure.
VLLM_SCRATCH_SIZE_GI = 10
VLLM_SCRATCH_SIZE_LIMIT = f"{VLLM_SCRATCH_SIZE_GI}Gi"
# The Hugging Face token reaches the download as a file (huggingface_hub reads HF_TOKEN_PATH), never as an
# environment variable that `kubectl describe`, crash dumps and child processes would show.
HF_TOKEN_MOUNT = "/var/run/secrets/grace/huggingface"  # noqa: S105 (a mount path, not a credential)
# Always re-resolve the tag at pod start: a re-pushed tag cannot run stale code, and the layers of an
# unchanged image stay cached on the node (only the manifest is fetched).
IMAGE_PULL_POLICY = "Always"
# The job image repository the committed stacks name: a stand-in for the researcher's own NRP GitLab
# project, which `grace preflight` refuses with the command that sets grace:images.job.
PLACEHOLDER_JOB_IMAGE_REPOSITORY = "gitlab-registry.nrp-nautilus.io/grace/grace-job"
# `pulumi.com/replaceUnready: "true"`: the provider replaces a Job whose live object is not Ready (not
# Complete) on the next `pulumi up` (provider/pkg/provider/provider.go, Diff: `metadata.ReplaceUnready`).
REPLACE_UNREADY_ANNOTATION = "pulumi.com/replaceUnready"
# The provider option that updates a ConfigMap's data in place instead of replacing the object
# (provider/pkg/provider/diff.go, forceNewProperties); set as a stack setting for the default provider.
CONFIGMAP_MUTABLE_SETTING = "kubernetes:enableConfigMapMutable"

# Experiment Jobs and the GPU-hour plan (docs/experiment-jobs.md).
JOB_BACKOFF_LIMIT = 3  # the worker resumes from its checkpoint, so a retried pod redoes no finished row
JOB_MODE_JOB_PREFIX = "matrix-"  # job serving mode: `matrix-<model>` runs that model's exp1 and exp2
# A job-mode coder: `extraction-<coder>` codes every model's replies on its own sidecar, created suspended,
# and `resume-extraction-<coder>` (a CPU pod) resumes it once every exp1 file it reads is complete.
EXTRACTION_JOB_PREFIX = "extraction-"
GATE_JOB_PREFIX = "resume-"
GATE_RESUME_CONTAINER_NAME = "resume"
# extract's --wait-for-input inside a Job the gate resumed: its inputs are complete already; the worker
# still checks the file and its plan digest, and gives a shared filesystem a minute to show them.
GATED_INPUT_WAIT_S = 60
# The API server as the gate reaches it: the `kubernetes` Service's port 443, which most CNIs translate to
# the API server's own port (6443 on kubeadm clusters) before a NetworkPolicy sees the packet.
KUBE_API_PORTS = (443, 6443)
NETPOL_GATE_API_EGRESS = "grace-gate-api-egress"
WORKER_CONTAINER_NAME = "worker"
WORKER_UID = 10001  # the non-root user (and its group) of jobs/Dockerfile
WORKER_CPU_LIMIT_RATIO = NRP_LIMIT_TO_REQUEST_MAX_RATIO  # pandas/JSON parsing bursts; memory stays at request
STUDIES_CONTENT_HASH_ANNOTATION = "grace.nrp.io/studies-sha256"  # a prompt change replaces exactly its Jobs
CONFIGMAP_MAX_BYTES = 1024 * 1024  # etcd's object size limit; a ConfigMap's data must stay under it
CONFIGMAP_METADATA_RESERVE_BYTES = 32 * 1024  # labels, annotations, managedFields of the object
PUBLISHED_STUDY_ROWS = {"study1": 300, "study2": 2424}  # rows of the researchers' published CSVs
HOURS_PER_DAY = 24
SECONDS_PER_HOUR = 3600

# Foundation objects (docs/stack.md). Fixed names: people address them with kubectl.
QUOTA_NAME = "grace-quota"
NAMESPACE_LABELS = {"project": PROJECT, "environment": "research"}
NETPOL_DEFAULT_DENY = "grace-default-deny"
NETPOL_MODEL_SERVER_INGRESS = "grace-model-server-ingress"
NETPOL_JOB_EGRESS = "grace-job-egress"
NETPOL_DNS_EGRESS = "grace-dns-egress"
NETPOL_HTTPS_EGRESS = "grace-https-egress"
NETPOL_METRICS_INGRESS = "grace-metrics-ingress"
LABEL_NAMESPACE_NAME = "kubernetes.io/metadata.name"  # set by the API server on every namespace (1.21+)
DNS_PORT = 53
HTTPS_PORT = 443
# Pods carrying this label (value "true") may open HTTPS connections to anywhere: weight downloads
# from Hugging Face, and the external DeepSeek endpoint. Everything else stays inside the namespace.
LABEL_EGRESS_HTTPS = "grace.nrp.io/egress-https"
# GPU memory vLLM needs besides weights and KV cache, per GPU: CUDA context, activations, CUDA graphs,
# NCCL buffers (vLLM profiles it at start-up; 2 GB is a typical measured range of 1-3 GB).
VLLM_RUNTIME_OVERHEAD_GB_PER_GPU = 2.0

# How Jobs and StatefulSets live through repeated `pulumi up`s (see docs/lifecycle.md).
# `pulumi.com/waitFor` replaces the provider's built-in Job/StatefulSet awaiter on create and update
# (provider/pkg/await/await.go, Creation/Update: "Use our built-in await logic only if the user hasn't
# specified any await overrides"), while deletion is still awaited; `pulumi.com/skipAwait` would also
# skip the deletion wait for Jobs and StatefulSets (provider/pkg/metadata/overrides.go,
# allowsSkipAwaitWithDelete), so a replacement under a fixed name would race its own deletion (AlreadyExists).
AWAIT_OVERRIDE_ANNOTATION = "pulumi.com/waitFor"
AWAIT_CREATED_ONLY = "jsonpath={.metadata.uid}"  # set by the API server on create: satisfied at once
WEIGHTS_DOWNLOAD_EXIT_NO_ACCESS = 3  # weights_download.EXIT_NO_ACCESS: the token cannot read the repository
JOB_DEADLINE_SAFETY_FACTOR = 2.0  # speed and load budgets are planning estimates, not measurements
# Job mode: the marker the completeness check writes before the sidecar starts (an emptyDir).
RUN_STATE_VOLUME = "run-state"
RUN_STATE_MOUNT = "/run/grace"
OUTPUTS_COMPLETE_MARKER = "/run/grace/outputs-complete"
OUTPUTS_CHECK_CONTAINER_NAME = contract.CHECK_OUTPUTS_COMMAND  # the container is named after what it runs
# Job mode: the vLLM sidecar's start budget (payloads/server_start.py). Its state and failure marker sit in
# the run-state emptyDir, which outlives the sidecar's restarts but not the pod.
SERVER_START_ATTEMPTS = 3  # failed starts before the Job fails (a bad flag or an OOM fails every time)
SERVER_START_STATE = "/run/grace/server-start.json"
SERVER_START_FAILED_MARKER = "/run/grace/server-start-failed"
SERVER_START_SOURCE_ENV = "GRACE_SERVER_START_SOURCE"
# What bounds one failed start, from the kubelet: the startup probe's window (failureThreshold x
# periodSeconds, at least the load budget), the pod's termination grace period (Kubernetes' default,
# terminationGracePeriodSeconds: 30) for vLLM to stop, and the restart back-off, which doubles from 10 s
# up to MaxContainerBackOff (300 s, pkg/kubelet/apis/config/v1beta1/defaults.go; also the default of the
# kubelet's crashLoopBackOff.maxContainerRestartPeriod under gate KubeletCrashLoopBackOffMax) and applies to
# restartable init containers too.
POD_TERMINATION_GRACE_S = 30
KUBELET_MAX_RESTART_BACKOFF_S = 300

# The GPU-hour plan's serving estimate (planning/workload.py, planning/serving_speed.py).
# Prompt lengths are measured in characters on the real prompts; tokens = characters / CHARS_PER_TOKEN.
# The models' own tokenizers measure 3.25-4.56 characters a token on the study prompts (Gemma-2 on Study 1's
# digit-heavy turns is densest; tests/integration/test_prompt_tokens.py, docs/prompt-tokens.md): the English
# rule of thumb of 4 would undercount Study 1 by up to 19 %, and 3.0 stays under every measured ratio.
CHARS_PER_TOKEN = 3.0
# The chat template's framing of one request (role headers, turn markers, gpt-oss's harmony system
# preamble of about 50 tokens), counted on top of the messages' text.
CHAT_TEMPLATE_TOKENS = 64
# A study whose CSV is read from the input claim has no rows at render time: each placeholder of its
# prompts counts at this many characters (the longest value in either real study CSV is 141).
ASSUMED_FIELD_CHARS = 150
# A study without a study file: each prompt counts at this many characters (the real study prompts
# measure 600 to 750).
ASSUMED_PROMPT_CHARS = 1000
# Share of a GPU's datasheet figures vLLM reaches (planning/serving_speed.py): memory bandwidth while
# generating, dense Tensor Core throughput while reading prompts. Checked against published vLLM
# benchmarks in tests/unit/infra/test_serving_speed.py: the estimate must not be faster than any of them.
DECODE_BANDWIDTH_EFFICIENCY = 0.5
PREFILL_COMPUTE_EFFICIENCY = 0.5
