#!/usr/bin/env bash
# GPU check: is this NVIDIA machine ready for gluondet, and how fast is it? Run by hand:
#   bash scripts/gpu_check.sh            (in a checkout with .venv from scripts/setup_env.sh cu112,
#                                         or in the CUDA image, where python3 has gluondet[cu112])
# 1. the GPUs, the driver, and whether the installed MXNet has code for each GPU, read from its
#    libmxnet.so (gluondet.runtime.check_gpu_code, what `--ctx gpuN` checks too): the mxnet-cu112
#    wheel carries machine code for compute capability 5.0, 6.0, 7.0, 8.0, 8.6 and no PTX, so it
#    runs on Maxwell to Ada GPUs and on no Hopper (9.0) or newer: there it stops here, saying so;
#    then whether MXNet runs a convolution on GPU 0 (with cuDNN and with MXNet's own kernels);
# 2. trains the tiny SSD and SSD512 (VGG16) for a few iterations on gpu0 and on all GPUs;
# 3. SSD512 training images/s on gpu0, gluondet against GluonCV's reference loop, same run
#    (scripts/bench/bench_gpu_train.py: legs alternated, clocks stopped after mx.nd.waitall());
# 4. eval and detect on gpu0 and on all GPUs (same mAP expected), fp16 training if --amp exists;
# 5. one summary table. Exit status 0 only if every step passed.
# Without a GPU (no nvidia-smi, no GPU listed, or an MXNet that sees none) it stops at once with a
# message saying which. Whole budget: GPU_CHECK_BUDGET seconds (default 480); each step has a
# time limit of its own, so nothing hangs. Data: generated shapes images; weights: from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."

budget="${GPU_CHECK_BUDGET:-480}"
started=$SECONDS
if [ -x .venv/bin/python ]; then
    py="${PYTHON:-.venv/bin/python}"
else
    py="${PYTHON:-python3}"
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
trap 'rm -rf "$work"' EXIT
log="$work/log.txt"
names=()
results=()
times=()
details=()

say() { printf 'gpu_check: %s\n' "$*"; }
fail_now() {
    say "FAILED: $*" >&2
    exit 1
}
gd() { "$py" -c 'import sys; from gluondet.cli import main; sys.argv[0] = "gluondet"; main()' "$@"; }

# step NAME LIMIT_SECONDS COMMAND...: run with a time limit (never past the budget), keep the output.
step() {
    local name="$1" limit="$2" left start status
    shift 2
    left=$(( budget - (SECONDS - started) ))
    if [ "$left" -lt "$limit" ]; then
        limit="$left"
    fi
    if [ "$limit" -le 5 ]; then
        record "$name" "SKIPPED" 0 "out of the ${budget}s budget"
        return 0
    fi
    say "$name (at most ${limit}s)"
    start=$SECONDS
    status=0
    timeout --kill-after=10 "$limit" "$@" >"$work/step.out" 2>&1 || status=$?
    cat "$work/step.out" >>"$log"
    case "$status" in
        0) record "$name" "ok" $(( SECONDS - start )) "$(tail -n 1 "$work/step.out")" ;;
        124|137) record "$name" "TIMEOUT" $(( SECONDS - start )) "stopped after ${limit}s" ;;
        *) record "$name" "FAILED" $(( SECONDS - start )) "$(grep -v '^[[:space:]]*$' "$work/step.out" | tail -n 1)" ;;
    esac
}
record() {
    names+=("$1")
    results+=("$2")
    times+=("$3")
    details+=("$4")
}
metric() {  # metric RUN COLUMN: that column of the last metrics.csv row
    "$py" -c 'import csv, sys; print(list(csv.DictReader(open(sys.argv[1])))[-1][sys.argv[2]])' \
        "$1/metrics.csv" "$2"
}

# ----------------------------------------------------------------------------- 1. GPUs and driver
command -v nvidia-smi >/dev/null 2>&1 \
    || fail_now "no nvidia-smi on PATH: no NVIDIA driver here, so no GPU to check (run it on a GPU machine, or in the CUDA image with docker run --gpus all)"
gpus="$(timeout 30 nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2>&1)" \
    || fail_now "nvidia-smi failed: $gpus"
