#!/usr/bin/env bash
# Debian's chromium, for the tests that open `grace results report` in a real headless browser.
# Installs as root only and does nothing when chromium is on PATH (setup-apt-tool.sh says how).
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/setup-apt-tool.sh" setup-browser.sh chromium chromium
