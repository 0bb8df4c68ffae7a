#!/usr/bin/env bash
# Image check: build docker/Dockerfile.cpu for real and run the demo inside it; check what of the
# CUDA docker/Dockerfile can be checked without its base image and a GPU. Run by .ci/run after the
# tests, and by hand:   bash scripts/image_check.sh
#
# 1. engine: docker where its daemon answers, else podman (IMAGE_CHECK_ENGINE=docker|podman to
#    choose). podman runs with runc when it is installed (crun refuses a mixed cgroup v1/v2
#    hierarchy) and with the file and process limits this shell may raise to (its own defaults can
#    exceed them: "error setting rlimit").
# 2. base: the Dockerfile's FROM image if present or pullable; where no registry answers, made here
#    with debootstrap (Debian minbase of the tag's release, with python3, python3-venv, python3-pip
#    and ca-certificates) and imported under the FROM name, then used with --pull=never.
# 3. build with podman --format docker (OCI format drops the SHELL line, so pipefail), the host's
#    pip configuration (pip config list, PIP_* variables included) and the files it names (CA
#    bundle, local indexes) mounted read-only, PREFETCH_MODELS empty (no model store needed).
# 4. a planted prefetch failure: the same build with PREFETCH_MODELS=vgg16_atrous and no network
#    must fail naming the model (every layer before that step comes from the cache).
# 5. the demo inside, offline (--network none): data synth, train the tiny SSD for a few
#    iterations, eval, detect, export to ONNX and serve that export (one image posted), with /data
#    and /runs mounted from folders owned by uid 1000 (the image's user); every file written there
#    must belong to it.
# 6. CUDA docker/Dockerfile: its lock resolves for its Python and glibc from wheels alone (pip
#    install --dry-run, scripts/lockcheck.py wheels), and its two stages agree on gluoncv, MXNet and
#    numpy (lockcheck.py agree). Its base image (nvidia/cuda) and the GPU are not checked here.
# The image stays (podman run --rm --runtime runc localhost/gluondet:cpu-check --help). The last
# line is one summary. Exit status: 0 all passed, 1 a check failed, 77 this machine cannot build or
# run images (no engine, no root for debootstrap, the runtime refuses): said, not hidden.
# Environment: IMAGE [localhost/gluondet:cpu-check], PYTHON [.venv/bin/python, for lockcheck],
# IMAGE_CHECK_ENGINE, IMAGE_CHECK_KEEP=1 keeps the work folder.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
image="${IMAGE:-localhost/gluondet:cpu-check}"
dockerfile=docker/Dockerfile.cpu
cuda_dockerfile=docker/Dockerfile
py="${PYTHON:-.venv/bin/python}"
work="$(mktemp -d "${TMPDIR:-/tmp}/image_check.XXXXXX")"
if [ -z "${IMAGE_CHECK_KEEP:-}" ]; then
    trap 'rm -rf "$work"' EXIT
fi
summary=()

say() { printf 'image_check: %s\n' "$*"; }
fail() { say "FAILED: $*" >&2; exit 1; }
cannot() { say "CANNOT RUN ON THIS MACHINE: $*" >&2; exit 77; }
last_line() { grep -v '^[[:space:]]*$' "$1" | tail -n 1; }

