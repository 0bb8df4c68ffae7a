"""YOLO txt datasets (Ultralytics / darknet) to and from the conversion Collection.

A label file holds one object per line: ``class cx cy w h``, the box centre and size divided by
the image width and height (class is the 0-based index into the names); a line ``class x1 y1 x2
y2 ...`` (three points or more, normalized the same way) is a polygon (Ultralytics' segment
labels), whose extent is the box. An image's label file is its path with the last ``images``
folder replaced by ``labels`` and the extension by ``.txt`` (Ultralytics' rule), or beside the
image when the path has no ``images`` folder (darknet). An image without a label file, or with an
empty one, has no objects (a negative).

Read: a folder with ``data.yaml`` (``names`` as a list or {index: name}; ``train``/``val``/``test``
as image folders, lists of image paths in a .txt, or lists of either; ``path`` as their base), or
a folder with ``classes.txt`` (or darknet's ``obj.names``) and the images in ``images/`` or in the
folder itself. Write: ``images/``, ``labels/``, ``classes.txt``, one ``SPLIT.txt`` image list per
split and a ``data.yaml`` naming them, which Ultralytics trains from as it is.
"""
import io
import os
from collections import Counter
from pathlib import Path

import yaml

from ..config import load_yaml
from ..errors import GluondetError
from ..fileio import atomic_write_text
from ..image import IMAGE_SUFFIXES, ImageReadError, read_header, read_image
from .collection import (PIXEL_DECIMALS, YOLO_DIGITS, Collection, Sample, Shape, clip_box, count_note, place_image,
                         refuse)
from .voc_convert import read_class_list

YAML_NAMES = ("data.yaml", "dataset.yaml")
CLASS_FILES = ("classes.txt", "obj.names")
SPLIT_KEYS = ("train", "val", "test")
NORMALIZED_TOLERANCE = 1e-6  # normalized values may exceed [0, 1] by float noise, no more


