#!/usr/bin/env bash
# Set up .venv with the test extras and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
# The test lock holds Horovod: setup_env.sh builds it the first time (scripts/install_horovod.sh, about
# 8 minutes on 2 cores) and keeps the wheel in pip's cache folder, so a CI that keeps ~/.cache/pip
# installs it in seconds; tests/integration/test_horovod.py says why it skips where it is missing.
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
