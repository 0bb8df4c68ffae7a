"""Checks of the locks (locks/*.txt, written by scripts/lock.sh), run by scripts/setup_env.sh,
scripts/lock.sh, scripts/image_check.sh and the tests:

  lockcheck.py installed LOCK [--python EXE] [--allow-extra]
      ``pip freeze`` of that Python (default: this one) equals the lock's lines for it: every locked
      package at its version and nothing else (gluondet's own editable install aside).
  lockcheck.py wheels LOCK --python-version 3.9.5 [--glibc 2.31] [--built NAME ...]
      pip resolves the lock's lines for that Python on manylinux x86_64 up to that glibc from wheels
      alone (``pip install --dry-run --only-binary :all:``, metadata only) and would install exactly
      them: the set is complete, consistent and installable without building anything, but for
      the --built packages, which a script of ours builds (horovod: scripts/install_horovod.sh) and
      which are left out of pip's resolution (their own dependencies are lines of the lock).
  lockcheck.py agree LOCK@PYTHON LOCK@PYTHON
      two installs (the CUDA image's weights stage and its image) have the same gluoncv, MXNet and
      numpy, so weights fetched by one load in the other; other differences are listed.

A lock is universal over Python versions: a line applies where its marker holds, evaluated here for
the target Python (pip's --python-version does not change how pip reads markers, so the lines
for the target are chosen here and handed to pip as plain pins).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # a Python with pip but not packaging (a fresh venv): pip carries a copy
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

# the packages whose versions must match across the two stages of docker/Dockerfile
SAME_ACROSS_STAGES = ("gluoncv", "mxnet", "numpy")


def read_lock(path):
    """The lock's requirements (Requirement objects), comments and annotations dropped."""
    reqs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                reqs.append(Requirement(line))
    return reqs


def environment(python_full_version=None):
    """Marker environment of this interpreter, or of CPython ``python_full_version`` on Linux x86_64."""
    if python_full_version is None:
        return default_environment()
    major_minor = ".".join(python_full_version.split(".")[:2])
    return {"python_version": major_minor, "python_full_version": python_full_version,
            "implementation_name": "cpython", "implementation_version": python_full_version,
            "platform_python_implementation": "CPython", "os_name": "posix", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "platform_release": "",
            "platform_version": "", "extra": ""}


def pins(path, env):
    """{canonical name: version} of the lock's lines that apply in ``env``."""
    chosen = {}
    for req in read_lock(path):
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        (spec,) = req.specifier  # a lock line is name==version
        name = canonicalize_name(req.name)
        if name in chosen:
            sys.exit(f"{path}: {req.name} has two lines for Python {env['python_full_version']}")
        chosen[name] = spec.version
    return chosen


def compare(locked, found):
    """(missing or wrong-version lines, extra lines) between two {name: version} maps."""
    wrong = [f"{n}: locked {v}, found {found.get(n, 'nothing')}" for n, v in sorted(locked.items())
             if found.get(n) != v]
    extra = [f"{n}=={v}" for n, v in sorted(found.items()) if n not in locked]
    return wrong, extra


def freeze(python):
    """{canonical name: version} from ``pip freeze --all`` of ``python`` (editable installs left out)."""
    out = subprocess.run([python, "-m", "pip", "freeze", "--all", "--exclude-editable"], check=True,
                         capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            found[canonicalize_name(name)] = version.strip()
    return found


def python_env(python):
    code = "import json, platform; print(json.dumps(platform.python_version()))"
    version = json.loads(subprocess.run([python, "-c", code], check=True, capture_output=True,
                                        text=True).stdout)
    return environment() if python == sys.executable else environment(version)


def cmd_installed(args):
    locked = pins(args.lock, python_env(args.python))
    if not locked:
        print(f"lockcheck: no line of {args.lock} is for this platform (the locks are for Linux x86_64)")
        return 1
    wrong, extra = compare(locked, freeze(args.python))
    for line in wrong:
        print(f"lockcheck: {line}")
    if extra:
        print(f"lockcheck: installed but not in {args.lock}: {' '.join(extra)}"
              + (" (left alone; a fresh .venv has none)" if args.allow_extra
                 else " (pip uninstall them, or make the virtualenv afresh from the lock)"))
    if wrong or (extra and not args.allow_extra):
        return 1
    print(f"lockcheck: {args.python}: pip freeze is {args.lock} ({len(locked)} packages)")
    return 0


def manylinux_platforms(glibc):
    """pip --platform tags a manylinux x86_64 system with this glibc accepts, newest first."""
    major, minor = (int(x) for x in glibc.split("."))
    tags = [f"manylinux_{major}_{m}_x86_64" for m in range(minor, 4, -1)]
    return tags + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]