def label_path(image_path):
    """Ultralytics' rule: .../images/.../x.jpg -> .../labels/.../x.txt; else x.txt beside the image."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    path = str(image_path)
    if sa in path:
        path = sb.join(path.rsplit(sa, 1))
    return Path(os.path.splitext(path)[0] + ".txt")


def _list_images(folder):
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _read_names(value, where):
    if isinstance(value, dict):
        try:
            order = sorted((int(k), str(v)) for k, v in value.items())
        except (TypeError, ValueError):
            raise GluondetError(f"{where}: 'names' keys must be class indices 0, 1, ...") from None
        if [k for k, _ in order] != list(range(len(order))):
            raise GluondetError(f"{where}: 'names' indices must be 0..{len(order) - 1} without gaps")
        return [v.strip() for _, v in order]
    if isinstance(value, list) and value:
        return [str(v).strip() for v in value]
    raise GluondetError(f"{where}: 'names' must be a list of class names or {{index: name}}")


def _split_images(value, base, where):
    """Image paths of one split entry: a folder, a .txt list of images, or a list of those."""
    images = []
    for item in value if isinstance(value, list) else [value]:
        path = Path(str(item)).expanduser()
        path = path if path.is_absolute() else base / path
        if path.is_dir():
            images += _list_images(path)
        elif path.is_file() and path.suffix == ".txt":
            for line in path.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line:
                    p = Path(line)
                    images.append(p if p.is_absolute() else path.parent / p)
        else:
            raise GluondetError(f"{where}: split path {item!r} is neither a folder nor a .txt list ({path})")
    return images


def _yaml_layout(src, yaml_path):
    data = load_yaml(yaml_path)
    if "names" not in data:
        raise GluondetError(f"{yaml_path}: no 'names' (the class names)")
    classes = _read_names(data["names"], yaml_path)
    base = yaml_path.parent
    if data.get("path"):
        given = Path(str(data["path"])).expanduser()
        given = given if given.is_absolute() else base / given
        base = given if given.is_dir() else base  # a path from another machine: the yaml's folder
    # train/val/test, and other splits gluondet wrote (trainval: trainval.txt)
    keys = [k for k in data if k in SPLIT_KEYS or (isinstance(data[k], str) and data[k].endswith(".txt"))]
    keys = [k for k in keys if data.get(k) and data[k] not in [data[j] for j in keys[:keys.index(k)]]]
    splits = {k: _split_images(data[k], base, yaml_path) for k in keys}
    return classes, splits


def _flat_layout(src):
    class_file = next((src / n for n in CLASS_FILES if (src / n).is_file()), None)
    if class_file is None:
        raise GluondetError(f"{src}: not a YOLO dataset (no {', '.join(YAML_NAMES + CLASS_FILES)})")

    images = _list_images(src / "images" if (src / "images").is_dir() else src)
    return read_class_list(class_file), {None: images}


def read_yolo_collection(src):
    src = Path(src)
    yaml_path = src if src.is_file() else next((src / n for n in YAML_NAMES if (src / n).is_file()), None)
    classes, layout = _yaml_layout(src, yaml_path) if yaml_path else _flat_layout(src)
    samples, splits, problems, counts = {}, {}, [], Counter()
    for split, images in layout.items():
        members = []
        for image in images:
            key = os.path.realpath(image)
            if key not in samples:
                samples[key] = _read_sample(Path(image), classes, problems, counts)
            if samples[key] is not None:
                members.append(samples[key].name)
        if split is not None:
            splits[split] = members
    if problems:
        raise refuse(str(src), problems)
    if not samples:
        raise GluondetError(f"{src}: no images found")
    warnings = (count_note(counts, "no-label", "images have no label file: taken as negatives (Ultralytics' rule)")
                + count_note(counts, "upright", "photos with an EXIF rotation written upright (JPEG), as their "
                                                "YOLO labels see them"))
    return Collection(classes, list(samples.values()), splits, warnings)


def _upright(image):
    """(width, height, bytes or None): a photo with an EXIF rotation comes back upright, re-encoded,
    since Ultralytics sizes (and so normalizes) images as they are shown; else the stored size."""
    from PIL import Image

    header = read_header(image)
    if header.orientation == 1:
        return header.width, header.height, None
    upright = read_image(image)  # gluondet.image turns it as a viewer (and Ultralytics) shows it
    buf = io.BytesIO()
    Image.fromarray(upright).save(buf, format="JPEG", quality=95)
    return upright.shape[1], upright.shape[0], buf.getvalue()


def _read_sample(image, classes, problems, counts):
    try:
        width, height, data = _upright(image)
    except ImageReadError as e:
        problems.append(str(e))
        return None
    if data is not None:
        counts["upright"] += 1
        sample = Sample(image.stem + ".jpg", width, height, data=data)
    else:
        sample = Sample(image.name, width, height, source=image)
    labels = label_path(image)
    if not labels.is_file():
        counts["no-label"] += 1
        return sample
    try:
        text = labels.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{labels}: cannot read ({e})")
        return None
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            shape = parse_label_line(line, classes, width, height)
            if isinstance(shape, str):
                problems.append(f"{labels}:{n}: {shape}: {line.strip()!r}")
            else:
                sample.shapes.append(shape)
    return sample


def parse_label_line(line, classes, width, height):
    """A Shape from one label line, or a string saying what is wrong with it."""
    parts = line.split()
    try:
        index, values = int(parts[0]), [float(v) for v in parts[1:]]
    except ValueError:
        return "not a class index followed by numbers"
    if not 0 <= index < len(classes):
        return f"class index {index} is not in 0..{len(classes) - 1}"
    if len(values) != 4 and (len(values) < 6 or len(values) % 2):
        return "expected 'class cx cy w h' or 'class x1 y1 x2 y2 x3 y3 ...'"
    if not all(-NORMALIZED_TOLERANCE <= v <= 1 + NORMALIZED_TOLERANCE for v in values):
        return "coordinates must be normalized to [0, 1]"
    scale = [width, height]
    if len(values) == 4:
        # edges from the unrounded centre and size: a centre rounded first loses the half-digit
        # of a box whose edges have PIXEL_DECIMALS decimals (x0 + x1 odd in the last one)
        cx, cy, w, h = (v * scale[i % 2] for i, v in enumerate(values))
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        return Shape(classes[index], tuple(round(v, PIXEL_DECIMALS) for v in clip_box(box, width, height)))
    pixels = [round(v * scale[i % 2], PIXEL_DECIMALS) for i, v in enumerate(values)]
    xs, ys = pixels[0::2], pixels[1::2]
    return Shape(classes[index], (min(xs), min(ys), max(xs), max(ys)), polygons=[pixels])


# ----------------------------------------------------------------------------- writing
def _number(v):
    return f"{v:.{YOLO_DIGITS}g}"


def label_line(index, shape, width, height):
    x0, y0, x1, y1 = shape.box
    values = ((x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height)
    return " ".join([str(index)] + [_number(v) for v in values])


def write_yolo_collection(collection, out, copy):
    """A YOLO dataset at ``out`` (see the module docstring); returns ("data.yaml", notes)."""
    out = Path(out)
    index = {name: i for i, name in enumerate(collection.classes)}
    counts = Counter()
    for sample in collection.samples:
        place_image(sample, out / "images", copy)
        lines = []
        for shape in sample.shapes:
            counts["polygons"] += bool(shape.polygons)
            counts["rle"] += shape.rle
            if shape.crowd:
                counts["crowd"] += 1
                continue
            counts["difficult"] += shape.difficult
            lines.append(label_line(index[shape.label], shape, sample.width, sample.height) + "\n")
        atomic_write_text(out / "labels" / f"{sample.stem}.txt", "".join(lines))
    atomic_write_text(out / "classes.txt", "".join(f"{name}\n" for name in collection.classes))
    data = {"names": dict(enumerate(collection.classes))}
    for split, names in collection.splits.items():
        atomic_write_text(out / f"{split}.txt", "".join(f"./images/{n}\n" for n in names))
        data[split] = f"{split}.txt"
    for role in SPLIT_KEYS:  # COCO's train2017 serves as train
        data.setdefault(role, next((data[k] for k in collection.splits if k.startswith(role)), None))
    data = {k: v for k, v in data.items() if v is not None}
    notes = []
    if "train" not in data or "val" not in data:
        data.setdefault("train", "images")
        data.setdefault("val", data["train"])
        notes.append(f"the source has no train and val splits: data.yaml uses {data['train']} for train and "
                     f"{data['val']} for val (split the data before training on it)")
    atomic_write_text(out / "data.yaml", yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    notes += (count_note(counts, "crowd", "crowd regions left out (YOLO labels have no crowd flag)")
              + count_note(counts, "difficult", "difficult objects written as plain boxes (YOLO has no flag)")
              + count_note(counts, "polygons", "polygon outlines not kept (YOLO detection labels hold boxes)")
              + count_note(counts, "rle", "RLE masks not kept"))
    return "data.yaml", notes
