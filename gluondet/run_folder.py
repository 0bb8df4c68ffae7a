"""The run folder: the one owner of what a training run writes and how it is read back.

What a run folder holds, file by file, is run_layout.py's docstring (every write atomic).

``RunFolder`` finds, creates and reads run folders; new folders are claimed by run_claim.py, its
lock is run_lock.py's, its epochs are committed (and repaired after a kill) by run_commit.py, the
file names are run_layout.py's, and the network is rebuilt by models/weights.py.
"""
import shutil
from pathlib import Path

from .config import dataset_config_from_dict, dump_yaml, load_yaml, resolve_dataset
from .families import family_name
from .fileio import atomic_write_text, safe_name
from .models.weights import load_run_network
from .run_claim import claim_numbered, claim_out, latest_run_path
from .run_commit import EpochCommitter
from .run_layout import (  # noqa: F401 (the names of the run folder's files, imported from here by its readers)
    _EPOCH_RE, BEST_JSON, CLASSES_FILE, CONFIG_FILE, CURVES_FILE, DIAGNOSIS_FILE, LAST_JSON, LOCK_FILE, METRICS_FILE,
    TENSORBOARD_DIR, WHICH_CHOICES, RunFolderBusy, RunFolderError, disk_error, read_json, write_json)
from .run_lock import FolderLock


class RunFolder:
    """A gluondet run folder. Opening one for reading validates config.yaml and classes.txt once."""

    def __init__(self, path, lock=None):
        self.path = Path(path).expanduser()
        self._lock = lock or FolderLock(self.path)
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
        numbered ``-2``, ``-3``... when taken (run_claim.py). Two processes never get the same folder."""
        if out is not None:
            lock = claim_out(Path(out).expanduser())
        else:
            lock = claim_numbered(Path(runs_root) / f"{safe_name(dataset_name, 'run')}-{safe_name(model_name, 'run')}")
        return cls(lock.folder, lock)

    @staticmethod
    def latest(runs_dir="runs"):
        """The run folder under ``runs_dir`` whose best.params/last.params was written last."""
        return RunFolder.open(latest_run_path(runs_dir))

    def remove_if_unused(self):
        """Remove a folder this process created when training never started (nothing but the lock)."""
        if self.path.is_dir() and all(p.name == LOCK_FILE for p in self.path.iterdir()):
            self.unlock()
            shutil.rmtree(self.path, ignore_errors=True)

    # ------------------------------------------------------------------ one process per folder
    def lock(self):
        """Take the folder's advisory lock (flock: the kernel drops it when the process dies, so a
        killed run leaves no stale lock). Another live holder is named in the error."""
        self._lock.acquire()
        self._lock.write_holder()
        return self

    def unlock(self):
        self._lock.unlock()

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
        return family_name(self.model_config)

    @property
    def data_shape(self):
        shape = self.model_config.get("data_shape")
        return int(shape) if shape else None

    def dataset_config(self, dataset=None, config_dir=None):
        """The DatasetConfig to evaluate on: ``dataset`` (a name or path) if given, else the one the
        run trained on, as config.yaml recorded it (its root and splits, not today's config file)."""

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

        return load_run_network(self, which, ctx)

    # ------------------------------------------------------------------ writing
    def write_info(self, config, classes):
        """config.yaml (the resolved configuration) and classes.txt."""
        try:
            dump_yaml(config, self.path / CONFIG_FILE)
            atomic_write_text(self.path / CLASSES_FILE, "".join(f"{c}\n" for c in classes))
        except OSError as e:
            raise disk_error(self.path / CONFIG_FILE, e) from None
        self._config, self._classes = None, None

    # ------------------------------------------------------------------ epochs (run_commit.py)
    @property
    def committer(self):
        return EpochCommitter(self)

    def save_params(self, net, name):
        return self.committer.save_params(net, name)

    def commit_epoch(self, net, optimizer, state, with_states=True):
        self.committer.commit_epoch(net, optimizer, state, with_states)

    def roll_forward(self, state):
        self.committer.roll_forward(state)

    def repair(self):
        """Bring the folder back to its last committed epoch; returns what was done (lines)."""
        return self.committer.repair()
