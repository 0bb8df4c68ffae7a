"""Atomic file writes: a temporary file in the same folder, fsync, then rename over the target.

A kill at any moment leaves either the old file or the new one, never half of either.
"""
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path


def safe_name(text, empty):
    """``text`` as one file-name component: runs of anything but word characters, '.', '+' and '-'
    become '_'; ``empty`` when nothing is left."""
    return re.sub(r"[^\w.+-]+", "_", str(text)).strip("_") or empty


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``.

    For writers that want a file name (``net.save_parameters(tmp)``, ``cv2.imwrite(tmp, ...)``).
    The temporary name keeps the target's suffix, since some writers choose the format from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600 files; the target gets what open() would give
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def current_umask():
    """The process umask (read by setting and restoring it at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))