[ -n "$gpus" ] || fail_now "nvidia-smi lists no GPU"
cc="$(timeout 30 nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 || true)"
say "GPUs (index, name, driver, memory):"
printf '  %s\n' "$gpus"
say "compute capability of GPU 0: ${cc:-unknown (driver too old to report it)}"
"$py" -c 'import gluondet' 2>/dev/null \
    || fail_now "$py cannot import gluondet: run scripts/setup_env.sh cu112 (or set PYTHON)"
# Read from the library MXNet would load, before MXNet is imported (that needs a working driver).
cat >"$work/gpu_code.py" <<'PY'
import sys

from gluondet.errors import GluondetError
from gluondet.runtime import check_gpu_code, gpu_code, mxnet_library, visible_gpus

library = mxnet_library()
sass, ptx = gpu_code(library) if library else (set(), set())
if not sass and not ptx:
    sys.exit(print(f"{library}: no GPU code at all (a CPU build)"))
listing = lambda archs: ", ".join(f"{major}.{minor}" for major, minor in sorted(archs))  # noqa: E731
print(f"{library}: machine code for compute capability {listing(sass) or 'none'} and "
      + (f"PTX for {listing(ptx)}" if ptx else "no PTX"))
gpus = visible_gpus() or []
try:
    check_gpu_code(range(len(gpus)), library)
except GluondetError as e:
    sys.exit(str(e))
for index, (name, (major, minor)) in enumerate(gpus):
    print(f"gpu{index} {name} (compute capability {major}.{minor}): the installed MXNet has code for it")
PY
say "GPU code in the installed MXNet"
if ! code="$("$py" "$work/gpu_code.py" 2>"$work/gpu_code.err")"; then
    printf '  %s\n' "$code"
    fail_now "$(tail -n 1 "$work/gpu_code.err")"
fi
printf '  %s\n' "$code"

# ----------------------------------------------------------------------------- 2. MXNet on the GPU
cat >"$work/conv_check.py" <<'PY'
"""Can this MXNet run a convolution on GPU 0? Prints what happened, one fact per line."""
import sys
import time

import mxnet as mx

features = mx.runtime.Features()
print(f"mxnet {mx.__version__}, CUDA {'on' if features.is_enabled('CUDA') else 'off'}, "
      f"cuDNN {'on' if features.is_enabled('CUDNN') else 'off'}")
if not features.is_enabled("CUDA"):
    sys.exit("this MXNet is the CPU build: install mxnet-cu112 (scripts/setup_env.sh cu112)")
try:
    count = mx.context.num_gpus()
except mx.base.MXNetError as e:
    sys.exit(f"MXNet cannot reach the GPUs: {str(e).splitlines()[0]}")
if count == 0:
    sys.exit("MXNet sees no GPU (driver too old for CUDA 11.2, or CUDA_VISIBLE_DEVICES hides them)")
print(f"MXNet sees {count} GPU(s)")
ok = False
for cudnn_off in (False, True):
    what = "MXNet's own kernels (cudnn_off)" if cudnn_off else "cuDNN"
    try:
        x = mx.nd.ones((8, 16, 64, 64), ctx=mx.gpu(0))
        w = mx.nd.ones((32, 16, 3, 3), ctx=mx.gpu(0))
        seconds = []
        for _ in range(2):
            start = time.perf_counter()
            y = mx.nd.Convolution(x, w, kernel=(3, 3), num_filter=32, pad=(1, 1), no_bias=True,
                                  cudnn_off=cudnn_off)
            value = float(y[0, 0, 1, 1].asscalar())
            seconds.append(time.perf_counter() - start)
        if abs(value - 144.0) > 1e-3:
            print(f"convolution with {what}: WRONG result {value} (expected 144)")
            continue
        ok = True
        print(f"convolution with {what}: ok, first {seconds[0]:.2f}s, second {seconds[1] * 1000:.1f} ms")
    except mx.base.MXNetError as e:
        first = str(e).strip().splitlines()[-1][:200]
        hint = (" (the wheel has no code this GPU can run: neither machine code nor PTX)"
                if "no kernel image" in first else "")
        print(f"convolution with {what}: FAILED: {first}{hint}")
