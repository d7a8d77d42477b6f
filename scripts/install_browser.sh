#!/bin/sh
# Install the headless browser the browser test tier drives (tests/test_browser_chat.py):
# Debian's chromium and the matching chromium-driver. Idempotent: does nothing when both
# /usr/bin/chromium and /usr/bin/chromedriver already exist. Needs root (or sudo) and apt.
#
#   scripts/install_browser.sh
#
# Selenium is told to use /usr/bin/chromedriver explicitly, so Selenium Manager never
# tries to download a driver.
set -eu

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -n "$0" "$@"
    fi
    echo "install_browser.sh: must run as root (or with sudo) to apt-get install chromium" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: apt-get not found; install chromium and chromedriver by hand" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "install_browser.sh: installing chromium and chromium-driver with apt-get..."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# fonts-dejavu-core: readable text in screenshots (docs/images/chat.png).
if ! { apt-get update -qq &&
    apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver fonts-dejavu-core; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install_browser.sh: apt-get failed (output above)" >&2
    exit 1
fi

for binary in /usr/bin/chromium /usr/bin/chromedriver; do
    if [ ! -x "$binary" ]; then
        echo "install_browser.sh: $binary still missing after apt-get install" >&2
        exit 1
    fi
done
echo "install_browser.sh: $(/usr/bin/chromium --version 2>/dev/null || echo chromium installed)"
