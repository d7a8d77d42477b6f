#!/usr/bin/env bash
# Create .venv (if missing) and install trio_ws with the given extras, quietly.
#   scripts/bootstrap.sh "test,dev,docs"
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python3 -m venv .venv 2>/dev/null || python -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
if [ -n "$extras" ]; then
    spec=".[${extras}]"
else
    spec="."
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec" 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import trio_ws" # fail loudly if the install did not work
