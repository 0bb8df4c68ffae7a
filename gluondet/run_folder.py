"""The run folder: the one owner of what a training run writes and how it is read back.

Layout (every write atomic: a temporary file beside the target, fsync, rename)::

    config.yaml         the resolved model, dataset and train sections
    classes.txt         one class name per line (UTF-8); the weights are for these, in this order
    last.json           the commit record: the last finished epoch, best mAP, metrics history, rng
    last.params/.states weights and optimizer state of that epoch (resume)
    best.params/.json   weights with the best validation score, and which epoch and score
    epoch_XXXX.params   every --save-interval epochs
    metrics.csv, curves.png, tb/   views of the history, rewritten from last.json
    diagnosis.json      only when the run does not learn: why gluondet thinks so (engine/not_learning.py)
    .lock               held (flock) by the one process training in the folder

**Crash consistency.** An epoch is committed by one atomic write: ``last.json``. Before it, the new
weights and optimizer state are written as ``pending-NNNN.params/.states`` (NNNN: the epoch they
belong to); after it, they are renamed to ``last.*`` and best.params is refreshed ("roll forward").
``repair()`` runs before training resumes: pending files of the committed epoch are rolled forward,
those of a later (uncommitted) epoch and temporary files of killed writes are removed, and the
history views are rewritten from last.json. A kill at any moment therefore loses at most the epoch
in progress, never a finished one, and never a row of metrics.csv.
"""
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

from .config import dump_yaml, load_yaml
from .errors import GluondetError
from .fileio import atomic_path, atomic_write_text

CONFIG_FILE = "config.yaml"
CLASSES_FILE = "classes.txt"
LAST_JSON = "last.json"
BEST_JSON = "best.json"
METRICS_FILE = "metrics.csv"
CURVES_FILE = "curves.png"
TENSORBOARD_DIR = "tb"
DIAGNOSIS_FILE = "diagnosis.json"
LOCK_FILE = ".lock"
WHICH_CHOICES = ("best", "last")
_PENDING_RE = re.compile(r"^pending-(\d{4,})\.(params|states)$")
_EPOCH_RE = re.compile(r"^epoch_(\d{4,})\.params$")
_TEMP_RE = re.compile(r"^\..+\.tmp(\.\w+)?$")


class RunFolderError(GluondetError):
    """A run folder (or a file in it) that cannot be used, with what to do."""


class RunFolderBusy(RunFolderError):
    """Another live process holds the run folder."""


def _safe(name):
    return re.sub(r"[^\w.+-]+", "_", str(name)).strip("_") or "run"


def disk_error(path, error, kept=""):
    """A GluondetError for an OSError while writing ``path``: one line, what was kept."""
    reasons = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
               errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.EDQUOT: "disk quota exceeded"}
    reason = reasons.get(getattr(error, "errno", None)) or str(error).splitlines()[0][:160]
    return GluondetError(f"{path}: cannot write ({reason})" + (f"; {kept}" if kept else ""))


