#!/usr/bin/env bash
# Create .venv (if missing) and install trio_ws with the given extras, quietly
# (pip's output is shown only if it fails).
#   scripts/bootstrap.sh "test,dev,docs"
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "bootstrap: installing trio_ws${extras:+ [$extras]} into .venv ..."
if ! {
    { [ -x .venv/bin/python ] || python3 -m venv .venv; } &&
        .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip &&
        .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec"
} >"$log" 2>&1; then
    cat "$log" >&2
    echo "bootstrap: installation failed (output above)" >&2
    exit 1
fi
.venv/bin/python -c "import trio_ws" # fail loudly if the install did not work
