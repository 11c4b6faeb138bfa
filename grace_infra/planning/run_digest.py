"""The plan digest of one worker run: what the deployment planned it with, as one short string.

    digest = sha256(JSON of {"args": the worker's command line, "files": StudyBundle.digest of the
                             study files, schemas and ConfigMap CSVs that run reads})[:16]

The worker records it in its output's meta file (`--plan-digest`); an extraction Job waits until the
exp1 meta file it reads records the digest of the exp1 run planned beside it (`--wait-for-digest`,
worker/run/input_wait.py), so after a prompt edit it never reads the previous experiment's file. A CSV on
the input claim is outside the render's view; the worker's own checkpoint header (input SHA-256)
covers that case.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

__all__ = ["DIGEST_CHARS", "plan_digest"]

DIGEST_CHARS = 16  # 64 bits: a name for one planned run among a handful, not a security boundary


def plan_digest(args: Sequence[str], files_digest: str) -> str:
    payload = json.dumps({"args": list(args), "files": files_digest}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:DIGEST_CHARS]
