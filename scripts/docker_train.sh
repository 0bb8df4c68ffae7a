#!/usr/bin/env bash
# Build the CUDA image, train on two GPUs inside it, then draw detections with the trained run.
#
# Usage: scripts/docker_train.sh [DATA_DIR] [RUNS_DIR]      (defaults: ./data and ./runs)
# DATA_DIR holds the datasets (mounted at /data, e.g. DATA_DIR/helmet_voc); RUNS_DIR receives the
# run folders (mounted at /runs). Both must be writable by uid 1000, the image's user, or set
# DOCKER_USER="$(id -u):$(id -g)".
# Environment overrides (defaults in brackets):
#   IMAGE [gluondet:cu112]   DOCKERFILE [docker/Dockerfile]   SKIP_BUILD [empty: build]
#   PREFETCH_MODELS [vgg16_atrous resnet50_v1b]   GPUS [all]   CTX [gpu0,gpu1]
#   DATASET [helmet_voc]   TRAIN_ARGS [empty]   DETECT_INPUT [/data/$DATASET/JPEGImages]
#   DETECT_ARGS [empty]   MODELS_VOLUME [gluondet-models]   DOCKER_USER [the image's user]
set -euo pipefail
cd "$(dirname "$0")/.."

data_dir="$(realpath -m "${1:-${DATA_DIR:-$PWD/data}}")"
runs_dir="$(realpath -m "${2:-${RUNS_DIR:-$PWD/runs}}")"
image="${IMAGE:-gluondet:cu112}"
dockerfile="${DOCKERFILE:-docker/Dockerfile}"
dataset="${DATASET:-helmet_voc}"
ctx="${CTX:-gpu0,gpu1}"
read -r -a train_args <<< "${TRAIN_ARGS:-}"
read -r -a detect_args <<< "${DETECT_ARGS:-}"
detect_input="${DETECT_INPUT:-/data/$dataset/JPEGImages}"
mkdir -p "$data_dir" "$runs_dir"

if [ -z "${SKIP_BUILD:-}" ]; then
    docker build -f "$dockerfile" \
        --build-arg PREFETCH_MODELS="${PREFETCH_MODELS-vgg16_atrous resnet50_v1b}" \
        -t "$image" .
fi

# --shm-size: MXNet's DataLoader workers pass batches through shared memory (Docker gives 64 MB).
# A named volume for /models keeps pretrained weights fetched once across containers.
run=(docker run --rm --gpus "${GPUS:-all}" --shm-size 2g
     -v "$data_dir:/data" -v "$runs_dir:/runs" -v "${MODELS_VOLUME:-gluondet-models}:/models")
if [ -n "${DOCKER_USER:-}" ]; then
    run+=(--user "$DOCKER_USER")
fi

"${run[@]}" "$image" train --ctx "$ctx" --dataset "$dataset" "${train_args[@]}"
"${run[@]}" "$image" detect "${detect_args[@]}" "$detect_input"
