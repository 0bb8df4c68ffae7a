#!/usr/bin/env bash
# Set up .venv with the test extras and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh cpu,test
exec .venv/bin/python -m pytest "$@"
