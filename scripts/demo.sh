#!/usr/bin/env bash
# Install trio_ws and run the chat demo on http://127.0.0.1:8080 (open it in two tabs).
#   bash scripts/demo.sh [--host H] [--port P]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh ""
exec .venv/bin/python examples/chat_server.py "$@"
