"""The run folder's layout: what a training run writes, under which names.

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

The file names, the errors of reading and writing them, and JSON written atomically. The rest of
the owner: run_folder.py (finding, creating, reading), run_lock.py (one process per folder),
run_commit.py (committing an epoch and repairing after a kill), models/weights.py (the network).
"""
import errno
import json
import re
from pathlib import Path

from .errors import GluondetError
from .fileio import atomic_write_text

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


def disk_error(path, error, kept=""):
    """A GluondetError for an OSError while writing ``path``: one line, what was kept."""
    reasons = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
               errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.EDQUOT: "disk quota exceeded"}
    reason = reasons.get(getattr(error, "errno", None)) or str(error).splitlines()[0][:160]
    return GluondetError(f"{path}: cannot write ({reason})" + (f"; {kept}" if kept else ""))


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
