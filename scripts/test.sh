#!/usr/bin/env bash
# Install everything and run the whole test suite plus the static checks.
# This is the README's second command, and exactly what .ci/run runs.
#   bash scripts/test.sh            every tier: unit, integration, conformance, browser
#   bash scripts/test.sh -m "not conformance"   extra pytest arguments are passed on
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh "test,dev,docs"
sh scripts/install_system_deps.sh
status=0
# pytest exits 5 when it collected no test: that is a failure here like any other.
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests" >&2
fi
.venv/bin/ruff check trio_ws tests examples benchmarks scripts || status=1
.venv/bin/mypy --strict trio_ws || status=1
bash scripts/build_docs.sh || status=1
exit "$status"