# ----------------------------------------------------------------------------- 1. engine
engine="${IMAGE_CHECK_ENGINE:-}"
if [ -z "$engine" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        engine=docker
    elif command -v podman >/dev/null; then
        engine=podman
    else
        cannot "no container engine: no docker daemon answers and podman is not installed (Debian: apt-get install podman buildah runc debootstrap)"
    fi
fi
command -v "$engine" >/dev/null || cannot "IMAGE_CHECK_ENGINE=$engine is not installed"
engine_version="$("$engine" --version | head -n 1)"
say "engine: $engine_version"
common=()  # flags for both build and run
if [ "$engine" = podman ]; then
    if command -v runc >/dev/null; then
        common+=(--runtime "$(command -v runc)")
    fi
    for limit in "nofile:$(ulimit -Hn)" "nproc:$(ulimit -Hu)"; do
        value="${limit#*:}"
        if [ "$value" != unlimited ]; then
            [ "${limit%%:*}" != nproc ] || [ "$value" -le 32768 ] || value=32768
            common+=(--ulimit "${limit%%:*}=$value:$value")
        fi
    done
fi

# ----------------------------------------------------------------------------- 2. base image
base="$(sed -n 's/^FROM[[:space:]]\{1,\}\([^[:space:]]\{1,\}\).*/\1/p' "$dockerfile" | head -n 1)"
base_note="present"
if ! "$engine" image inspect "$base" >/dev/null 2>&1; then
    say "base $base: not here, pulling"
    if timeout 600 "$engine" pull "$base" >"$work/pull.log" 2>&1; then
        base_note="pulled"
    else
        say "no registry answers ($(last_line "$work/pull.log" | cut -c1-160)): making the base with debootstrap"
        [ "$(id -u)" = 0 ] || cannot "making the base needs root (debootstrap); pull $base elsewhere and load it"
        command -v debootstrap >/dev/null || cannot "no registry and no debootstrap to make the base (apt-get install debootstrap)"
        suite="$(sed -n 's/.*-\(bookworm\|bullseye\|trixie\)$/\1/p' <<<"$base")"
        [ -n "$suite" ] || fail "cannot tell the Debian release of $base to make it with debootstrap"
        rootfs="$work/rootfs"
        if ! debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
                "$suite" "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1; then
            fail "debootstrap $suite: $(last_line "$work/debootstrap.log")"
        fi
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -c . | "$engine" import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
            --change "LABEL gluondet.base=\"debootstrap --variant=minbase $suite, made by scripts/image_check.sh\"" \
            - "$base" >"$work/import.log" 2>&1 || fail "importing the base: $(last_line "$work/import.log")"
        rm -rf "$rootfs"
        base_note="made here with debootstrap"
    fi
fi
if [ "$base_note" = present ] \
        && [ -n "$("$engine" image inspect --format '{{index .Config.Labels "gluondet.base"}}' "$base" 2>/dev/null)" ]; then
    base_note="present, made here earlier with debootstrap"
fi
if ! "$engine" run --rm "${common[@]}" --pull=never --network none "$base" python3 -c \
        'import sys; print("%d.%d" % sys.version_info[:2])' >"$work/base.out" 2>&1; then
    cannot "$engine cannot run a container here: $(last_line "$work/base.out")"
fi
want_python="$(sed -n 's/^python:\(3\.[0-9]*\).*/\1/p' <<<"${base##*/}")"
if [ -n "$want_python" ] && [ "$(cat "$work/base.out")" != "$want_python" ]; then
    fail "the base $base runs Python $(cat "$work/base.out"), its tag says $want_python"
fi
say "base $base ($base_note): Python $(cat "$work/base.out")"
summary+=("base $base_note")

# ----------------------------------------------------------------------------- 3. build
build=("$engine" build "${common[@]}" -f "$dockerfile")
if [ "$engine" = podman ]; then
    build+=(--format docker --pull=never)
    # How pip reaches its index here: the effective settings (files and PIP_* variables) in one
    # pip.conf, the files they name (CA bundle, constraints) mounted read-only where they are. Local
    # package folders (find-links, file:// indexes) are left out: a container cannot reach them.
    "$py" - "$work/pip.conf" "$work/pip-mounts" "$work/pip-dropped" <<'PY'
import os, subprocess, sys
listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                         text=True, check=True).stdout
settings = {}
for line in listing.splitlines():
    key, _, value = line.partition("=")
    section, _, name = key.rpartition(".")
    if (section if section != ":env:" else "global", name) in settings and section != ":env:":
        continue  # a PIP_* variable beats the files
    settings[("global" if section == ":env:" else section, name)] = value.strip().strip("'\"")
files, dropped = set(), set()
for key, value in list(settings.items()):
    kept = []
    for token in value.split():
        path = token.removeprefix("file://")
        if path.startswith("/") and os.path.isdir(path):
            dropped.add(token)
        else:
            kept.append(token)
            if path.startswith("/") and os.path.isfile(path):
                files.add(path)
    settings[key] = " ".join(kept)
with open(sys.argv[1], "w") as conf:
    for section in sorted({s for s, _ in settings}):
        conf.write(f"[{section}]\n")
        conf.writelines(f"{n} = {v}\n" for (s, n), v in sorted(settings.items()) if s == section and v)
with open(sys.argv[2], "w") as mounts:
    mounts.writelines(f"{p}\n" for p in sorted(files))
with open(sys.argv[3], "w") as out:
    out.write(" ".join(sorted(dropped)))
PY
    build+=(-v "$work/pip.conf:/etc/pip.conf:ro")
    while read -r path; do
        build+=(-v "$path:$path:ro")
    done <"$work/pip-mounts"
    dropped="$(cat "$work/pip-dropped")"
    say "pip in the build: the host's pip settings ($(grep -c '=' "$work/pip.conf")), $(wc -l <"$work/pip-mounts") file(s) they name mounted${dropped:+; left out (local folders): $dropped}"
fi
say "building $image from $dockerfile (PREFETCH_MODELS empty)"
t0=$SECONDS
if ! "${build[@]}" --build-arg PREFETCH_MODELS= -t "$image" . >"$work/build.log" 2>&1; then
    tail -n 30 "$work/build.log" >&2
    fail "the build of $dockerfile failed: $(last_line "$work/build.log")"
fi
build_seconds=$(( SECONDS - t0 ))
say "built in ${build_seconds}s"
summary+=("built in ${build_seconds}s")

# ----------------------------------------------------------------------------- 4. planted prefetch failure
say "planted failure: PREFETCH_MODELS=vgg16_atrous with no network must fail the build, naming it"
if "${build[@]}" --network none --build-arg PREFETCH_MODELS=vgg16_atrous -t "$image-prefetch" . \
        >"$work/prefetch.log" 2>&1; then
    "$engine" rmi "$image-prefetch" >/dev/null 2>&1 || true
    fail "a prefetch that could not download vgg16_atrous did not fail the build"
fi
grep -q "could not fetch the pretrained weights of vgg16_atrous" "$work/prefetch.log" \
    || fail "the failed prefetch build did not name vgg16_atrous: $(last_line "$work/prefetch.log")"
summary+=("failed prefetch names its model")

# ----------------------------------------------------------------------------- 5. the demo inside
mkdir -p "$work/data" "$work/runs"
chown 1000:1000 "$work/data" "$work/runs" 2>/dev/null || chmod 0777 "$work/data" "$work/runs"
run_options=("$engine" run --rm "${common[@]}" --network none -v "$work/data:/data" -v "$work/runs:/runs")
run=("${run_options[@]}" "$image")
demo() {  # demo NAME ARGS...: one gluondet command in the image, its output kept
    local name="$1"
    shift
    say "in the image: gluondet $*"
    if ! "${run[@]}" "$@" >"$work/$name.log" 2>&1; then
        tail -n 20 "$work/$name.log" >&2
        fail "gluondet $name in the image: $(last_line "$work/$name.log")"
    fi
}
# gluondet serve in the image (its loopback: --network none), one image posted once it is ready,
# the answer written to the file named third; then SIGTERM, which it must end on with status 0
# shellcheck disable=SC2016  # expanded by the bash inside the container, not here
serve_script='
gluondet serve "$1" --port 8080 &
server=$!
python - "$2" "$3" <<"PY"
import json, pathlib, sys, time, urllib.request
url = "http://127.0.0.1:8080"
for _ in range(600):
    try:
        if json.load(urllib.request.urlopen(url + "/health"))["status"] == "ready":
            break
    except OSError:  # not listening yet, or 503 while the model loads
        time.sleep(0.2)
image = sorted(pathlib.Path(sys.argv[1]).iterdir())[0]
request = urllib.request.Request(url + "/detect?name=" + image.name, data=image.read_bytes(),
                                 headers={"Content-Type": "image/jpeg"})
pathlib.Path(sys.argv[2]).write_bytes(urllib.request.urlopen(request, timeout=120).read())
PY
posted=$?
kill -TERM "$server"
wait "$server" && exit "$posted"'
t0=$SECONDS
demo version --version
demo synth data synth /data/shapes_voc --train 48 --val 16 --seed 0 --size 128
demo train train --dataset /data/shapes_voc --model tiny_ssd --ctx cpu --epochs 1 --max-iters 6 \
    --batch-size 8 --data-shape 128 --no-pretrained-base --out /runs/demo
demo eval eval /runs/demo --which last --split val --json /runs/demo/eval_val.json
demo detect detect /data/shapes_voc/JPEGImages --run /runs/demo --which last --thresh 0.3 \
    --json /runs/demo/detections.json
# the extras an image user runs: the run exported to ONNX (onnx, onnxruntime) and served (serve)
demo export export /runs/demo --which last --format onnx --out /runs/demo-onnx
say "in the image: gluondet serve /runs/demo-onnx, one image posted to /detect"
if ! "${run_options[@]}" --entrypoint bash "$image" -c "$serve_script" serve /runs/demo-onnx \
        /data/shapes_voc/JPEGImages /runs/served.json >"$work/serve.log" 2>&1; then
    tail -n 20 "$work/serve.log" >&2
    fail "gluondet serve in the image: $(last_line "$work/serve.log")"
fi
for file in runs/demo/last.params runs/demo/metrics.csv runs/demo/eval_val.json runs/demo/detections.json \
        runs/demo-onnx/model.onnx runs/served.json; do
    [ -s "$work/$file" ] || fail "the demo did not write $file on the mounted volume"
done
not_owned="$(find "$work/runs" "$work/data" ! -uid 1000 -print | head -n 3)"
[ -z "$not_owned" ] || fail "files on the volumes not owned by uid 1000 (the image's user): $not_owned"
map="$("$py" -c 'import json, sys; print(round(json.load(open(sys.argv[1]))["map"], 3))' "$work/runs/demo/eval_val.json")"
images="$("$py" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(len(d.get("images", d)))' \
    "$work/runs/demo/detections.json")"
served="$("$py" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d["images"][0]["file"], len(d["images"][0]["boxes"]))' \
    "$work/runs/served.json")" || fail "serve's answer is not a detection document: $(head -c 300 "$work/runs/served.json")"
say "demo done in $(( SECONDS - t0 ))s: $(head -n 1 "$work/version.log"), val mAP $map after 6 iterations (a smoke run), $images images detected; ONNX export served ${served% *}: ${served##* } boxes"
summary+=("demo ran inside offline (synth, 6-iteration train, eval: mAP $map, detect: $images images, ONNX export served; files owned by uid 1000)")

# ----------------------------------------------------------------------------- 6. the CUDA Dockerfile
stage_lock() {  # stage_lock N: the lock file the N-th stage (1-based) of the CUDA Dockerfile copies
    awk -v n="$1" '/^FROM /{stage++} stage==n && /^COPY locks\//{print $2; exit}' "$cuda_dockerfile"
}
weights_python="$(sed -n 's/^FROM python:\(3\.[0-9]*\).* AS .*/\1/p' "$cuda_dockerfile" | head -n 1)"
image_python="$(sed -n 's/.*python\(3\.[0-9]*\) -m venv.*/\1/p' "$cuda_dockerfile" | head -n 1)"
cuda_base="$(awk '/^FROM /{b=$2} END{print b}' "$cuda_dockerfile")"
if [[ "$cuda_base" =~ ^\$\{([A-Z_]+)\}$ ]]; then  # FROM ${CUDA_IMAGE}: the ARG's default
    cuda_base="$(sed -n "s/^ARG ${BASH_REMATCH[1]}=//p" "$cuda_dockerfile" | head -n 1)"
fi
case "$cuda_base" in
    *ubuntu20.04) glibc=2.31 ;;
    *ubuntu22.04) glibc=2.35 ;;
    *ubuntu24.04) glibc=2.39 ;;
    *) fail "cannot tell the glibc of $cuda_base (the CUDA image's base)" ;;
