#!/usr/bin/env bash
# Set up .venv and run the demo on the embedded synthetic data (shapes_voc, generated on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh cpu
export GLUONDET_DATA="${GLUONDET_DATA:-$PWD/data}"
.venv/bin/gluondet data stats --dataset shapes_voc
.venv/bin/gluondet data check --dataset shapes_voc
