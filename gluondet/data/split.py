"""Split a dataset into train/val/test: a VOC folder's split lists, or a COCO file into split files.

VOC: writes ``ImageSets/Main/{train,val,test,trainval}.txt``, each listing its ids sorted.
COCO: writes ``instances_{train,val,test}.json`` beside the instances file (test only when it
gets images), each with the file's categories and its images' annotations, so the folder is then
a COCO root whose roles train/val/test are these files.

Both are stratified by class: each image belongs to the stratum of its rarest class (images with
no objects form one stratum), and every stratum is spread evenly over train, val and test, so a
class with few images still reaches validation. The order comes from a seeded NumPy permutation
of the sorted ids, so a seed gives the same split on any machine. Existing split files are kept
unless ``force``.
"""
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import GluondetError
from ..fileio import atomic_write_text
from ..layouts import coco_file_spec
from .coco import load_coco_api
from .voc import SPLIT_DIR, index_voc_root

SPLIT_NAMES = ("train", "val", "test", "trainval")
COCO_SPLIT_NAMES = ("train", "val", "test")


def split_counts(n, val, test):
    """How many of ``n`` ids go to (train, val, test) for fractions ``val`` and ``test``."""
    n_val, n_test = int(round(n * val)), int(round(n * test))
    return n - n_val - n_test, n_val, n_test


def rarest_class_strata(labels):
    """{id: stratum} from {id: [class names]}: the image's least frequent class ('' for none)."""
    counts = Counter(name for names in labels.values() for name in set(names))
    return {i: min(set(names), key=lambda n: (counts[n], n)) if names else "" for i, names in labels.items()}


def make_splits(ids, val=0.2, test=0.1, seed=0, strata=None):
    """{train, val, test, trainval: sorted id lists} for fractions of ``ids``, deterministic per seed.

    ``strata`` ({id: key}) spreads each stratum evenly over the order the splits are cut from: the
    k-th of a stratum's n members (in shuffled order) sits at (k + 0.5) / n. Without strata (or
    with one), the order is the shuffled order itself.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise GluondetError(f"--val {val} and --test {test}: each must be in [0, 1) and their sum below 1")
    ids = sorted(ids)
    order = np.random.RandomState(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    if strata:
        sizes = Counter(strata[i] for i in shuffled)
        seen = Counter()
        position = []
        for i in shuffled:
            key = strata[i]
            position.append((seen[key] + 0.5) / sizes[key])
            seen[key] += 1
        shuffled = [shuffled[k] for k in np.argsort(position, kind="stable")]
    n_train, n_val, _ = split_counts(len(ids), val, test)
    parts = {"train": shuffled[:n_train], "val": shuffled[n_train:n_train + n_val],
             "test": shuffled[n_train + n_val:]}
    parts["trainval"] = parts["train"] + parts["val"]
    return {name: sorted(members) for name, members in parts.items()}


def write_splits(root, val=0.2, test=0.1, seed=0, force=False):
    """Split a VOC folder (its split lists) or a COCO instances file (split files); returns the id lists."""
    root = Path(root)
    try:
        if root.is_file() and root.suffix == ".json":
            return write_coco_splits(root, val, test, seed, force)
        return write_voc_splits(root, val, test, seed, force)
    except OSError as e:  # a read-only folder, a full disk
        raise GluondetError(f"{e.filename or root}: cannot write the split files ({e.strerror or e})") from None


def write_voc_splits(root, val=0.2, test=0.1, seed=0, force=False):
    """Write ``ImageSets/Main/{train,val,test,trainval}.txt`` of VOC folder ``root``, stratified."""
    ann_dir = root / "Annotations"
    if not ann_dir.is_dir():
        raise GluondetError(f"{root}: not a VOC folder (no Annotations/) nor a COCO .json; "
                            "split works on one VOC folder or one COCO instances file")
    if not any(name.endswith(".xml") for name in os.listdir(ann_dir)):
        raise GluondetError(f"{ann_dir}: no .xml annotation files to split")
    split_dir = root / SPLIT_DIR
    _refuse_existing([split_dir / f"{name}.txt" for name in SPLIT_NAMES], force)

    labels = {i: [o[0] for o in e.objects] for i, e in index_voc_root(root).items()}
    splits = make_splits(list(labels), val, test, seed, rarest_class_strata(labels))
    for name in SPLIT_NAMES:
        atomic_write_text(split_dir / f"{name}.txt", "".join(f"{i}\n" for i in splits[name]))
    return splits


def _refuse_existing(paths, force):
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise GluondetError(f"{existing[0]}: split files exist already ({', '.join(p.name for p in existing)}); "
                            "pass --force to overwrite them")


def coco_split_paths(ann_path):
    """Where the split files of a COCO instances file go: beside it, instances_{train,val,test}.json."""
    return {name: Path(ann_path).parent / f"instances_{name}.json" for name in COCO_SPLIT_NAMES}


def write_coco_splits(ann_path, val=0.2, test=0.1, seed=0, force=False):
    """Split one COCO instances file into instances_{train,val,test}.json beside it (see the module doc)."""

    ann_path = Path(ann_path).resolve()
    targets = coco_split_paths(ann_path)
    if ann_path in targets.values():
        raise GluondetError(f"{ann_path}: is itself a split file; split the file it came from")
    _refuse_existing(list(targets.values()), force)
    api = load_coco_api(ann_path)
    doc = api.dataset
    names = {c["id"]: str(c.get("name", "")) for c in doc["categories"]}
    labels = {img["id"]: [names.get(a.get("category_id"), "") for a in api.imgToAnns.get(img["id"], [])]
              for img in doc["images"]}
    if not labels:
        raise GluondetError(f"{ann_path}: no images to split")
    splits = make_splits(list(labels), val, test, seed, rarest_class_strata(labels))
    root, spec = coco_file_spec(ann_path)
    source_images = Path(spec["images"])
    for name, path in targets.items():
        if name == "test" and not splits[name]:
            continue
        atomic_write_text(path, json.dumps(_subset(doc, set(splits[name]), source_images, root, name),
                                           ensure_ascii=False))
    return splits


def _subset(doc, image_ids, source_images, root, split):
    """The instances dict of ``image_ids``, file names made relative to where this split's reader looks."""
    target_images = next((d for d in (root / split, root / "images") if d.is_dir()), root)
    images = []
    for img in doc["images"]:
        if img["id"] in image_ids:
            rel = os.path.relpath(source_images / str(img.get("file_name", "")), target_images)
            if rel.startswith(".."):
                raise GluondetError(f"{img.get('file_name')}: cannot be named from {target_images}, where "
                                    f"instances_{split}.json's images are looked for; move the images under {root}")
            images.append({**img, "file_name": rel})
    anns = [a for a in doc.get("annotations") or [] if a.get("image_id") in image_ids]
    return {**{k: v for k, v in doc.items() if k not in ("images", "annotations")}, "images": images,
            "annotations": anns}


def val_overlap_warning(train_ds, val_ds):
    """One line when validation images are also training images (None when they are apart).

    Call it once at training set-up with the two loaded datasets: a dataset with a single COCO
    file (or a config whose val split is its train split) validates on what it trains on.
    """
    train = {os.path.abspath(train_ds.image_path(i)) for i in range(len(train_ds))}
    shared = sum(os.path.abspath(val_ds.image_path(i)) in train for i in range(len(val_ds)))
    if not shared:
        return None
    what = "the validation images are the training images" if shared == len(val_ds) == len(train) else \
        f"{shared} of {len(val_ds)} validation images are also training images"
    return (f"{what}: validation measures memory, not generalisation "
            "(split the data first: gluondet data split DATASET)")
