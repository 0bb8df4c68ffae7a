"""One process per run folder: an advisory lock (flock) on ``.lock``, which the kernel drops when the
process dies, so a killed run leaves no stale lock; the file names its holder for the next one."""
import fcntl
import os
import socket
import time
from pathlib import Path

from .run_layout import LOCK_FILE, RunFolderBusy, disk_error


class FolderLock:
    """The lock of the run folder ``folder``: ``acquire`` (writing nothing), ``write_holder``,
    ``release`` / ``unlock``. ``created``: whether ``acquire`` created the lock file."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.file = self.folder / LOCK_FILE
        self.fd = None
        self.created = False

    @property
    def held(self):
        return self.fd is not None

    def acquire(self):
        """flock ``.lock`` (created when absent, remembered in ``created``), writing nothing."""
        path = self.file
        while True:
            try:
                try:
                    fd, self.created = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
                except FileExistsError:
                    fd, self.created = os.open(path, os.O_RDWR), False
            except OSError as e:
                raise disk_error(path, e) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise busy(self.folder, holder) from None
            if _same_file(fd, path):  # not a lock file a refused create unlinked meanwhile
                self.fd = fd
                return
            os.close(fd)

    def write_holder(self):
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"gluondet train (pid {os.getpid()} on {socket.gethostname()}, since "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode())

    def release(self, remove):
        """Unlock; ``remove``: unlink .lock first, while still holding it (see _same_file)."""
        if remove and self.fd is not None:
            self.file.unlink()
        self.unlock()

    def unlock(self):
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None


def busy(path, holder):
    return RunFolderBusy(f"{path}: in use by {holder}; wait for it to finish, or stop it "
                         f"(Ctrl-C saves it) before --resume")


def _read_holder(fd):
    return os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"


def lock_holder(path):
    """Who holds the lock file ``path`` (its text), or None when it is absent or free; read only."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise disk_error(path, e) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # conflicts with a holder's LOCK_EX
        return None
    except BlockingIOError:
        return _read_holder(fd)
    finally:
        os.close(fd)  # releases the probe's shared lock


def _same_file(fd, path):
    """Whether ``path`` still names the open ``fd``: a lock taken on an unlinked file is no lock."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False
