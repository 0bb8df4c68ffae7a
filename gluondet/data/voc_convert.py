"""VOC folders to and from the conversion Collection (see convert.py for the pixel conventions).

Read: one VOC folder (Annotations/, JPEGImages/, ImageSets/Main/*.txt as splits), through the
same reader and check as training, so a file training would refuse is refused here too. The
class order is that of ``classes.txt`` in the folder when there is one (gluondet writes it),
else the sorted names. Write: the same layout, ``classes.txt``, and one split file per split.
"""
import math
import os
from collections import Counter
from pathlib import Path

from ..errors import GluondetError
from ..fileio import atomic_write_text
from .base import FLAG_DIFFICULT, DatasetIndex
from .check import check_index
from .collection import PIXEL_DECIMALS, Collection, Sample, Shape, count_note, place_image, refuse
from .voc import SPLIT_DIR, index_voc_root, is_voc_root, read_split_file

CLASSES_FILE = "classes.txt"


def read_class_list(path):
    """Class names, one per line (blank lines and surrounding spaces ignored)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise GluondetError(f"{path}: cannot read the class list ({e})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_voc_collection(src):
    if not is_voc_root(src):
        raise GluondetError(f"{src}: not a VOC folder (no Annotations/); convert one VOC folder at a time")
    entries = index_voc_root(src)
    declared = read_class_list(src / CLASSES_FILE) if (src / CLASSES_FILE).is_file() else None
    index = DatasetIndex(list(entries.values()), [], list(entries.values()))
    result = check_index(index, declared, str(src / CLASSES_FILE))
    if result.errors:
        raise refuse(str(src), result.errors)
    samples, by_id = [], {}
    for entry in result.entries:
        w, h = entry.size
        shapes = []
        for (name, *_, flag), (x0, y0, x1, y1) in zip(entry.objects, entry.raw_boxes):
            box = (max(x0 - 1.0, 0.0), max(y0 - 1.0, 0.0), min(x1, w), min(y1, h))
            shapes.append(Shape(name, box, difficult=flag == FLAG_DIFFICULT))
        sample = Sample(os.path.basename(entry.image_path), w, h, source=Path(entry.image_path), shapes=shapes)
        samples.append(sample)
        by_id[entry.image_id] = sample.name
    return Collection(result.classes, samples, _read_splits(src, by_id))


def _read_splits(src, by_id):
    splits, problems = {}, []
    split_dir = src / SPLIT_DIR
    for path in sorted(split_dir.glob("*.txt")) if split_dir.is_dir() else []:
        if "_" in path.stem:  # VOC's per-class lists (aeroplane_train.txt) repeat the others
            continue
        ids = read_split_file(path)
        problems += [f"{path}: id '{i}' has no annotation" for i in ids if i not in by_id]
        splits[path.stem] = [by_id[i] for i in dict.fromkeys(ids) if i in by_id]
    if problems:
        raise refuse(str(src), problems)
    return splits


# ----------------------------------------------------------------------------- writing
def voc_pixels(box, width, height):
    """Continuous box -> 1-based inclusive VOC pixels, and whether it had to be widened.

    For ``--voc-integer``: the smallest whole-pixel box that covers ``box``. Values within 1e-6 of
    a whole number count as whole (float noise from other formats).
    """
    x0, y0, x1, y1 = (round(v) if abs(v - round(v)) < 1e-6 else v for v in box)
    xmin, ymin = math.floor(x0) + 1, math.floor(y0) + 1
    xmax, ymax = min(max(math.ceil(x1), xmin), width), min(max(math.ceil(y1), ymin), height)
    rounded = (xmin - 1, ymin - 1, xmax, ymax) != (x0, y0, x1, y1)
    return (int(xmin), int(ymin), int(xmax), int(ymax)), rounded


def voc_coordinates(box):
    """Continuous box -> VOC's 1-based values as text, exact to PIXEL_DECIMALS, and whether rounded.

    A box on whole pixels is written as integers; a fractional one keeps up to PIXEL_DECIMALS
    decimals (trailing zeros dropped), the precision the YOLO reader rounds to, so each format
    gives back the same numbers and float noise (199.1 + 1 = 200.10000000000002) is not written.
    """
    values = (box[0] + 1.0, box[1] + 1.0, box[2], box[3])
    fixed = [round(v, PIXEL_DECIMALS) for v in values]
    rounded = any(abs(v - f) > 1e-6 for v, f in zip(values, fixed))
    return [_decimal_text(v) for v in fixed], rounded


def _decimal_text(value):
    text = f"{value:.{PIXEL_DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def voc_annotation(sample, counts, integer=False):
    """VOC XML text for one sample (LabelImg's layout); ``counts`` tallies what VOC cannot hold.

    ``integer``: boxes widened to whole pixels, for tools that read VOC coordinates as integers.
    """
    from xml.etree import ElementTree as ET

    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = sample.name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", sample.width), ("height", sample.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for shape in sample.shapes:
        if integer:
            pixels, widened = voc_pixels(shape.box, sample.width, sample.height)
            counts["widened"] += widened
        else:
            pixels, rounded = voc_coordinates(shape.box)
            counts["rounded"] += rounded
        counts["crowd"] += shape.crowd
        counts["polygons"] += bool(shape.polygons)
        counts["rle"] += shape.rle
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = shape.label
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "1" if (shape.difficult or shape.crowd) else "0"
        box = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), pixels):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_voc_collection(collection, out, copy, integer=False):
    """A VOC folder at ``out``; returns ("." , notes). ``integer``: see voc_annotation."""
    out = Path(out)
    counts = Counter()
    for sample in collection.samples:
        place_image(sample, out / "JPEGImages", copy)
        atomic_write_text(out / "Annotations" / f"{sample.stem}.xml", voc_annotation(sample, counts, integer))
    atomic_write_text(out / CLASSES_FILE, "".join(f"{name}\n" for name in collection.classes))
    stems = {s.name: s.stem for s in collection.samples}
    for split, names in collection.splits.items():
        atomic_write_text(out / SPLIT_DIR / f"{split}.txt", "".join(f"{stems[n]}\n" for n in names))
    notes = (count_note(counts, "widened", "boxes not on whole pixels were widened to the pixels they touch "
                                           "(--voc-integer)")
             + count_note(counts, "rounded", f"boxes rounded to {PIXEL_DECIMALS} decimals of a pixel")
             + count_note(counts, "crowd", "crowd regions written as difficult objects (VOC has no crowd flag)")
             + count_note(counts, "polygons", "polygon outlines not kept (VOC annotations hold boxes only)")
             + count_note(counts, "rle", "RLE masks not kept (VOC annotations hold boxes only)"))
    return ".", notes
