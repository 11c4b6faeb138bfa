#!/usr/bin/env bash
# Debian's R (r-base-core: Rscript with the base `stats` package), for the test that checks the report's
# statistics (aov, t.test, binom.test) against R itself on the tables `grace results tidy` writes. No CRAN
# package: the test's R script uses base R only. Installs as root only and does nothing when Rscript is
# on PATH (setup-apt-tool.sh says how).
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/setup-apt-tool.sh" setup-r.sh Rscript r-base-core
