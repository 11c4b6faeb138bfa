"""The weight-download Job's program (runs INSIDE the job image, not here).

`download_job.download_container` ships this file's source as `python -c <source>`, so it may import
only the standard library and `huggingface_hub` (jobs/Dockerfile installs it from requirements.txt;
nothing is pip-installed at run time). Tests import it directly with a fake `huggingface_hub`.

Inputs (environment): GRACE_HF_REPO, GRACE_HF_REVISION, GRACE_WEIGHTS_DIR, GRACE_IGNORE_PATTERNS
(comma-separated), GRACE_TIKTOKEN_FILES (comma-separated `name=sha256`, may be empty),
GRACE_TIKTOKEN_BASE_URL, GRACE_TIKTOKEN_DIR, HF_TOKEN_PATH (the token file from Secret
huggingface-token, read by huggingface_hub itself; absent for ungated repos), HF_HOME (node-local /tmp,
never CephFS).

The revision (a branch such as `main`, a tag or a commit) is resolved to its commit SHA first and that
commit is downloaded, so the marker names exactly the files on the claim.

Exit codes: 0 downloaded or already complete; 3 the token cannot read the repository (gated or
private); 4 a vocabulary file does not have its published SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.request
from pathlib import Path

EXIT_NO_ACCESS = 3
EXIT_BAD_VOCABULARY = 4
MARKER_FILE = ".grace-weights.json"  # constants.WEIGHTS_MARKER_FILE (this file imports nothing of ours)
_CHUNK = 1 << 20


def marker_matches(weights_dir: Path, repo: str, revision: str) -> bool:
    """True when a previous run finished downloading exactly this repo at this revision."""
    marker = weights_dir / MARKER_FILE
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return bool(
        recorded.get("repo") == repo
        and recorded.get("revision") == revision
        and recorded.get("commit")
        and recorded.get("complete")
    )


def write_marker(weights_dir: Path, repo: str, revision: str, commit: str) -> None:
    """Written last and atomically (rename), so a pod killed mid-download never leaves a 'complete' marker.

    `commit` is the SHA `revision` resolved to when the files were downloaded: `main` today and `main`
    next month are different checkpoints, and the servers and workers report this one."""
    tmp = weights_dir / f"{MARKER_FILE}.tmp"
    tmp.write_text(json.dumps({"repo": repo, "revision": revision, "commit": commit, "complete": True}))
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
    try:
        commit = huggingface_hub.model_info(repo, revision=revision).sha
        if not commit:  # the Hub names no commit: retried by the Job like any other Hub failure
            raise RuntimeError(f"grace: the Hub returned no commit for {repo}@{revision}")
        print(
            f"grace: downloading {repo}@{revision} (commit {commit}) into {weights_dir} "
            f"(skipping {', '.join(ignore_patterns)})."
        )
        huggingface_hub.snapshot_download(
            repo_id=repo, revision=commit, local_dir=str(weights_dir), ignore_patterns=ignore_patterns
        )
    except (errors.GatedRepoError, errors.RepositoryNotFoundError) as exc:
        print(no_access_message(repo, exc), file=sys.stderr)
        return EXIT_NO_ACCESS
    except errors.HfHubHTTPError as exc:
        if _http_status(exc) in {401, 403}:
            print(no_access_message(repo, exc), file=sys.stderr)
            return EXIT_NO_ACCESS
        raise
    write_marker(weights_dir, repo, revision, commit)
    print(f"grace: {repo}@{revision} (commit {commit}) complete.")
    return 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def stage_vocabularies(files: dict[str, str], base_url: str, target_dir: Path) -> int:
    """Put each tiktoken vocabulary `name` with SHA-256 `files[name]` into `target_dir`; return the exit code.

    vLLM's harmony code (gpt-oss) reads `$TIKTOKEN_ENCODINGS_BASE/<name>` and checks the same SHA-256;
    a file already there with the right hash is kept. Written to a temporary name and renamed, so a
    killed pod never leaves a truncated vocabulary under the real name.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    for name, expected in files.items():
        target = target_dir / name
        if target.is_file() and _sha256(target) == expected:
            print(f"grace: vocabulary {name} is already staged in {target_dir}.")
            continue
        tmp = target_dir / f"{name}.tmp"
        url = f"{base_url}{name}"
        with urllib.request.urlopen(url) as response, tmp.open("wb") as out:  # noqa: S310 (fixed https URL)
            while chunk := response.read(_CHUNK):
                out.write(chunk)
        actual = _sha256(tmp)
        if actual != expected:
            tmp.unlink()
            print(
                f"grace: vocabulary {url} has SHA-256 {actual}, not the published {expected}; "
                "refusing to stage it.",
                file=sys.stderr,
            )
            return EXIT_BAD_VOCABULARY
        tmp.replace(target)
        print(f"grace: vocabulary {name} staged in {target_dir}.")
    return 0


def parse_vocabularies(value: str) -> dict[str, str]:
    """`o200k_base.tiktoken=<sha256>,...` -> {name: sha256}."""
    return dict(item.split("=", 1) for item in value.split(",") if item)


def main() -> int:
    patterns = [p for p in os.environ.get("GRACE_IGNORE_PATTERNS", "").split(",") if p]
    code = download(
        os.environ["GRACE_HF_REPO"],
        os.environ["GRACE_HF_REVISION"],
        Path(os.environ["GRACE_WEIGHTS_DIR"]),
        patterns,
    )
    vocabularies = parse_vocabularies(os.environ.get("GRACE_TIKTOKEN_FILES", ""))
    if code or not vocabularies:
        return code
    return stage_vocabularies(
        vocabularies, os.environ["GRACE_TIKTOKEN_BASE_URL"], Path(os.environ["GRACE_TIKTOKEN_DIR"])
    )


if __name__ == "__main__":
    sys.exit(main())
