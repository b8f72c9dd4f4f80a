#!/bin/sh
# Install Debian's headless-capable chromium for the report's browser test (tests/test_report.py).
# Idempotent: does nothing when /usr/bin/chromium exists. Needs root (or sudo) and the Debian mirror.
set -eu
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
else
    SUDO=""
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
