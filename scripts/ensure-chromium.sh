#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium for the HTML report's browser tests
# (tests/test_report_browser.py, driven by the `playwright` package of the dev group; never
# `playwright install`). Idempotent and quiet: when Chromium is there it does nothing.
# Otherwise it installs the packages `chromium` and `fonts-dejavu-core` (the tests'
# text metrics assume a known sans-serif font) without recommended packages, with
# apt-get as root, or through `sudo -n` when that works. It fails, loudly, when it cannot:
# the browser tests must run, never be skipped.
set -euo pipefail

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
if [ -x /usr/bin/chromium ] && installed fonts-dejavu-core; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "ensure-chromium: /usr/bin/chromium is missing and this user cannot run apt-get;" \
        "install Debian's chromium and fonts-dejavu-core" >&2
    exit 1
fi

echo "ensure-chromium: installing Debian's chromium for the HTML report tests (about 30 s)" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { "${as_root[@]}" apt-get update -qq &&
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "ensure-chromium: apt-get failed (above)" >&2
    exit 1
fi
/usr/bin/chromium --version 2>/dev/null >&2 || true