class RunFolder:
    """A gluondet run folder. Opening one for reading validates config.yaml and classes.txt once."""

    def __init__(self, path):
        self.path = Path(path).expanduser()
        self._lock_fd = None
        self._lock_created = False
        self._config = None
        self._classes = None

    def __repr__(self):
        return f"RunFolder({str(self.path)!r})"

    def __truediv__(self, name):
        return self.path / name

    # ------------------------------------------------------------------ finding and creating
    @classmethod
    def open(cls, path):
        """A finished or running run folder (or the folder of a ``.params`` inside one), validated:
        a clear error names what is missing."""
        given = Path(path).expanduser()
        folder = given.parent if given.suffix == ".params" else given
        if not folder.is_dir():
            raise RunFolderError(f"{folder}: not a run folder (no such directory)")
        run = cls(folder)
        missing = [n for n in (CONFIG_FILE, CLASSES_FILE) if not (folder / n).is_file()]
        if missing:
            where = "beside it" if given != folder else "here"
            raise RunFolderError(
                f"{given}: no {' or '.join(missing)} {where}; weights are only loaded with the config "
                f"and classes of the run that made them (a gluondet run folder)")
        run.config  # parse now: a broken config.yaml is reported on opening
        run.classes
        return run

    @classmethod
    def create(cls, out=None, dataset_name="", model_name="", runs_root="runs"):
        """A new, locked run folder: ``out`` (must be absent or empty), or ``runs/<dataset>-<model>``
        numbered ``-2``, ``-3``... when taken. Two processes never get the same folder."""
        if out is not None:
            return cls._create_at(Path(out).expanduser())
        base = Path(runs_root) / f"{_safe(dataset_name)}-{_safe(model_name)}"
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
            run = cls(candidate)
            run.lock()
            return run

    @classmethod
    def _create_at(cls, path):
        """``--out``: refused when it is a file, in use or not empty, and then nothing in it is
        created, changed or removed (it may be another run's folder)."""
        run = cls(path)
        if path.exists() and not path.is_dir():
            raise RunFolderError(f"--out {path}: is a file, not a folder; choose another --out")
        if path.is_dir():
            run._refuse_if_taken()  # before the lock: taking it would create or rewrite .lock
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise disk_error(path, e, "nothing was written") from None
        run._acquire()
        try:
            run._refuse_if_taken()  # again under the lock: a process may have filled it meanwhile
        except RunFolderError:
            run._release(remove=run._lock_created)
            raise
        run._write_holder()
        return run

    def _refuse_if_taken(self):
        """Refuse a folder held by a live process, or holding anything but an unheld lock file."""
        if self._lock_fd is None:
            holder = _lock_holder(self.path / LOCK_FILE)
            if holder is not None:
                raise _busy(self.path, holder)
        if any(p.name != LOCK_FILE for p in self.path.iterdir()):
            raise RunFolderError(
                f"--out {self.path}: folder exists and is not empty; choose another --out, "
                f"or continue that run with --resume {self.path}")

    @staticmethod
    def latest(runs_dir="runs"):
        """The run folder under ``runs_dir`` whose best.params/last.params was written last."""
        runs_dir = Path(runs_dir)
        candidates = []
        if runs_dir.is_dir():
            for folder in runs_dir.iterdir():
                stamps = [p.stat().st_mtime for p in (folder / "best.params", folder / "last.params")
                          if p.is_file()]
                if stamps:
                    candidates.append((max(stamps), folder))
        if not candidates:
            raise RunFolderError(
                f"no trained run under {runs_dir.resolve()}/ (no best.params or last.params); "
                "train one with gluondet train, or pass --run RUN_DIR")
        return RunFolder.open(max(candidates)[1])

    def remove_if_unused(self):
        """Remove a folder this process created when training never started (nothing but the lock)."""
        if self.path.is_dir() and all(p.name == LOCK_FILE for p in self.path.iterdir()):
            self.unlock()
            shutil.rmtree(self.path, ignore_errors=True)

    # ------------------------------------------------------------------ one process per folder
    def lock(self):
        """Take the folder's advisory lock (flock: the kernel drops it when the process dies, so a
        killed run leaves no stale lock). Another live holder is named in the error."""
        self._acquire()
        self._write_holder()
        return self

    def _acquire(self):
        """flock ``.lock`` (created when absent, remembered in ``_lock_created``), writing nothing."""
        path = self.path / LOCK_FILE
        while True:
            try:
                try:
                    fd, self._lock_created = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
                except FileExistsError:
                    fd, self._lock_created = os.open(path, os.O_RDWR), False
            except OSError as e:
                raise disk_error(path, e) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise _busy(self.path, holder) from None
            if _same_file(fd, path):  # not a lock file a refused create unlinked meanwhile
                self._lock_fd = fd
                return
            os.close(fd)

    def _write_holder(self):
        os.ftruncate(self._lock_fd, 0)
        os.write(self._lock_fd, f"gluondet train (pid {os.getpid()} on {socket.gethostname()}, since "
                                f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode())

    def _release(self, remove):
        """Unlock; ``remove``: unlink .lock first, while still holding it (see _same_file)."""
        if remove and self._lock_fd is not None:
            (self.path / LOCK_FILE).unlink()
        self.unlock()

    def unlock(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    # ------------------------------------------------------------------ what the run says
    @property
    def config(self):
        if self._config is None:
            path = self.path / CONFIG_FILE
            if not path.is_file():
                raise RunFolderError(f"{path}: missing (written by gluondet train)")
            config = load_yaml(path)
            if not isinstance(config.get("model"), dict):
                raise RunFolderError(f"{path}: no 'model' section")
            self._config = config
        return self._config

    @property
    def classes(self):
        if self._classes is None:
            path = self.path / CLASSES_FILE
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except FileNotFoundError:
                raise RunFolderError(
                    f"{path}: missing; a run folder must carry its classes (written by gluondet train)") from None
            except (OSError, UnicodeDecodeError) as e:
                raise RunFolderError(f"{path}: cannot read ({e})") from None
            classes = [c for c in (line.rstrip("\r\n") for line in lines) if c]
            if not classes:
                raise RunFolderError(f"{path}: lists no classes")
            self._classes = classes
        return self._classes

    @property
    def model_config(self):
        return self.config["model"]

    @property
    def train_config(self):
        return dict(self.config.get("train") or {})

    @property
    def family(self):
        from .families import family_name

        return family_name(self.model_config)

    @property
    def data_shape(self):
        shape = self.model_config.get("data_shape")
        return int(shape) if shape else None

    def dataset_config(self, dataset=None, config_dir=None):
        """The DatasetConfig to evaluate on: ``dataset`` (a name or path) if given, else the one the
        run trained on, as config.yaml recorded it (its root and splits, not today's config file)."""
        from .config import dataset_config_from_dict, resolve_dataset

        if dataset:
            return resolve_dataset(dataset, config_dir)
        saved = self.config.get("dataset")
        if not isinstance(saved, dict) or not saved.get("root"):
            raise RunFolderError(f"{self.path / CONFIG_FILE}: no dataset recorded; pass --dataset")
        # the run's classes are passed to the reader explicitly, not taken from here
        keep = {k: saved[k] for k in ("name", "format", "root", "splits", "synth", "supercategories")
                if saved.get(k) is not None}
        return dataset_config_from_dict(keep, name=saved.get("name"))

    def weights(self, which="best"):
        """The weights file for ``which``: best, last, an epoch number, or a .params path."""
        if str(which).endswith(".params"):
            path = Path(which)
        elif str(which).isdigit():
            path = self.path / f"epoch_{int(which):04d}.params"
        elif which in WHICH_CHOICES:
            path = self.path / f"{which}.params"
        else:
            raise RunFolderError(f"--which {which}: give best, last or an epoch number")
        if path.is_file():
            return path
        if which == "best":
            hint = " (no validation has improved yet; try --which last)"
        elif str(which).isdigit():
            kept = sorted(int(m.group(1)) for p in self.path.glob("epoch_*.params")
                          if (m := _EPOCH_RE.match(p.name)))
            hint = (f" (kept epochs: {', '.join(map(str, kept))})" if kept else
                    " (this run kept no epoch checkpoints; train with --save-interval N to keep them)")
        else:
            hint = ""
        raise RunFolderError(f"{path}: missing{hint}")

    def optimizer_states(self):
        """last.states: the optimizer state of the last committed epoch (it may be missing)."""
        return self.path / "last.states"

    def last_state(self):
        """last.json (the commit record), or None for a run with no finished epoch."""
        path = self.path / LAST_JSON
        return read_json(path) if path.is_file() else None

    def best(self):
        path = self.path / BEST_JSON
        return read_json(path) if path.is_file() else None

    # ------------------------------------------------------------------ the network
    def load_network(self, which="best", ctx=None):
        """``(net, weights_path)``: the run's network rebuilt for its classes, with its weights."""
        import mxnet as mx

        from .families import get_family
        from .models import build_model

        params = self.weights(which)
        net = build_model(self.model_config, self.classes, pretrained_base=False)
        load_weights(net, params, get_family(self.family).ignore_extra_weights, ctx=ctx or mx.cpu(), run=self)
        return net, params

    # ------------------------------------------------------------------ writing
    def write_info(self, config, classes):
        """config.yaml (the resolved configuration) and classes.txt."""
        try:
            dump_yaml(config, self.path / CONFIG_FILE)
            atomic_write_text(self.path / CLASSES_FILE, "".join(f"{c}\n" for c in classes))
        except OSError as e:
            raise disk_error(self.path / CONFIG_FILE, e) from None
        self._config, self._classes = None, None

    def save_params(self, net, name):
        path = self.path / name
        _write_params(net, path)
        return path

    def commit_epoch(self, net, optimizer, state, with_states=True):
        """Commit ``state`` (the dict for last.json) with the weights and optimizer state of the
        epoch it names; then roll forward (last.*, best.* when ``state`` says this epoch is best)."""
        epoch = int(state["epoch"])
        kept = "the last committed epoch is intact"
        params = self.path / f"pending-{epoch:04d}.params"
        states = self.path / f"pending-{epoch:04d}.states"
        _write_params(net, params, kept)
        if with_states:
            try:
                with atomic_path(states) as tmp:
                    optimizer.save_states(tmp)
            except OSError as e:
                raise disk_error(states, e, kept) from None
        try:
            write_json(self.path / LAST_JSON, dict(state, optimizer_states=with_states))
        except OSError as e:
            raise disk_error(self.path / LAST_JSON, e, kept) from None
        self.roll_forward(state)

    def roll_forward(self, state):
        """Finish a commit: pending files of the committed epoch become last.*, best.* follows."""
        epoch = int(state["epoch"])
        for ext in ("params", "states"):
            pending = self.path / f"pending-{epoch:04d}.{ext}"
            if pending.exists():
                os.replace(pending, self.path / f"last.{ext}")
        best = self.best()
        if state.get("best_epoch") == epoch and not state.get("partial") and (
                best is None or best.get("epoch") != epoch):
            try:
                with atomic_path(self.path / "best.params") as tmp:
                    shutil.copyfile(self.path / "last.params", tmp)
                write_json(self.path / BEST_JSON, {"epoch": epoch, "map": state["best_map"],
                                                    "metric": state.get("metric")})
            except OSError as e:
                raise disk_error(self.path / "best.params", e, "last.params holds the same weights") from None

    def repair(self):
        """Bring the folder back to its last committed epoch; returns what was done (lines)."""
        done = []
        for p in self.path.iterdir():
            if _TEMP_RE.match(p.name):
                p.unlink(missing_ok=True)
                done.append(f"removed {p.name} (a write that was killed)")
        state = self.last_state()
        committed = int(state["epoch"]) if state else 0
        if state:
            pending = [p for p in self.path.iterdir() if (m := _PENDING_RE.match(p.name))
                       and int(m.group(1)) == committed]
            if pending:
                self.roll_forward(state)
                done.append(f"finished saving epoch {committed} (stopped after its commit)")
        for p in self.path.iterdir():
            m = _PENDING_RE.match(p.name) or _EPOCH_RE.match(p.name)
            if m and int(m.group(1)) > committed:
                p.unlink()
                done.append(f"removed {p.name} (epoch {int(m.group(1))} never finished)")
        return done


# ----------------------------------------------------------------------------- files
def _busy(path, holder):
    return RunFolderBusy(f"{path}: in use by {holder}; wait for it to finish, or stop it "
                         f"(Ctrl-C saves it) before --resume")


def _read_holder(fd):
    return os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"


def _lock_holder(path):
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


def write_json(path, data):
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path):
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFolderError(f"{path}: missing") from None
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{path}: damaged, cannot read ({str(e).splitlines()[0][:120]})") from None