mx.nd.waitall()
sys.exit(0 if ok else "no convolution ran on GPU 0")
PY
say "MXNet convolution on GPU 0"
if ! conv="$(timeout --kill-after=10 300 "$py" "$work/conv_check.py" 2>&1)"; then
    printf '%s\n' "$conv"
    fail_now "MXNet cannot compute on GPU 0 (see the lines above)"
fi
printf '  %s\n' "$conv"
record "mxnet conv on gpu0" "ok" 0 "$(printf '%s\n' "$conv" | tail -n 1)"

ngpu="$("$py" -c 'import mxnet as mx; print(mx.context.num_gpus())')"
all_gpus="gpu0"
for (( i = 1; i < ngpu; i++ )); do
    all_gpus="$all_gpus,gpu$i"
done
say "all GPUs: $all_gpus"

# ----------------------------------------------------------------------------- 3. training
data="$work/shapes_voc"
gd data synth "$data" --train 128 --val 32 --seed 0 --size 256 >>"$log" 2>&1 \
    || fail_now "gluondet data synth failed (see $log)"
train() {  # train NAME MODEL CTX BATCH ITERS [extra flags]
    local name="$1" model="$2" ctx="$3" batch="$4" iters="$5"
    shift 5
    step "train $name on $ctx" 150 gd train --dataset "$data" --model "$model" --ctx "$ctx" \
        --batch-size "$batch" --epochs 1 --max-iters "$iters" --no-pretrained-base --num-workers 4 \
        --out "$work/runs/$name-${ctx//,/_}" "$@"
    if [ "${results[-1]}" = "ok" ]; then
        details[-1]="$(metric "$work/runs/$name-${ctx//,/_}" images_per_sec) img/s (incl. graph build)"
    fi
}
train tiny tiny_ssd gpu0 32 10
train ssd512 ssd_512_vgg16_atrous gpu0 8 5 --data-shape 512
if [ "$all_gpus" != "gpu0" ]; then
    train tiny tiny_ssd "$all_gpus" $(( 32 * ngpu )) 10
    train ssd512 ssd_512_vgg16_atrous "$all_gpus" $(( 8 * ngpu )) 5 --data-shape 512
fi
if gd train --help 2>/dev/null | grep -q -- '--amp'; then
    train ssd512-fp16 ssd_512_vgg16_atrous gpu0 8 5 --data-shape 512 --amp
else
    record "train ssd512 fp16 (--amp)" "SKIPPED" 0 "this gluondet has no --amp"
fi

step "ssd512 img/s vs GluonCV loop" 180 "$py" scripts/bench/bench_gpu_train.py --ctx gpu0 \
    --model ssd_512_vgg16_atrous --data-shape 512 --batch-size 16 --iters 10 --rounds 2

# ----------------------------------------------------------------------------- 4. eval and detect
run="$work/runs/tiny-gpu0"
if [ -f "$run/last.params" ]; then
    for ctx in gpu0 "$all_gpus"; do
        step "eval on $ctx" 90 gd eval "$run" --which last --split val --ctx "$ctx" \
            --json "$work/eval-${ctx//,/_}.json"
        if [ "${results[-1]}" = "ok" ]; then
            details[-1]="mAP $("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["map"])' \
                "$work/eval-${ctx//,/_}.json")"
        fi
        step "detect on $ctx" 90 gd detect "$data/JPEGImages" --run "$run" --which last --ctx "$ctx" \
            --no-draw --json "$work/detect-${ctx//,/_}.json" -q
        [ "$all_gpus" != "gpu0" ] || break
    done
else
    record "eval / detect" "SKIPPED" 0 "the tiny SSD did not train on gpu0"
fi

# ----------------------------------------------------------------------------- 5. summary
echo
say "summary ($(( SECONDS - started ))s; full output: kept in $log until this script exits)"
printf '%-34s %-8s %6s  %s\n' "step" "result" "sec" "detail"
failed=0
for i in "${!names[@]}"; do
    printf '%-34s %-8s %6s  %s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}" "${details[$i]:0:90}"
    case "${results[$i]}" in
        ok|SKIPPED) ;;
        *) failed=1 ;;
    esac
done
if [ "$failed" -ne 0 ]; then
    cp "$log" "./gpu_check.log" 2>/dev/null && say "output of every step: ./gpu_check.log"
    exit 1
fi
