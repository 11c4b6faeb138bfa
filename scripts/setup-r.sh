#!/usr/bin/env bash
# Debian's R (r-base-core: Rscript with the base `stats` package), for the test that checks the report's
# statistics (aov, t.test, binom.test) against R itself on the tables `grace results tidy` writes.
#
# Idempotent: does nothing when Rscript is already on PATH. Installs only as root (CI containers); as
# another user it prints the command to run and exits 0, so setup.sh still succeeds and the R test then
# skips locally with that reason (with CI set it fails instead). No CRAN package is installed: the test's
# R script uses base R only (read.csv, aggregate, reshape, aov, t.test, binom.test).
set -euo pipefail

if command -v Rscript >/dev/null 2>&1; then
    echo "setup-r.sh: $(Rscript --version 2>&1 | head -n1) already installed"
    exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
    echo "setup-r.sh: Rscript is missing and this is not root; install it with:" \
        "sudo apt-get update && sudo apt-get install -y --no-install-recommends r-base-core" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-r.sh: Rscript is missing and apt-get is not available (a Debian/Ubuntu image is" \
        "expected); install R by other means." >&2
    exit 0
fi
start=$SECONDS
echo "setup-r.sh: installing Debian's r-base-core (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends r-base-core >/dev/null
echo "setup-r.sh: $(Rscript --version 2>&1 | head -n1) installed in $((SECONDS - start)) s"
