#!/usr/bin/env bash
# Debian's chromium, for the test that opens `grace results report` in a real headless browser.
#
# Idempotent: does nothing when chromium is already on PATH. Installs only as root (CI containers);
# as another user it prints the command to run and exits 0, so setup.sh still succeeds and the
# browser test then skips locally with that reason (with CI set it fails instead).
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "setup-browser.sh: $(chromium --version 2>/dev/null || echo chromium) already installed"
    exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
    echo "setup-browser.sh: chromium is missing and this is not root; install it with:" \
        "sudo apt-get update && sudo apt-get install -y chromium" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-browser.sh: chromium is missing and apt-get is not available (a Debian/Ubuntu image is" \
        "expected); install chromium by other means." >&2
    exit 0
fi
start=$SECONDS
echo "setup-browser.sh: installing Debian's chromium (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "setup-browser.sh: $(chromium --version) installed in $((SECONDS - start)) s"
