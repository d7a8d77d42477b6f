#!/usr/bin/env bash
# Build the HTML documentation into docs/_build/html; any Sphinx warning fails the build.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html
