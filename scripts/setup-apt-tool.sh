#!/usr/bin/env bash
# One Debian package that a test needs on PATH, installed with apt-get: the shared body of
# setup-browser.sh and setup-r.sh.
#
#   bash scripts/setup-apt-tool.sh CALLER COMMAND PACKAGE
#
# Idempotent: does nothing when COMMAND is already on PATH. Installs only as root (CI containers); as
# another user it prints the command to run and exits 0, so setup.sh still succeeds and the test that
# needs COMMAND then skips locally with that reason (with CI set it fails instead).
set -euo pipefail

caller="$1" command="$2" package="$3"
# Its version line: on stdout for chromium (whose wrapper script also writes noise to stderr), on stderr
# for older Rscript.
version() {
    local line
    line="$("$command" --version 2>/dev/null | head -n1)"
    [[ -n "$line" ]] || line="$("$command" --version 2>&1 | tail -n1)"
    echo "${line:-$command}"
}

if command -v "$command" >/dev/null 2>&1; then
    echo "$caller: $(version) already installed"
    exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
    echo "$caller: $command is missing and this is not root; install it with:" \
        "sudo apt-get update && sudo apt-get install -y --no-install-recommends $package" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "$caller: $command is missing and apt-get is not available (a Debian/Ubuntu image is" \
        "expected); install $package by other means." >&2
    exit 0
fi
start=$SECONDS
echo "$caller: installing Debian's $package (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$package" >/dev/null
echo "$caller: $(version) installed in $((SECONDS - start)) s"
