"""``gluondet data convert``: VOC, COCO, YOLO and labelme datasets through one representation.

Every reader turns its format into a ``Collection`` (classes in order, images with their shapes,
named splits); every writer turns a Collection into its format and returns notes on what the
format could not hold. Nothing is dropped without a note.

Pixel conventions. Inside, a box is ``(x0, y0, x1, y1)`` in continuous pixel coordinates: the
image spans ``[0, W] x [0, H]`` and a box covering the 0-based pixels ``i..j`` is ``[i, j + 1]``
(COCO's convention). Each format maps to it exactly:

- VOC: 1-based inclusive pixels, read as GluonCV reads them (``xmin - 1`` is the first 0-based
  pixel): ``x0 = xmin - 1, x1 = xmax``. GluonCV, LabelImg and CVAT read and write fractional
  values (CVAT: ``<xmin>200.1</xmin>``), so a box is written with the coordinates it has: whole
  pixels as integers, fractional ones to ``PIXEL_DECIMALS`` decimals. ``voc_integer`` writes the
  smallest whole-pixel box that covers it instead (and counts the boxes it widened), for tools
  that parse VOC coordinates as integers.
- COCO: ``bbox = [x, y, w, h]`` with 0-based continuous ``x, y``: ``x0 = x, x1 = x + w``.
- YOLO: ``class cx cy w h``, the centre and size divided by the image width and height;
  ``YOLO_DIGITS`` significant digits are written, and box edges read back are rounded to
  ``PIXEL_DECIMALS`` decimals so whole-pixel boxes come back whole and 3-decimal ones exact.
- labelme: points in continuous pixel coordinates, as labelme draws them.

Flags: VOC ``difficult`` and COCO ``iscrowd`` are carried where both sides have them; COCO has no
difficult flag, so difficult objects keep it as an extra ``"difficult": 1`` key (read back by
gluondet, ignored by pycocotools); VOC has no crowd flag, so crowd regions become difficult
objects (both are ignored by evaluation); YOLO has neither: difficult boxes become plain boxes
and crowd regions are left out (as Ultralytics' own COCO converter does). Polygons are carried
between labelme, COCO and YOLO segment lines; VOC holds none.

The whole output is built in a temporary folder beside DST and renamed into place at the end:
an interrupted conversion leaves no half-written dataset.
"""
import math
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import GluondetError

SOURCE_FORMATS = ("voc", "coco", "yolo", "labelme")
TARGET_FORMATS = ("voc", "coco", "yolo")
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


# ----------------------------------------------------------------------------- the driver
def readers():
    from .coco_convert import read_coco_collection
    from .voc_convert import read_voc_collection
    from .yolo import read_yolo_collection

    return {"voc": read_voc_collection, "coco": read_coco_collection, "yolo": read_yolo_collection,
            "labelme": read_labelme_collection}


def writers():
    from .coco_convert import write_coco_collection
    from .voc_convert import write_voc_collection
    from .yolo import write_yolo_collection

    return {"voc": write_voc_collection, "coco": write_coco_collection, "yolo": write_yolo_collection}


def convert_dataset(source_format, src, dst, to, copy=False, voc_integer=False):
    """Convert the ``source_format`` dataset at ``src`` into a new ``to`` dataset at ``dst``.

    Everything is read and checked before anything is written; DST must not exist or be an empty
    folder. ``voc_integer``: VOC boxes widened to whole pixels. Returns ``{"images", "boxes",
    "classes", "splits", "warnings", "notes", "output"}``:
    warnings from reading (shapes left out), notes on what the target format could not hold.
    """
    if source_format not in SOURCE_FORMATS:
        raise GluondetError(f"source format '{source_format}': use one of {', '.join(SOURCE_FORMATS)}")
    if to not in TARGET_FORMATS:
        raise GluondetError(f"--to {to}: use one of {', '.join(TARGET_FORMATS)}")
    if to == source_format:
        raise GluondetError(f"{src} is {to} already: nothing to convert")
    if voc_integer and to != "voc":
        raise GluondetError(f"--voc-integer: applies to --to voc only (this writes {to})")
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise GluondetError(f"{dst}: exists and is not an empty folder; choose a new destination")
    collection = readers()[source_format](Path(src))
    validate(collection, to)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    except OSError as e:
        raise GluondetError(f"{dst}: cannot write there ({e.strerror or e})") from None
    try:
        options = {"integer": voc_integer} if to == "voc" else {}
        output, notes = writers()[to](collection, tmp, copy, **options)
        _publish(tmp, dst)
    except OSError as e:  # a full disk, or a file system without symbolic links
        hint = "" if copy else "; on a file system without symbolic links, pass --copy"
        raise GluondetError(f"{dst}: writing failed, nothing kept ({e.strerror or e}: {e.filename}){hint}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return {"images": len(collection.samples), "boxes": sum(len(s.shapes) for s in collection.samples),
            "classes": list(collection.classes),
            "splits": {name: len(members) for name, members in collection.splits.items()},
            "warnings": list(collection.warnings), "notes": notes, "output": str(dst / output)}


def _publish(tmp, dst):
    """Rename the finished temporary folder to ``dst`` (honouring the umask mkdtemp ignores)."""
    from ..fileio import current_umask

    os.chmod(tmp, 0o777 & ~current_umask())
    if dst.is_dir():
        dst.rmdir()  # empty, checked before
    os.replace(tmp, dst)


# ----------------------------------------------------------------------------- labelme (source only)
def read_labelme_collection(src):
    """A folder of labelme JSON files (see labelme.py) as a Collection; classes sorted."""
    from .labelme import read_labelme_dir

    samples, warnings = [], []
    for image in read_labelme_dir(src):
        shapes = [Shape(s.label, tuple(s.box), difficult=s.difficult, polygons=[s.polygon] if s.polygon else [])
                  for s in image.shapes]
        samples.append(Sample(f"{image.stem}{image.ext}", image.width, image.height, source=image.source,
                              data=image.data, shapes=shapes))
        warnings.extend(image.warnings)
    classes = sorted({s.label for sample in samples for s in sample.shapes})
    return Collection(classes, samples, {}, warnings)
