#!/usr/bin/env bash
# Create (or reuse) the virtualenv .venv and install gluondet with the pinned stack (constraints.txt).
# Usage: scripts/setup_env.sh [EXTRAS]   (default extras: cpu; the tests use cpu,test)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-cpu}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# mxnet 1.9.1 needs Python 3.8 to 3.11.
.venv/bin/python - <<'PY'
import sys
if not ((3, 8) <= sys.version_info[:2] <= (3, 11)):
    sys.exit(f"gluondet needs Python 3.8 to 3.11 (mxnet 1.9.1); this is {sys.version.split()[0]}. "
             "Set PYTHON=python3.11 and remove .venv.")
PY
.venv/bin/python -m pip install --quiet -c constraints.txt pip  # the pinned installer ([build])
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[${extras}]"
