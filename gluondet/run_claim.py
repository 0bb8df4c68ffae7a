"""Claiming a folder for a new run, and finding the newest run: each answers with the folder's
lock (run_lock.py) or path, which run_folder.RunFolder wraps."""
from pathlib import Path

from .run_layout import LOCK_FILE, RunFolderError, disk_error
from .run_lock import FolderLock, busy, lock_holder

WEIGHT_FILES = ("best.params", "last.params")


def claim_numbered(base):
    """The held lock of a new folder ``base``, or ``base-2``, ``base-3``... when taken: ``mkdir`` is
    atomic, so two processes never get the same folder."""
    n = 1
    while True:
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            base.parent.mkdir(parents=True, exist_ok=True)
            candidate.mkdir()  # atomic: the process that creates it owns it
        except FileExistsError:
            n += 1
            continue
        except OSError as e:
            raise disk_error(candidate, e, "nothing was written") from None
        lock = FolderLock(candidate)
        lock.acquire()
        lock.write_holder()
        return lock


def claim_out(path):
    """``--out``'s held lock: refused when it is a file, in use or not empty, and then nothing in it
    is created, changed or removed (it may be another run's folder)."""
    lock = FolderLock(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"--out {path}: is a file, not a folder; choose another --out")
    if path.is_dir():
        refuse_if_taken(lock)  # before the lock: taking it would create or rewrite .lock
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise disk_error(path, e, "nothing was written") from None
    lock.acquire()
    try:
        refuse_if_taken(lock)  # again under the lock: a process may have filled it meanwhile
    except RunFolderError:
        lock.release(remove=lock.created)
        raise
    lock.write_holder()
    return lock


def refuse_if_taken(lock):
    """Refuse a folder held by a live process, or holding anything but an unheld lock file."""
    folder = lock.folder
    if not lock.held:
        holder = lock_holder(folder / LOCK_FILE)
        if holder is not None:
            raise busy(folder, holder)
    if any(p.name != LOCK_FILE for p in folder.iterdir()):
        raise RunFolderError(
            f"--out {folder}: folder exists and is not empty; choose another --out, "
            f"or continue that run with --resume {folder}")


def latest_run_path(runs_dir="runs"):
    """The folder under ``runs_dir`` whose best.params/last.params was written last."""
    runs_dir = Path(runs_dir)
    candidates = []
    if runs_dir.is_dir():
        for folder in runs_dir.iterdir():
            stamps = [p.stat().st_mtime for p in (folder / name for name in WEIGHT_FILES) if p.is_file()]
            if stamps:
                candidates.append((max(stamps), folder))
    if not candidates:
        raise RunFolderError(
            f"no trained run under {runs_dir.resolve()}/ (no best.params or last.params); "
            "train one with gluondet train, or pass --run RUN_DIR")
    return max(candidates)[1]
