#!/usr/bin/env bash
# The test entry point: sets up .venv like scripts/demo.sh, then runs the whole suite.
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k metrics # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh

# The report test renders a page in headless Chromium (Debian's package).
if ! command -v chromium >/dev/null 2>&1; then
    echo "[test] installing chromium with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

python -m pytest "$@"
