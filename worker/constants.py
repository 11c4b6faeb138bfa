"""Every fixed number and name of the worker in one place, each with the reason it has its value.

What the stack must agree on too (environment names, paths, exit codes, the files beside an output, the
metrics port) is in worker/contract.py instead."""

from __future__ import annotations

# CLI defaults. The Job sets all of these explicitly; the defaults suit a laptop against one vLLM server.
DEFAULT_BATCH_SIZE = 64  # requests in flight: enough to fill vLLM's continuous batching on one GPU
DEFAULT_TIMEOUT_S = 120.0  # per attempt; a 7B model writing ~512 tokens under load takes well under this
DEFAULT_MAX_RETRIES = 5
DEFAULT_WAIT_TIMEOUT_S = 600.0  # a Job may start before its model server has loaded its weights
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
# vLLM accepts any key unless started with --api-key; the openai client insists on a non-empty one.
PLACEHOLDER_API_KEY = "EMPTY"

# Seconds a resolved server name is reused; a Service's ClusterIP is stable, a restarted pod's is not.
DNS_CACHE_S = 60

# Retry policy. Exponential backoff with full jitter, capped so a long outage is polled, not abandoned.
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 120.0  # a server asking us to wait longer than this is treated as asking for the cap
# Statuses worth another attempt: timeouts, conflicts, rate limits, and every 5xx (checked separately).
RETRYABLE_STATUSES = frozenset({408, 409, 429})

# Waiting for the server.
HEALTH_POLL_INTERVAL_S = 2.0
HEALTH_PROBE_TIMEOUT_S = 5.0
# While waiting (for the server at the start or in an outage, or for an input file another Job writes)
# one log line this often says what for and how long is left: a vLLM restart on NRP takes minutes
# (weights from Ceph), an Experiment 1 Job hours, and a silent worker looks hung.
WAIT_LOG_INTERVAL_S = 30.0
# HTTP statuses a proxy or a restarting vLLM gives for every request while the server is away; with a
# connection error or an attempt deadline they make the client ask /health whether the server is down.
SERVER_AWAY_STATUSES = frozenset({502, 503, 504})

# Sampling seeds stay below this. vLLM takes `seed` as a signed 64-bit integer, but torch's and numpy's
# generators only take 32 bits on some paths; staying below 2**31 - 1 keeps every seed valid everywhere it
# may be forwarded.
SEED_LIMIT = 2**31 - 1

# Server paths. The OpenAI API lives under /v1; vLLM serves its own endpoints at the root.
HEALTH_PATH = "/health"
VERSION_PATH = "/version"
MODELS_PATH = "/v1/models"
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
COMPLETION_PATHS = frozenset({CHAT_PATH, COMPLETIONS_PATH})  # bodies that must carry `choices`

# Files next to the output CSV, besides the checkpoint and meta file (worker/contract.py).
TEMP_SUFFIX = ".tmp"  # preceded by the writer's pid: `<output>.<pid>.tmp`, never shared by two processes
LOCK_SUFFIX = ".lock"  # flock()ed for the whole run; holds the holder's host, pid and start time
REJECTED_SUFFIX = ".rejected"  # damaged checkpoint lines moved aside, appended, never read back
# How often the checkpoint is fsynced (every line is flushed to the OS at once; this guards node crashes).
CHECKPOINT_SYNC_INTERVAL_S = 0.5

# Progress: a bar on a terminal, else one log line this often (seconds).
PROGRESS_BAR_INTERVAL_S = 0.2
PROGRESS_LOG_INTERVAL_S = 5.0

# Stopping on SIGTERM/SIGINT: rows in flight get this long to finish before they are abandoned. Kubernetes
# waits terminationGracePeriodSeconds (30 s by default) before SIGKILL; flushing and the meta file take
# well under a second, so 5 s leaves most of that period unused and still saves most in-flight answers.
SHUTDOWN_GRACE_S = 5.0

# Waiting for another worker's lock on the same output (--wait-for-lock): how often to try again.
LOCK_POLL_INTERVAL_S = 1.0
