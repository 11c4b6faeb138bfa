"""The weight-download init container's program (runs INSIDE the pinned vLLM image, not here).

`model_server.weights_download_init_container` ships this file's source as `python3 -c <source>`, so it
may import only the standard library and `huggingface_hub` (which the vLLM image already has: nothing
is pip-installed at run time). Tests import it directly with a fake `huggingface_hub`.

Inputs (environment): GRACE_HF_REPO, GRACE_HF_REVISION, GRACE_WEIGHTS_DIR, GRACE_IGNORE_PATTERNS
(comma-separated), HF_TOKEN_PATH (the token file from Secret huggingface-token, read by huggingface_hub
itself; absent for ungated repos), HF_HOME (node-local /tmp, never CephFS).

Exit codes: 0 downloaded or already complete; 3 the token cannot read the repository (gated or private).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

EXIT_NO_ACCESS = 3
MARKER_FILE = ".grace-weights.json"


def marker_matches(weights_dir: Path, repo: str, revision: str) -> bool:
    """True when a previous run finished downloading exactly this repo at this revision."""
    marker = weights_dir / MARKER_FILE
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return bool(
        recorded.get("repo") == repo and recorded.get("revision") == revision and recorded.get("complete")
    )


def write_marker(weights_dir: Path, repo: str, revision: str) -> None:
    """Written last and atomically (rename), so a pod killed mid-download never leaves a 'complete' marker."""
    tmp = weights_dir / f"{MARKER_FILE}.tmp"
    tmp.write_text(json.dumps({"repo": repo, "revision": revision, "complete": True}))
    tmp.replace(weights_dir / MARKER_FILE)


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def no_access_message(repo: str, exc: BaseException) -> str:
    status = _http_status(exc)
    code = f"HTTP {status}" if status else type(exc).__name__
    return (
        f"grace: cannot download {repo} ({code}): the Hugging Face token in secret 'huggingface-token' "
        f"is missing or has no access; accept the licence at https://huggingface.co/{repo} with the "
        f"account that owns the token, then delete this pod to retry."
    )


def download(repo: str, revision: str, weights_dir: Path, ignore_patterns: list[str]) -> int:
    """Download `repo@revision` into `weights_dir` unless already complete; return the exit code."""
    if marker_matches(weights_dir, repo, revision):
        print(f"grace: {repo}@{revision} is already complete in {weights_dir}; skipping the download.")
        return 0
    # Imported here so the marker check above works even where huggingface_hub is absent.
    import huggingface_hub  # noqa: PLC0415
    from huggingface_hub import errors  # noqa: PLC0415

    (weights_dir / MARKER_FILE).unlink(missing_ok=True)  # a different revision is no longer complete
    print(f"grace: downloading {repo}@{revision} into {weights_dir} (skipping {', '.join(ignore_patterns)}).")
    try:
        huggingface_hub.snapshot_download(
            repo_id=repo, revision=revision, local_dir=str(weights_dir), ignore_patterns=ignore_patterns
        )
    except (errors.GatedRepoError, errors.RepositoryNotFoundError) as exc:
        print(no_access_message(repo, exc), file=sys.stderr)
        return EXIT_NO_ACCESS
    except errors.HfHubHTTPError as exc:
        if _http_status(exc) in {401, 403}:
            print(no_access_message(repo, exc), file=sys.stderr)
            return EXIT_NO_ACCESS
        raise
    write_marker(weights_dir, repo, revision)
    print(f"grace: {repo}@{revision} complete.")
    return 0


def main() -> int:
    patterns = [p for p in os.environ.get("GRACE_IGNORE_PATTERNS", "").split(",") if p]
    return download(
        os.environ["GRACE_HF_REPO"],
        os.environ["GRACE_HF_REVISION"],
        Path(os.environ["GRACE_WEIGHTS_DIR"]),
        patterns,
    )


if __name__ == "__main__":
    sys.exit(main())