esac
weights_lock="$(stage_lock 1)"
image_lock="$(stage_lock "$(grep -c '^FROM ' "$cuda_dockerfile")")"
[ -n "$weights_python" ] && [ -n "$image_python" ] && [ -n "$weights_lock" ] && [ -n "$image_lock" ] \
    || fail "cannot read the Pythons and locks of the stages of $cuda_dockerfile"
say "CUDA image: $image_lock for Python $image_python on $cuda_base (glibc $glibc), from wheels only"
"$py" scripts/lockcheck.py wheels "$image_lock" --python-version "$image_python.0" --glibc "$glibc" \
    >"$work/cuda.log" 2>&1 || fail "$(cat "$work/cuda.log")"
say "$(cat "$work/cuda.log")"
"$py" scripts/lockcheck.py agree "$weights_lock@$weights_python.0" "$image_lock@$image_python.0" \
    >"$work/agree.log" 2>&1 || fail "$(cat "$work/agree.log")"
say "$(cat "$work/agree.log")"
packages="$(sed -n 's/.*: \([0-9]*\) packages, all from wheels.*/\1/p' "$work/cuda.log")"
summary+=("CUDA Dockerfile: $image_lock resolves for Python $image_python from wheels ($packages packages), its stages agree (base image and GPU not checked)")

joined="$(printf '%s; ' "${summary[@]}")"
say "OK in $(( SECONDS - started ))s with $engine_version: ${joined%; }"
