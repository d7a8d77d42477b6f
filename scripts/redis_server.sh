#!/bin/sh
# A throw-away Redis for trying the scale-out examples: no persistence, 127.0.0.1 only,
# in the foreground (Ctrl-C stops it).
#   sh scripts/redis_server.sh [PORT]        # default 6379
# Then: python examples/chat_hub.py --workers 2 --redis redis://127.0.0.1:PORT
# scripts/install_system_deps.sh installs redis-server (Debian package) when it is missing.
set -eu
port="${1:-6379}"
if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server not found: run scripts/install_system_deps.sh (needs root)" >&2
    exit 1
fi
exec redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no
