#!/usr/bin/env bash
# Create (or reuse) the virtualenv .venv and install gluondet with every dependency at the version
# its lock holds: locks/<extras>.txt, the whole transitive set (scripts/lock.sh writes the locks
# from constraints.txt, the one place versions are chosen).
# Usage: scripts/setup_env.sh [EXTRAS]   (default: cpu; the tests use cpu,test)
#   EXTRAS: cpu or cu112, plus any of horovod, onnx, serve, tensorboard, test, comma-separated
#   (cpu,test installs locks/cpu+test.txt; cu112,tensorboard locks/cu112+tensorboard.txt)
# A lock that holds horovod (the horovod and test extras) gets it from scripts/install_horovod.sh,
# built against the MXNet just installed (about 8 minutes the first time, then from its wheel cache;
# NCCL too for cu112).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-cpu}"
python="${PYTHON:-python3}"

die() {
    echo "setup_env: $*" >&2
    exit 1
}

# The lock of these extras: the accelerator, then the other extras sorted, joined by '+'.
accel=""
others=()
IFS=, read -r -a wanted <<<"$extras"
for extra in "${wanted[@]}"; do
    case "$extra" in
        cpu|cu112)
            [ -z "$accel" ] || [ "$accel" = "$extra" ] || die "choose one of cpu and cu112, not both"
            accel="$extra" ;;
        horovod|onnx|serve|tensorboard|test) others+=("$extra") ;;
        *) die "unknown extra '$extra': use cpu or cu112, plus any of horovod, onnx, serve, tensorboard, test" ;;
    esac
done
[ -n "$accel" ] || die "'$extras' names no MXNet: add cpu (or cu112 on a CUDA 11.2 machine)"
lock="locks/$accel"
while read -r extra; do
    lock="$lock+$extra"
done < <(printf '%s\n' "${others[@]}" | sort -u | grep -v '^$' || true)
lock="$lock.txt"
[ -f "$lock" ] || die "no $lock: run scripts/lock.sh"
[ "$(uname -sm)" = "Linux x86_64" ] \
    || die "the locks are for Linux x86_64 (mxnet-cu112 and the images are); this is $(uname -sm)"

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# mxnet 1.9.1 needs Python 3.11 at most; the locked scipy 1.11.4 needs 3.9 at least.
.venv/bin/python - <<'PY'
import sys
if not ((3, 9) <= sys.version_info[:2] <= (3, 11)):
    sys.exit(f"gluondet needs Python 3.9 to 3.11 (mxnet 1.9.1, scipy 1.11); this is {sys.version.split()[0]}. "
             "Set PYTHON=python3.11 and remove .venv.")
PY
.venv/bin/python -m pip install --quiet -c "$lock" pip   # the locked installer first
# every dependency, as locked; horovod (no wheels) after, built against the MXNet installed here
without_horovod="$(mktemp)"
trap 'rm -f "$without_horovod"' EXIT
grep -v '^horovod==' "$lock" >"$without_horovod"
.venv/bin/python -m pip install --quiet -r "$without_horovod"
if grep -q '^horovod==' "$lock"; then
    if [ "$accel" = cu112 ]; then
        bash scripts/install_horovod.sh --gpu .venv   # NCCL: needs the CUDA toolkit and NCCL headers
    else
        bash scripts/install_horovod.sh .venv
    fi
fi
.venv/bin/python -m pip install --quiet --no-deps -e .   # gluondet itself, adding nothing
echo "$lock" >.venv/gluondet-lock                        # which lock this .venv holds (tests read it)
# pip freeze must now be the lock; a package an earlier set-up added is named, and left alone.
.venv/bin/python scripts/lockcheck.py installed "$lock" --allow-extra
