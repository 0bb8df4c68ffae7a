#!/usr/bin/env bash
# Refresh the locks: locks/<install>.txt holds the whole transitive set of one supported install,
# every package at one version: cpu or cu112 with any of the extras horovod, onnx, serve, tensorboard and test
# (locks/cpu+test.txt is what scripts/setup_env.sh cpu,test and CI install; locks/cpu+onnx+serve.txt
# the CPU image; locks/cu112+onnx+serve.txt the CUDA image). uv resolves them from setup.py, which reads its direct
# pins from constraints.txt: versions are chosen there, and only there.
#
#   scripts/lock.sh                          after editing constraints.txt: keeps every locked
#                                            version that still fits, changes only what must
#   scripts/lock.sh --upgrade                every unpinned dependency to its newest release
#   scripts/lock.sh --upgrade-package NAME   that one (repeatable)
#   scripts/lock.sh --check                  exit 1 if the locks are not what this would write
#
# Each lock is universal over the Pythons gluondet supports (3.9, the CUDA image's, to 3.11) on Linux
# x86_64 (locks/pyproject.toml): where a dependency's newest fitting release differs by Python, the
# lock holds one line for each with a marker (pip picks the line for the Python it runs). Wheels
# only: pip must install each full lock for Python 3.9, 3.10 and 3.11 without building anything
# (scripts/lockcheck.py wheels), as the images do; but for horovod, which publishes no wheels and
# which scripts/install_horovod.sh builds (scripts/setup_env.sh runs it; its dependencies are
# wheels of the lock). Its metadata depends on the build's environment (cffi unless
# HOROVOD_WITHOUT_PYTORCH): it is resolved as installed, without PyTorch. The two full locks (all extras) are resolved
# first, cu112's constrained by cpu's, and every other lock is constrained by its full one, so a
# package has the same version (for a given Python) in every lock and both images. uv comes from constraints.txt's [lock] section, in a virtualenv of
# its own (LOCK_TOOLS, default ~/.cache/gluondet/lock-tools), never in the project's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

min_python=3.9  # the CUDA image's Python, and the oldest the pins admit (scipy 1.11.4 needs 3.9)
accelerators=(cpu cu112)
extras=(horovod onnx serve tensorboard test)  # sorted: the order setup_env.sh names a lock in
built=(horovod)  # built from source by scripts/install_horovod.sh, not installed from a wheel
export HOROVOD_WITHOUT_PYTORCH=1  # as scripts/install_horovod.sh builds it: no cffi in its requirements

tools="${LOCK_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/gluondet/lock-tools}"
uv_pin="$(grep -E '^uv==' constraints.txt)"
if [ "$("$tools/bin/uv" --version 2>/dev/null | cut -d' ' -f2)" != "${uv_pin#uv==}" ]; then
    echo "lock: installing $uv_pin into $tools"
    "${PYTHON:-python3}" -m venv "$tools"
    "$tools/bin/python" -m pip install --quiet -c constraints.txt uv
fi
uv="$tools/bin/uv"
# Resolution needs no Python 3.9 here (universal resolution reads metadata); gluondet's own
# setup.py is run for its metadata by the tool venv's Python. No interpreter downloads.
export UV_PYTHON_DOWNLOADS=never UV_PYTHON="$tools/bin/python"

out=locks
check=""
uv_args=()
for arg in "$@"; do
    case "$arg" in
        --check) check=1 ;;
        *) uv_args+=("$arg") ;;
    esac
done
if [ -n "$check" ]; then
    out="$(mktemp -d)"
    cp locks/*.txt "$out/"  # the locked versions are uv's preferences
fi
mkdir -p "$out"

if [ -n "$check" ]; then
    trap 'rm -rf "$out"' EXIT
fi

# compile NAME EXTRA... [-- EXTRA UV ARGS]: write $out/NAME.txt
compile() {
    local name="$1" uv_extra=() extra_args=()
    shift
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        uv_extra+=(--extra "$1")
        shift
    done
    [ $# -eq 0 ] || { shift; extra_args=("$@"); }
    "$uv" pip compile --quiet --project locks setup.py locks/installer.in "${uv_extra[@]}" \
        -c constraints.txt "${extra_args[@]}" \
        --universal --python-version "$min_python" \
        --custom-compile-command "scripts/lock.sh" -o "$out/$name.txt"
}

full() { local IFS=+; echo "$1+${extras[*]}"; }
compile "$(full cpu)" cpu "${extras[@]}" -- "${uv_args[@]}"
compile "$(full cu112)" cu112 "${extras[@]}" -- -c "$out/$(full cpu).txt" "${uv_args[@]}"
for accel in "${accelerators[@]}"; do
    for (( mask = 0; mask < (1 << ${#extras[@]}) - 1; mask++ )); do
        name="$accel"
        chosen=()
        for i in "${!extras[@]}"; do
            if (( mask & (1 << i) )); then
                name="$name+${extras[$i]}"
                chosen+=("${extras[$i]}")
            fi
        done
        compile "$name" "$accel" "${chosen[@]}" -- -c "$out/$(full "$accel").txt"
    done
done

# Wheels only: for each Python, pip must install the full locks (every other lock is a part of
# one) from wheels alone, on manylinux up to glibc 2.31 (Ubuntu 20.04, the CUDA image's base).
for accel in "${accelerators[@]}"; do
    for python in 3.9.5 3.10.12 3.11.2; do
        "$tools/bin/python" scripts/lockcheck.py wheels "$out/$(full "$accel").txt" \
            --python-version "$python" --glibc 2.31 --built "${built[@]}"
    done
done

if [ -n "$check" ]; then
    # the requirement lines, not the annotations (which name the temporary folder's files)
    stale=0
    for name in $( (cd locks && ls -- *.txt; cd "$out" && ls -- *.txt) | sort -u); do
        if ! diff -u --label "locks/$name" --label "fresh $name" <(grep -v '^ *#' "locks/$name" 2>/dev/null) \
                <(grep -v '^ *#' "$out/$name" 2>/dev/null); then
            stale=1
        fi
    done
    if [ "$stale" -ne 0 ]; then
        echo "lock: locks/ is not what scripts/lock.sh writes now (see the diff above): run scripts/lock.sh" >&2
        exit 1
    fi
    echo "lock: locks/ is up to date ($(find locks -name "*.txt" | wc -l) locks)"
else
    echo "lock: wrote $(find "$out" -name "*.txt" | wc -l) locks in $out/"
fi