def _write_params(net, path, kept=""):
    import mxnet as mx

    try:
        with atomic_path(path) as tmp:
            net.save_parameters(tmp)
    except OSError as e:
        raise disk_error(path, e, kept) from None
    except mx.base.MXNetError as e:  # MXNet's own writer: "FileStream.Write incomplete" on a full disk
        raise disk_error(path, OSError(errno.ENOSPC, str(e)) if "incomplete" in str(e) else e, kept) from None


def load_weights(net, params, ignore_extra=False, ctx=None, run=None):
    """Load ``params`` into ``net`` on ``ctx`` (a Context or a list); a file that does not fit is
    diagnosed: damaged or truncated, weights for another class count (naming classes.txt), or for
    another network.

    Faster (and Mask) R-CNN's saved weights also hold its training target generator's constants, which a
    freshly built network creates only when it first trains: those extras are ignored.
    """
    import mxnet as mx

    try:  # the network was initialized on the CPU: load there, then place on every device
        net.load_parameters(str(params), ctx=mx.cpu(), ignore_extra=ignore_extra)
    except (AssertionError, mx.base.MXNetError, ValueError) as e:
        raise _weights_problem(net, Path(params), e, run) from None
    if ctx is not None:
        net.collect_params().reset_ctx(ctx)


def _weights_problem(net, params, error, run):
    import mxnet as mx

    try:
        saved = mx.nd.load(str(params))
    except mx.base.MXNetError:
        return RunFolderError(f"{params}: damaged or truncated (not a complete MXNet weights file); "
                              f"use another checkpoint of the run (--which last / best / N)")
    own = {name: p.shape for name, p in net._collect_params_with_prefix().items()}
    differ = [n for n, shape in own.items() if n in saved and tuple(saved[n].shape) != tuple(shape)]
    if differ and all("class_predictor" in n or "box_predictor" in n for n in differ):
        where = run.path / CLASSES_FILE if run else "the class list"
        return RunFolderError(f"{where}: lists {len(run.classes) if run else '?'} classes, but {params} "
                              f"was trained for another number of classes; the run's classes.txt and "
                              f"weights must come from the same run")
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    where = f" in {run.path / CONFIG_FILE}" if run else ""
    return RunFolderError(f"{params}: weights of another network, not the model{where} ({first})")
