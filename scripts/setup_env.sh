#!/usr/bin/env bash
# Creates .venv and installs requirements.txt and the project (editable) into it, when they changed.
# Sourced by scripts/test.sh and scripts/demo.sh so both get the same environment.
#   bash scripts/setup_env.sh && source .venv/bin/activate
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/usage.sh"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.requirements.sha256"
wanted="$(cat "$REPO_ROOT/requirements.txt" "$REPO_ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "[setup] installing requirements.txt into $VENV"
    # visdom 0.2.4 ships only as a source archive whose build needs setuptools<81
    # from the environment itself, hence the first step and --no-build-isolation.
    "$VENV/bin/python" -m pip install --quiet --upgrade "pip>=23" "setuptools<81" wheel
    "$VENV/bin/python" -m pip install --quiet --no-build-isolation -r "$REPO_ROOT/requirements.txt"
    echo "[setup] installing the project (editable) into $VENV"
    "$VENV/bin/python" -m pip install -qq --no-build-isolation --no-deps -e "$REPO_ROOT"
    echo "$wanted" > "$stamp"
fi

export PATH="$VENV/bin:$PATH"
