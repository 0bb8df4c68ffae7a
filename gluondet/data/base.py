"""The types every reader shares: a problem found in the data, an index entry, the dataset itself.

Readers (voc.py, coco.py) turn annotation files into ``Entry`` records without decoding images
(sizes and EXIF orientation come from image headers, see gluondet.image); ``check.py`` finds
problems in them; ``DetectionDataset`` serves the clean entries as ``(image, label)`` pairs in the
layout GluonCV's transforms expect.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..image import read_image

# The flag column of a label row: a normal object, a VOC "difficult" one, a COCO crowd region.
FLAG_NORMAL, FLAG_DIFFICULT, FLAG_CROWD = 0, 1, 2


@dataclass
class Problem:
    """One thing wrong with the data: the file, how bad, a short code and a human sentence."""

    file: str
    severity: str  # "error" or "warning"
    problem: str  # short kebab-case code, e.g. "box-outside-image"
    detail: str

    def __str__(self):
        return f"{self.file}: {self.severity}: {self.problem}: {self.detail}"

    def to_dict(self):
        return {"file": self.file, "severity": self.severity, "problem": self.problem, "detail": self.detail}


def error(file, problem, detail):
    return Problem(str(file), "error", problem, detail)


def warning(file, problem, detail):
    return Problem(str(file), "warning", problem, detail)


@dataclass
class Entry:
    """One image and its objects as read from the annotations, before any class mapping.

    ``objects`` are ``(name, xmin, ymin, xmax, ymax, flag)`` in gluondet's label coordinates (0-based
    pixels). ``max_offset`` is what the largest valid ``xmax`` falls short of the image width: 1 for
    VOC (inclusive pixel indices, xmax <= W - 1), 0 for COCO (continuous, xmax <= W).
    """

    image_id: str
    ann_file: str  # the file problems are reported against
    image_path: Optional[str]
    declared_size: Optional[Tuple[int, int]]  # (w, h) written in the annotation
    header_size: Optional[Tuple[int, int]]  # (w, h) of the pixels as read (see apply_orientation)
    objects: list = field(default_factory=list)
    problems: List[Problem] = field(default_factory=list)  # found while reading
    max_offset: int = 1
    raw_boxes: list = field(default_factory=list)  # boxes as written in the file, for messages
    orientation: int = 1  # the image file's EXIF orientation (1: none)
    apply_orientation: bool = False  # whether it is applied when reading (gluondet.image.choose_orientation)
    masks: list = field(default_factory=list)  # mask specs parallel to objects (data/masks.py), or empty

    @property
    def size(self):
        """(w, h): the image's own size when it could be read, else what the annotation says."""
        return self.header_size or self.declared_size


@dataclass
class DatasetIndex:
    """What a reader found for one split: its entries, split-level problems, and context for checks.

    ``all_entries`` covers the whole dataset (class discovery must not depend on the split);
    ``file_classes`` are class names the annotation format itself declares (COCO categories);
    ``file_supercategories`` ({class: group}) the groups it declares (COCO ``supercategory``).
    """

    entries: List[Entry]
    problems: List[Problem]
    all_entries: List[Entry]
    file_classes: Optional[List[str]] = None
    file_supercategories: Optional[Dict[str, str]] = None


# ----------------------------------------------------------------------------- the dataset
class DetectionDataset:
    """Images and (N, 6) float32 labels: xmin, ymin, xmax, ymax, class id, flag (0, 1 difficult, 2 crowd).

    Holds only plain lists and arrays, so it pickles cheaply into DataLoader workers. Items decode
    the image on access: ``ds[i] -> (mx.nd.NDArray HxWx3 uint8 RGB, np.ndarray (N, 6) float32)``.
    """

    def __init__(self, classes, image_paths, image_ids, image_sizes, labels, name="", problems=None,
                 skipped=0, turned=None, supercategories=None):
        if not (len(image_paths) == len(image_ids) == len(image_sizes) == len(labels)):
            raise ValueError("image_paths, image_ids, image_sizes and labels differ in length")
        self.classes = list(classes)
        self.name = name
        self._paths = [str(p) for p in image_paths]
        self._ids = [str(i) for i in image_ids]
        self._sizes = [tuple(s) for s in image_sizes]
        self._labels = [np.asarray(lb, dtype=np.float32).reshape(-1, 6) for lb in labels]
        # per image: apply its EXIF orientation when decoding (the annotation was drawn on the turned picture)
        self._turned = [bool(t) for t in turned] if turned is not None else [False] * len(self._paths)
        self.problems = list(problems or [])  # warnings (and, with skip_bad, the errors left out)
        self.skipped = skipped  # images left out by skip_bad
        # {class: group} for the error breakdown's Sim curve, or None
        self.supercategories = dict(supercategories) if supercategories else None

    @classmethod
    def from_entries(cls, entries, classes, **kwargs):
        """Build from reader entries; every object's name must be in ``classes``."""
        index = {name: i for i, name in enumerate(classes)}
        labels = []
        inf = float("inf")
        for e in entries:
            # check allows boxes a rounding error outside the image; clip those in
            w, h = (e.size[0] - e.max_offset, e.size[1] - e.max_offset) if e.size else (inf, inf)
            rows = [(max(x0, 0.0), max(y0, 0.0), min(x1, w), min(y1, h), index[name], flag)
                    for name, x0, y0, x1, y1, flag in e.objects]
            labels.append(np.array(rows, dtype=np.float32).reshape(-1, 6))
        return cls(classes, [e.image_path for e in entries], [e.image_id for e in entries],
                   [e.size for e in entries], labels, turned=[e.apply_orientation for e in entries], **kwargs)

    def __len__(self):
        return len(self._paths)

    def __getitem__(self, i):
        import mxnet as mx

        img = read_image(self._paths[i], apply_orientation=self._turned[i])
        return mx.nd.array(img, dtype=np.uint8), self._labels[i].copy()

    def __repr__(self):
        return f"DetectionDataset({self.name!r}, {len(self)} images, classes={self.classes})"

    def label(self, i):
        """The (N, 6) label of image ``i`` without decoding the image."""
        return self._labels[i].copy()

    def image_path(self, i):
        return Path(self._paths[i])

    def image_id(self, i):
        return self._ids[i]

    def image_size(self, i):
        """(w, h) of image ``i`` from its header (no decoding)."""
        return self._sizes[i]

    def transform(self, fn):
        """A dataset whose items are ``fn(img, label)`` (like Gluon's ``Dataset.transform``)."""
        return TransformedDataset(self, fn)


class TransformedDataset:
    """``dataset`` with ``fn`` applied to every item; picklable when ``fn`` is."""

    def __init__(self, dataset, fn):
        self.dataset = dataset
        self.fn = fn

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.fn(*self.dataset[i])

    def __getattr__(self, name):  # classes, image_path, ... come from the wrapped dataset
        if name in ("dataset", "fn"):
            raise AttributeError(name)
        return getattr(self.dataset, name)
