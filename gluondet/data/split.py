"""Split a VOC folder's annotations into train/val/test lists (what people's makeTxt scripts do).

Writes ``ImageSets/Main/{train,val,test,trainval}.txt``. The order comes from a seeded NumPy
permutation of the sorted ids, so a seed always gives the same split on any machine; each file
lists its ids sorted. Existing split files are kept unless ``force``.
"""
import os
from pathlib import Path

import numpy as np

from ..errors import GluondetError
from ..fileio import atomic_write_text
from .voc import SPLIT_DIR

SPLIT_NAMES = ("train", "val", "test", "trainval")


def split_counts(n, val, test):
    """How many of ``n`` ids go to (train, val, test) for fractions ``val`` and ``test``."""
    n_val, n_test = int(round(n * val)), int(round(n * test))
    return n - n_val - n_test, n_val, n_test


def make_splits(ids, val=0.2, test=0.1, seed=0):
    """{train, val, test, trainval: sorted id lists} for fractions of ``ids``, deterministic per seed."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise GluondetError(f"--val {val} and --test {test}: each must be in [0, 1) and their sum below 1")
    ids = sorted(ids)
    order = np.random.RandomState(seed).permutation(len(ids))
    n_train, n_val, _ = split_counts(len(ids), val, test)
    shuffled = [ids[i] for i in order]
    parts = {"train": shuffled[:n_train], "val": shuffled[n_train:n_train + n_val],
             "test": shuffled[n_train + n_val:]}
    parts["trainval"] = parts["train"] + parts["val"]
    return {name: sorted(members) for name, members in parts.items()}


def write_splits(root, val=0.2, test=0.1, seed=0, force=False):
    """Write the split files of VOC folder ``root`` from its ``Annotations/*.xml``; returns the lists."""
    root = Path(root)
    ann_dir = root / "Annotations"
    if not ann_dir.is_dir():
        raise GluondetError(f"{root}: not a VOC folder (no Annotations/); split works on one VOC folder")
    ids = [name[:-4] for name in os.listdir(ann_dir) if name.endswith(".xml")]
    if not ids:
        raise GluondetError(f"{ann_dir}: no .xml annotation files to split")
    split_dir = root / SPLIT_DIR
    existing = [split_dir / f"{name}.txt" for name in SPLIT_NAMES if (split_dir / f"{name}.txt").exists()]
    if existing and not force:
        raise GluondetError(f"{existing[0]}: split files exist already ({', '.join(p.name for p in existing)}); "
                            "pass --force to overwrite them")
    splits = make_splits(ids, val, test, seed)
    for name in SPLIT_NAMES:
        atomic_write_text(split_dir / f"{name}.txt", "".join(f"{i}\n" for i in splits[name]))
    return splits
