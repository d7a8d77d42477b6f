#!/bin/sh
# System packages the test tiers need, installed from Debian when missing:
#   chromium + chromium-driver (browser tier), tinyproxy (client proxy tests),
#   redis-server (scale-out tests). Idempotent; needs root (or sudo) and apt-get.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install_browser.sh
missing=""
command -v tinyproxy >/dev/null 2>&1 || [ -x /usr/bin/tinyproxy ] || [ -x /usr/sbin/tinyproxy ] || missing="$missing tinyproxy"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    exec sudo -n "$0" "$@"
fi
export DEBIAN_FRONTEND=noninteractive
echo "install_system_deps.sh: installing$missing"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# shellcheck disable=SC2086
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install_system_deps.sh: apt-get failed (output above)" >&2
    exit 1
fi
# Debian starts services after install; the tests start their own on free ports.
for svc in tinyproxy redis-server; do
    (service "$svc" stop >/dev/null 2>&1 || true)
done