def cmd_wheels(args):
    built = {canonicalize_name(name) for name in args.built}
    locked = {n: v for n, v in pins(args.lock, environment(args.python_version)).items() if n not in built}
    abi = "cp" + "".join(args.python_version.split(".")[:2])
    with tempfile.TemporaryDirectory() as tmp:
        reqs = os.path.join(tmp, "requirements.txt")
        with open(reqs, "w", encoding="utf-8") as f:
            f.writelines(f"{n}=={v}\n" for n, v in sorted(locked.items()))
        report = os.path.join(tmp, "report.json")
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
                   "--only-binary", ":all:", "--python-version", args.python_version,
                   "--implementation", "cp", "--abi", abi, "--target", os.path.join(tmp, "target"),
                   "--report", report, "-r", reqs]
        for tag in manylinux_platforms(args.glibc):
            command += ["--platform", tag]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            errors = [ln for ln in result.stderr.splitlines() if ln.startswith("ERROR")]
            print(f"lockcheck: {args.lock} for Python {args.python_version}, glibc {args.glibc}: "
                  f"pip cannot install it from wheels: {' '.join(errors[-2:]) or result.stderr[-500:]}")
            return 1
        with open(report, encoding="utf-8") as f:
            chosen = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
                      for i in json.load(f)["install"]}
    wrong, extra = compare(locked, chosen)
    if wrong or extra:
        print(f"lockcheck: {args.lock} for Python {args.python_version}: pip would install "
              f"{'; '.join(wrong + ['also ' + e for e in extra])}")
        return 1
    print(f"lockcheck: {args.lock} for Python {args.python_version} on manylinux x86_64 (glibc "
          f"{args.glibc}): {len(locked)} packages, all from wheels, exactly as locked")
    return 0


def cmd_agree(args):
    sides = []
    for spec in (args.first, args.second):
        path, _, version = spec.rpartition("@")
        found = pins(path, environment(version))
        if "mxnet-cu112" in found:  # the same MXNet release, built with CUDA
            found["mxnet"] = found.pop("mxnet-cu112")
        sides.append((spec, found))
    (name_a, a), (name_b, b) = sides
    differ = [f"{n} {a[n]} / {b[n]}" for n in sorted(set(a) & set(b)) if a[n] != b[n]]
    bad = [n for n in SAME_ACROSS_STAGES if a.get(n) is None or a.get(n) != b.get(n)]
    if bad:
        print(f"lockcheck: {name_a} and {name_b} disagree on {', '.join(bad)}: "
              + ", ".join(f"{n} {a.get(n)} / {b.get(n)}" for n in bad))
        return 1
    print(f"lockcheck: {name_a} and {name_b} agree on "
          + ", ".join(f"{n} {a[n]}" for n in SAME_ACROSS_STAGES)
          + (f"; they differ, by Python, on {', '.join(differ)}" if differ else "; and on all else"))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("installed")
    p.add_argument("lock")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--allow-extra", action="store_true")
    p.set_defaults(run=cmd_installed)
    p = sub.add_parser("wheels")
    p.add_argument("lock")
    p.add_argument("--python-version", required=True)
    p.add_argument("--glibc", default="2.31", help="oldest glibc to support (Ubuntu 20.04: 2.31)")
    p.add_argument("--built", nargs="*", default=[], metavar="NAME",
                   help="packages built from source by a script of ours, not resolved from wheels")
    p.set_defaults(run=cmd_wheels)
    p = sub.add_parser("agree")
    p.add_argument("first")
    p.add_argument("second")
    p.set_defaults(run=cmd_agree)
    args = parser.parse_args(argv)
    if getattr(args, "python_version", None) and not re.fullmatch(r"3\.\d+\.\d+", args.python_version):
        parser.error("--python-version: give it in full, such as 3.9.5")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
