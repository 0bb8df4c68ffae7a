"""A dataset between annotation formats: classes, images and their shapes (boxes, polygons) in
continuous pixel coordinates, the helpers every format module shares, and the checks a collection
must pass before anything is written. Each format module (voc_convert, coco_convert, yolo, labelme)
reads into and writes from it; ``convert.py`` drives them."""
import math
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import GluondetError

PIXEL_DECIMALS = 3  # pixel coordinates computed from normalized YOLO values are rounded to this
YOLO_DIGITS = 10  # significant digits of normalized YOLO values (1e-10 of the image side)
ERROR_LINES = 30  # problems listed when a source cannot be converted


@dataclass
class Shape:
    """One object: class name, box in continuous pixel coordinates, flags and polygons."""

    label: str
    box: tuple
    difficult: bool = False
    crowd: bool = False
    polygons: List[list] = field(default_factory=list)  # flat [x1, y1, x2, y2, ...] lists
    rle: bool = False  # the source held an RLE mask (COCO), which no target here can carry over
    area: Optional[float] = None  # COCO's area when the source had one


@dataclass
class Sample:
    """One image: its file name in the target, size, where its bytes come from, and its shapes."""

    name: str
    width: int
    height: int
    source: Optional[Path] = None  # an image file to link or copy, or
    data: Optional[bytes] = None  # encoded bytes to write (labelme's imageData, an upright photo)
    shapes: List[Shape] = field(default_factory=list)

    @property
    def stem(self):
        return os.path.splitext(self.name)[0]


@dataclass
class Collection:
    """A whole dataset in between formats: classes in order, samples, and named splits."""

    classes: List[str]
    samples: List[Sample]
    splits: Dict[str, List[str]] = field(default_factory=dict)  # split name -> sample names
    warnings: List[str] = field(default_factory=list)  # what the reader left out or changed


# ----------------------------------------------------------------------------- shared helpers
def refuse(what, problems):
    """A GluondetError listing ``problems`` (strings), at most ERROR_LINES of them."""
    lines = [str(p) for p in problems[:ERROR_LINES]]
    if len(problems) > ERROR_LINES:
        lines.append(f"... and {len(problems) - ERROR_LINES} more")
    return GluondetError(f"{what} cannot be converted ({len(problems)} problem(s)):\n" + "\n".join(lines))


def clip_box(box, width, height):
    x0, y0, x1, y1 = box
    return (min(max(x0, 0.0), width), min(max(y0, 0.0), height),
            min(max(x1, 0.0), width), min(max(y1, 0.0), height))


def polygon_area(flat):
    """Shoelace area of a flat [x1, y1, ...] polygon."""
    xs, ys = flat[0::2], flat[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2.0


def shape_area(shape):
    if shape.area is not None:
        return shape.area
    if shape.polygons:
        return sum(polygon_area(p) for p in shape.polygons)
    x0, y0, x1, y1 = shape.box
    return (x1 - x0) * (y1 - y0)


def count_note(counter, key, message):
    """``message`` prefixed with the count, or nothing when the count is 0."""
    n = counter.get(key, 0)
    return [f"{n} {message}"] if n else []


def validate(collection, target):
    """Refuse what no target can be written from: duplicate file names, unknown classes, bad boxes."""
    problems = []
    names = Counter(s.name for s in collection.samples)
    problems += [f"{n}: {c} images have this file name (the target needs unique names)"
                 for n, c in names.items() if c > 1]
    if target in ("voc", "yolo") and not problems:
        stems = Counter(s.stem for s in collection.samples)
        problems += [f"{n}: {c} images share this name stem (a {target} label file per image needs unique stems)"
                     for n, c in stems.items() if c > 1]
    known = set(collection.classes)
    for s in collection.samples:
        for k, shape in enumerate(s.shapes, 1):
            x0, y0, x1, y1 = shape.box
            if shape.label not in known:
                problems.append(f"{s.name}: object {k}: class '{shape.label}' is not in the class list")
            if not all(math.isfinite(v) for v in shape.box) or x1 <= x0 or y1 <= y0:
                problems.append(f"{s.name}: object {k} ({shape.label}): box {list(shape.box)} has no area")
    if problems:
        raise refuse("the source", problems)


# ----------------------------------------------------------------------------- images
def place_image(sample, folder, copy):
    """Write ``sample``'s image into ``folder``: link to the source (default), copy it, or write its bytes."""
    target = Path(folder) / sample.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if sample.data is not None:
        target.write_bytes(sample.data)  # inside the temporary output folder: atomic as a whole
    elif copy:
        shutil.copyfile(sample.source, target)
    else:
        os.symlink(Path(sample.source).resolve(), target)
    return target
