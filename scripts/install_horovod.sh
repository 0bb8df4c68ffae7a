#!/usr/bin/env bash
# Install Horovod for gluondet train --kvstore horovod into a virtualenv (default .venv) that already
# holds MXNet: the version constraints.txt pins ([horovod]), built from source against that MXNet
# (Horovod publishes no wheels), with Gloo for CPUs and, with --gpu, NCCL for GPUs. The build takes
# about 8 minutes on 2 cores; its wheel is kept in a wheel cache beside pip's own cache, so the next
# install (CI, a new .venv) takes seconds.
#
#   scripts/install_horovod.sh                 .venv, Gloo (CPU ranks; what the tests and CI use)
#   scripts/install_horovod.sh --gpu           NCCL too (needs the CUDA toolkit and NCCL headers:
#                                              docker/Dockerfile's HOROVOD=nccl stage has them)
#   scripts/install_horovod.sh --mpi VENV      MPI too, for mpirun/srun (needs an MPI, e.g. Open MPI)
#
# The build flags (Horovod reads them from the environment): HOROVOD_WITH_MXNET=1
# HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1, HOROVOD_WITHOUT_MPI=1
# (HOROVOD_WITH_MPI=1 with --mpi), HOROVOD_GPU_OPERATIONS=NCCL with --gpu; pip wheel
# --no-build-isolation, so that Horovod compiles against the MXNet installed here, with the build
# tools of constraints.txt ([horovod_build]: wheel, cmake; setuptools < 70 is the lock's) put into
# the virtualenv for the build and taken out again: pip freeze stays the lock.
#
# Wheel cache: GLUONDET_WHEEL_CACHE, default <pip cache dir>/gluondet-wheels, one folder per
# (Horovod, Python, MXNet distribution and version, operations); a CI that keeps pip's cache keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."

gpu="" mpi="" venv=".venv"
for arg in "$@"; do
    case "$arg" in
        --gpu) gpu=1 ;;
        --mpi) mpi=1 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        -*) echo "install_horovod: unknown option $arg" >&2; exit 2 ;;
        *) venv="$arg" ;;
    esac
done
py="$venv/bin/python"
die() { echo "install_horovod: $*" >&2; exit 1; }
[ -x "$py" ] || die "no virtualenv at $venv (scripts/setup_env.sh makes .venv)"

pin="$(grep -E '^horovod==' constraints.txt)" || die "constraints.txt pins no horovod"
version="${pin#horovod==}"
# the MXNet Horovod compiles against: its distribution (mxnet or mxnet-cu112) and version
mxnet="$("$py" - <<'PY'
import importlib.metadata as m
for name in ("mxnet", "mxnet-cu112"):
    try:
        print(f"{name}-{m.version(name)}")
        break
    except m.PackageNotFoundError:
        pass
PY
)"
[ -n "$mxnet" ] || die "$venv has no MXNet (mxnet or mxnet-cu112): Horovod builds against it; install the lock first"
python_tag="$("$py" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')"
ops="gloo${gpu:+-nccl}${mpi:+-mpi}"
cache_root="${GLUONDET_WHEEL_CACHE:-}"
if [ -z "$cache_root" ]; then
    pip_cache="$("$py" -m pip cache dir 2>/dev/null || true)"  # fails when pip's cache is off
    cache_root="${pip_cache:-${XDG_CACHE_HOME:-$HOME/.cache}/pip}/gluondet-wheels"
fi
cache="$cache_root/horovod-$version-$python_tag-$mxnet-$ops"

if ! compgen -G "$cache/horovod-$version-*.whl" >/dev/null; then
    echo "install_horovod: building horovod $version against $mxnet ($ops) for $python_tag; about 8 minutes on 2 cores"
    mkdir -p "$cache_root"
    work="$(mktemp -d "$cache_root/.build.XXXXXX")"
    added=()
    cleanup() {
        if [ "${#added[@]}" -gt 0 ]; then
            "$py" -m pip uninstall --quiet --yes "${added[@]}" || true
        fi
        rm -rf "$work"
    }
    trap cleanup EXIT
    for tool in wheel cmake; do  # only what the build adds is taken out again
        "$py" -m pip show --quiet "$tool" >/dev/null 2>&1 || added+=("$tool")
    done
    if [ "${#added[@]}" -gt 0 ]; then
        "$py" -m pip install --quiet -c constraints.txt "${added[@]}"
    fi
    flags=(HOROVOD_WITH_MXNET=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1)
    if [ -n "$mpi" ]; then flags+=(HOROVOD_WITH_MPI=1); else flags+=(HOROVOD_WITHOUT_MPI=1); fi
    if [ -n "$gpu" ]; then flags+=(HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_LINK="${HOROVOD_NCCL_LINK:-STATIC}"); fi
    # the venv's cmake first on PATH; MAKEFLAGS: every core this process may use
    if ! env "${flags[@]}" PATH="$(dirname "$py"):$PATH" MAKEFLAGS="${MAKEFLAGS:--j$(nproc)}" \
            "$py" -m pip wheel --no-deps --no-build-isolation --no-binary horovod -w "$work" \
            "horovod==$version" >"$work/build.log" 2>&1; then
        tail -n 30 "$work/build.log" >&2
        die "building horovod $version failed (the last lines of its log are above)"
    fi
    compgen -G "$work/horovod-$version-*.whl" >/dev/null || die "the build left no wheel in $work"
    mkdir -p "$cache.tmp" && mv "$work"/horovod-*.whl "$cache.tmp/" && mv "$cache.tmp" "$cache"
    echo "install_horovod: built $(basename "$(compgen -G "$cache/horovod-*.whl")") into $cache"
fi

# From the cached wheel (by name and version, so pip freeze says horovod==VERSION), with
# Horovod's dependencies (cloudpickle, psutil, PyYAML, packaging) at constraints.txt's versions.
"$py" -m pip install --quiet -c constraints.txt --find-links "$cache" --only-binary horovod "horovod==$version"
"$py" - "$gpu" "$mpi" <<'PY'
import sys

from PIL import Image  # noqa: F401 -- before Horovod, as gluondet loads it (engine/horovod.py)
import horovod.mxnet as hvd

gpu, mpi = sys.argv[1], sys.argv[2]
built = {"Gloo": hvd.gloo_built(), "NCCL": bool(hvd.nccl_built()), "MPI": hvd.mpi_built()}
missing = [name for name, wanted in (("Gloo", True), ("NCCL", bool(gpu)), ("MPI", bool(mpi))) if wanted and not built[name]]
if missing:
    sys.exit(f"install_horovod: the installed Horovod lacks {', '.join(missing)} (a cached wheel built otherwise?)")
import horovod
print(f"install_horovod: horovod {horovod.__version__} with MXNet: " + ", ".join(n for n, b in built.items() if b))
PY
