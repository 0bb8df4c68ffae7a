#!/usr/bin/env bash
# Set up .venv with the test extras and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh cpu,test

# The report page is tested in a real headless Chromium (tests/integration/test_report_page.py):
# Debian's chromium and chromium-driver, installed here when missing and we may (root with apt-get).
if ! command -v chromedriver >/dev/null || ! { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing chromium and chromium-driver (apt-get) for the report page test"
        export DEBIAN_FRONTEND=noninteractive
        if ! { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }; then
            echo "note: apt-get could not install chromium: the browser test of report.html will be skipped"
        fi
    else
        echo "note: no chromium/chromedriver and no root apt-get to install them: the browser test of report.html will be skipped"
    fi
fi
exec .venv/bin/python -m pytest "$@"
