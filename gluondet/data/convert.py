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
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import GluondetError
from ..fileio import current_umask
from .coco_convert import read_coco_collection, write_coco_collection
from .collection import validate
from .labelme import read_labelme_collection
from .voc_convert import read_voc_collection, write_voc_collection
from .yolo import read_yolo_collection, write_yolo_collection

SOURCE_FORMATS = ("voc", "coco", "yolo", "labelme")
TARGET_FORMATS = ("voc", "coco", "yolo")


# ----------------------------------------------------------------------------- the driver
def readers():
    return {"voc": read_voc_collection, "coco": read_coco_collection, "yolo": read_yolo_collection,
            "labelme": read_labelme_collection}


def writers():
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

    os.chmod(tmp, 0o777 & ~current_umask())
    if dst.is_dir():
        dst.rmdir()  # empty, checked before
    os.replace(tmp, dst)
