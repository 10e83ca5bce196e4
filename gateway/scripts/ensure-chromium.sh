#!/usr/bin/env bash
# The dashboard's browser test drives Debian's chromium (Playwright cannot fetch its own browser
# here).  Installs it when missing; `make test` and .ci/run call this.  Without root (and without
# sudo) it only says what to run: the test then skips, or fails where a browser is required (CI).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "chromium is not installed; the dashboard's browser test needs it: apt-get install -y chromium" >&2
    exit 0
fi
echo "installing chromium for the dashboard's browser test"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium
