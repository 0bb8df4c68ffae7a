"""A refused ``--out`` (taken by another run, in use, not a run, not a folder): RunFolder.create,
which ``gluondet train`` calls for its new folder, creates, changes and removes nothing there.
Each case hashes the folder (names, bytes, modes) before and after the refusal."""
import hashlib
import os
import subprocess
import sys
import textwrap

import pytest

from gluondet.run_folder import RunFolder, RunFolderBusy, RunFolderError

HOLD_LOCK = textwrap.dedent("""
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"gluondet train (pid %d on the other host)" % os.getpid())
    print("locked", flush=True)
    sys.stdin.read()  # hold the lock until the test closes stdin
""")


def folder_hash(root):
    """Names, modes and bytes (link targets for links) of ``root`` and everything under it."""
    digest = hashlib.sha256()
    for here, dirs, files in os.walk(root):
        dirs.sort()
        for name in [""] + sorted(dirs + files):
            path = os.path.join(here, name) if name else here
            st = os.lstat(path)
            digest.update(f"{os.path.relpath(path, root)}\0{st.st_mode:o}\0".encode())
            if os.path.islink(path):
                digest.update(os.readlink(path).encode())
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()


def finished_run(folder, lock_text="gluondet train (pid 1 on elsewhere, since 2026-01-01 00:00:00)\n"):
    """The files a finished training leaves (contents need not be real: nothing may read them)."""
    folder.mkdir(parents=True)
    for name, data in (("config.yaml", b"model: {name: tiny_ssd}\n"), ("classes.txt", b"a\nb\n"),
                       ("last.json", b'{"epoch": 3}'), ("best.params", os.urandom(256))):
        (folder / name).write_bytes(data)
    (folder / "best.params").chmod(0o600)
    if lock_text is not None:
        (folder / ".lock").write_text(lock_text)
    return folder


@pytest.fixture
def other_process():
    """Start a process that holds ``folder/.lock`` as a training process does; stopped at the end."""
    procs = []

    def hold(folder):
        proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder / ".lock")],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return folder

    yield hold
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=60)


def another_run(tmp_path, hold):
    return finished_run(tmp_path / "out")


def another_run_without_lock_file(tmp_path, hold):
    return finished_run(tmp_path / "out", lock_text=None)


def a_run_in_progress(tmp_path, hold):
    return hold(finished_run(tmp_path / "out", lock_text=None))


def an_empty_folder_in_use(tmp_path, hold):
    (tmp_path / "out").mkdir()
    return hold(tmp_path / "out")


def not_a_run(tmp_path, hold):
    folder = tmp_path / "out"
    (folder / "photos").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine\n")
    (folder / "photos" / "a.jpg").write_bytes(b"\xff\xd8 not really")
    os.symlink("notes.txt", folder / "link")
    return folder


CASES = [(another_run, RunFolderError, "not empty"), (another_run_without_lock_file, RunFolderError, "not empty"),
         (a_run_in_progress, RunFolderBusy, "in use by gluondet train .pid"),
         (an_empty_folder_in_use, RunFolderBusy, "in use by gluondet train .pid"),
         (not_a_run, RunFolderError, "not empty")]


@pytest.mark.parametrize("make, error, message", CASES, ids=[c[0].__name__ for c in CASES])
def test_a_refused_out_folder_is_left_as_it_was(tmp_path, other_process, make, error, message):
    folder = make(tmp_path, other_process)
    before = folder_hash(tmp_path)
    with pytest.raises(error, match=message) as refused:
        RunFolder.create(folder)
    assert "\n" not in str(refused.value) and str(folder) in str(refused.value)
    assert folder_hash(tmp_path) == before


def test_an_out_that_is_a_file_is_refused_untouched(tmp_path):
    (tmp_path / "out").write_text("a file\n")
    before = folder_hash(tmp_path)
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        RunFolder.create(tmp_path / "out")
    assert folder_hash(tmp_path) == before


def test_a_folder_free_again_is_taken(tmp_path, other_process):
    """The refusals are not a folder refused for good: an empty one, or one holding only a
    released lock, is a new run folder (and locked)."""
    (tmp_path / "empty").mkdir()
    RunFolder.create(tmp_path / "empty").unlock()  # leaves its lock file, released
    run = RunFolder.create(tmp_path / "empty")
    with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()} "):
        RunFolder.create(tmp_path / "empty")
    run.unlock()
    RunFolder.create(tmp_path / "new" / "deeper").unlock()
    assert sorted(p.name for p in (tmp_path / "new" / "deeper").iterdir()) == [".lock"]
