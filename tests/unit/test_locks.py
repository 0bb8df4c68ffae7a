"""The locks (locks/*.txt, written by scripts/lock.sh; checked by scripts/lockcheck.py).

The reference for "installed from the lock" is pip itself: ``pip freeze`` of the virtualenv these
tests run in, which scripts/setup_env.sh made from a lock, must be that lock, line for line.
Resolving again (scripts/lock.sh --check) and the wheels check need the package index, so they are
not tests: scripts/lock.sh runs them, and scripts/image_check.sh checks the CUDA image's lock.
"""
import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKCHECK = ROOT / "scripts" / "lockcheck.py"
LOCKS = ROOT / "locks"
ACCELERATORS = ("cpu", "cu112")
EXTRAS = ("horovod", "onnx", "serve", "tensorboard", "test")
PYTHONS = ("3.9.5", "3.10.12", "3.11.2")  # the universal locks' range, as scripts/lock.sh checks it

sys.path.insert(0, str(LOCKCHECK.parent))
import lockcheck  # noqa: E402


def constraint_sections():
    """{section: {name: version}} of constraints.txt (the '# [name]' headers setup.py reads)."""
    sections, current = {}, None
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        header = re.match(r"#\s*\[(\w+)\]", line.strip())
        if header:
            current = sections.setdefault(header.group(1), {})
        elif line.strip() and not line.lstrip().startswith("#"):
            name, version = line.split("==")
            current[canonicalize_name(name)] = version.strip()
    return sections


def all_installs():
    for accel in ACCELERATORS:
        for n in range(len(EXTRAS) + 1):
            for chosen in itertools.combinations(EXTRAS, n):
                yield accel, chosen, LOCKS / ("+".join((accel, *chosen)) + ".txt")


def lock_pins(path, python):
    return lockcheck.pins(path, lockcheck.environment(python))


def run_lockcheck(*args):
    return subprocess.run([sys.executable, str(LOCKCHECK), *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_this_virtualenv_holds_exactly_its_lock():
    # scripts/setup_env.sh records the lock it installed; a .venv made before that holds cpu+test
    marker = Path(sys.prefix) / "gluondet-lock"
    lock = ROOT / (marker.read_text().strip() if marker.exists() else "locks/cpu+test.txt")
    result = run_lockcheck("installed", lock)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"pip freeze is {lock}" in result.stdout


def test_a_version_or_package_off_the_lock_is_named(tmp_path):
    lock = ROOT / "locks" / "cpu+test.txt"
    text = lock.read_text()
    changed = tmp_path / "changed.txt"
    changed.write_text(text.replace("\nnumpy==1.23.5 ", "\nnumpy==1.23.4 "))
    result = run_lockcheck("installed", changed)
    assert result.returncode == 1 and "numpy: locked 1.23.4, found 1.23.5" in result.stdout
    fewer = tmp_path / "fewer.txt"
    fewer.write_text("".join(ln for ln in text.splitlines(True) if not ln.startswith("pytest-timeout==")))
    result = run_lockcheck("installed", fewer)
    assert result.returncode == 1 and "not in" in result.stdout and "pytest-timeout==2.3.1" in result.stdout
    assert run_lockcheck("installed", fewer, "--allow-extra").returncode == 0


@pytest.mark.parametrize("accel, chosen, path", list(all_installs()), ids=lambda v: getattr(v, "name", None))
def test_every_install_has_a_lock_holding_its_direct_pins(accel, chosen, path):
    sections = constraint_sections()
    wanted = {**sections["runtime"], **sections[accel], "pip": sections["build"]["pip"]}
    for extra in chosen:
        wanted.update(sections[extra])
        if extra == "test":  # setup.py: the test extra brings onnx, serve and horovod too
            wanted.update({**sections["onnx"], **sections["serve"], **sections["horovod"]})
    pinned = {n: v for section in sections.values() for n, v in section.items()}
    for python in PYTHONS:
        locked = lock_pins(path, python)
        assert {n: locked.get(n) for n in wanted} == wanted, (path.name, python)
        # a constraints.txt edit without scripts/lock.sh shows here
        assert {n: v for n, v in locked.items() if n in pinned} == {n: pinned[n] for n in locked if n in pinned}
        assert not {"mxnet", "mxnet-cu112"} <= set(locked)


def test_no_lock_beyond_the_installs():
    assert sorted(LOCKS.glob("*.txt")) == sorted(path for _, _, path in all_installs())


@pytest.mark.parametrize("python", PYTHONS)
def test_a_package_has_one_version_in_every_lock(python):
    seen = {}
    for _, _, path in all_installs():
        for name, version in lock_pins(path, python).items():
            seen.setdefault(name, {}).setdefault(version, []).append(path.name)
    assert {n: v for n, v in seen.items() if len(v) > 1} == {}


def test_every_lock_line_is_for_linux_x86_64_and_an_exact_version():
    for _, _, path in all_installs():
        for req in lockcheck.read_lock(path):
            (spec,) = req.specifier
            assert spec.operator == "==" and req.marker is not None, (path.name, str(req))
            for platform in ({"sys_platform": "darwin"}, {"platform_machine": "aarch64"}):
                assert not req.marker.evaluate({**lockcheck.environment("3.11.2"), **platform})


def test_the_cuda_image_stages_agree_and_a_disagreement_is_named(tmp_path):
    result = run_lockcheck("agree", f"{LOCKS / 'cpu.txt'}@3.11.2", f"{LOCKS / 'cu112.txt'}@3.9.5")
    assert result.returncode == 0, result.stdout
    assert "agree on gluoncv 0.10.5.post0, mxnet 1.9.1, numpy 1.23.5" in result.stdout
    other = tmp_path / "cu112.txt"
    other.write_text((LOCKS / "cu112.txt").read_text().replace("\ngluoncv==0.10.5.post0 ", "\ngluoncv==0.10.4 "))
    result = run_lockcheck("agree", f"{LOCKS / 'cpu.txt'}@3.11.2", f"{other}@3.9.5")
    assert result.returncode == 1 and "disagree on gluoncv: gluoncv 0.10.5.post0 / 0.10.4" in result.stdout



@pytest.mark.parametrize("extra", ["onnx", "serve", "cu112"])
def test_the_install_hint_of_an_extra_is_its_locked_pins(extra):
    # what an error tells a user to run to get a missing extra: every pin of its constraints
    # section, as `pip install 'name==version'`, which works from a checkout as from an index
    from gluondet.extras import install_line

    line = install_line(extra)
    assert line.startswith("pip install ") and "gluondet[" not in line
    named = {canonicalize_name(n): v for n, v in re.findall(r"'([A-Za-z0-9_.-]+)==([^']+)'", line)}
    assert named == constraint_sections()[extra]


def test_onnx_export_without_onnx_says_how_to_install_it(monkeypatch):
    import importlib.util

    from gluondet import export
    from gluondet.errors import GluondetError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    pinned = re.escape(f"pip install 'onnx=={constraint_sections()['onnx']['onnx']}'")
    with pytest.raises(GluondetError, match="needs the onnx package: " + pinned):
        export.require_onnx()
