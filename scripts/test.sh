#!/usr/bin/env bash
# The test entry point: sets up .venv like scripts/demo.sh, then runs the whole suite.
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k metrics # extra arguments go to pytest (-n 0: one process)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/usage.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh

# The report test renders a page in headless Chromium (Debian's package).
if ! command -v chromium >/dev/null 2>&1; then
    echo "[test] installing chromium with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# one worker process per core (at most 4), one torch thread each: the tiny test models gain nothing from more
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
python -m pytest --numprocesses auto --maxprocesses 4 --dist loadfile "$@"
