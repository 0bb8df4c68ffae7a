"""labelme JSON reader for ``gluondet data convert labelme SRC DST --to voc|coco|yolo`` (convert.py).

Every shape with points becomes a box: rectangles and masks (two corners), polygons, line strips
(their extent), circles (centre and a point on the rim). Polygons, circles (as 32-gons) and
rectangles (their 4 corners) are kept as outlines, so COCO output carries their masks.
A shape that encloses no area (a point, a straight line) and a shape of a type labelme does not
write (``shape_type: banana``) are left out with a warning. The image is
``imagePath`` relative to the JSON file, which must stay inside SRC_DIR; when that file is missing
the embedded ``imageData`` is used. Photos with an EXIF rotation are copied as they are, with the
size labelme showed them at (turned), so gluondet.image reads them turned, as they were labelled.

Everything is read and checked before anything is written: a problem in any file stops the
conversion with a list of them, and nothing is half-written.
"""
import base64
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from ..errors import GluondetError
from ..image import IMAGE_SUFFIXES, ImageReadError, read_header, read_image
from .collection import Collection, Sample, Shape

# labelme's shape types (labelme/shape.py); a mask shape carries its two box corners as points
SHAPE_TYPES = ("polygon", "rectangle", "circle", "line", "linestrip", "point", "points", "mask")
FORMAT_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp"}  # embedded imageData kept as is
CIRCLE_VERTICES = 32  # a labelme circle becomes a polygon of this many vertices


@dataclass
class LabelmeShape:
    label: str
    box: tuple  # xmin, ymin, xmax, ymax: continuous pixel coordinates, inside the image
    polygon: Optional[list] = None  # [x1, y1, x2, y2, ...] for polygons
    difficult: bool = False


@dataclass
class LabelmeImage:
    stem: str
    json_path: Path
    width: int
    height: int
    ext: str
    source: Optional[Path] = None  # the image file to copy, or
    data: Optional[bytes] = None  # encoded image bytes to write (imageData, or re-encoded as PNG)
    shapes: List[LabelmeShape] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)


def read_labelme_json(json_path, src_dir):
    """Parse one labelme file into a LabelmeImage; a problem the user must fix is a GluondetError."""
    json_path, src_dir = Path(json_path), Path(src_dir).resolve()
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise GluondetError(f"{json_path}: cannot read ({e})") from None
    except ValueError as e:
        raise GluondetError(f"{json_path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise GluondetError(f"{json_path}: not a labelme file (no 'shapes' list)")
    image = _load_image(json_path, src_dir, doc)
    for k, shape in enumerate(doc["shapes"], 1):
        converted = _shape(shape, image)
        if isinstance(converted, str):
            image.warnings.append(f"{json_path}: shape {k}: {converted}; left out")
        else:
            image.shapes.append(converted)
    return image


def _load_image(json_path, src_dir, doc):
    stem = json_path.stem
    rel = str(doc.get("imagePath") or "").replace("\\", "/")  # labelme on Windows writes backslashes
    source = (json_path.parent / rel).resolve() if rel else None
    if source is not None and source != src_dir and src_dir not in source.parents:
        raise GluondetError(f"{json_path}: imagePath {rel!r} points outside {src_dir}; refused")
    if source is not None and source.is_file():
        data = None
    elif doc.get("imageData"):
        try:
            data = base64.b64decode(doc["imageData"], validate=False)
        except ValueError as e:
            raise GluondetError(f"{json_path}: imageData is not base64 ({e})") from None
        source = None
    else:
        raise GluondetError(f"{json_path}: image {rel or '(no imagePath)'} not found and no imageData embedded")
    try:
        header = read_header(source or json_path, data=data)
        ext = source.suffix.lower() if source else FORMAT_SUFFIXES.get(header.format, "")
        if ext not in IMAGE_SUFFIXES:  # a format gluondet does not read: store the pixels as PNG
            data, source, ext = _png(read_image(source or json_path, data=data)), None, ".png"
    except ImageReadError as e:
        raise GluondetError(f"{json_path}: its image cannot be read ({e.reason})") from None
    # The file is kept as it is, EXIF orientation included. labelme shows (and the user labelled)
    # the turned picture, so its size is what the annotation declares, and gluondet.image's
    # orientation policy reads the pixels turned, as labelme did.
    width, height = header.displayed_size
    image = LabelmeImage(stem, json_path, width, height, ext, source=source, data=data)
    declared = (doc.get("imageWidth"), doc.get("imageHeight"))
    if all(declared) and tuple(declared) != (width, height):
        image.warnings.append(f"{json_path}: imageWidth/imageHeight say {declared[0]}x{declared[1]} but the "
                              f"image is {width}x{height}; using the image's size")
    return image


def _png(pixels):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _shape(shape, image):
    """A LabelmeShape, or a string saying why this shape gives no box."""
    label = str(shape.get("label") or "").strip()
    if not label:
        return "no label"
    try:
        points = [(float(x), float(y)) for x, y in shape.get("points") or []]
    except (TypeError, ValueError):
        return "points are not [x, y] pairs"
    if not points or not all(math.isfinite(v) for p in points for v in p):
        return "no points"
    kind = shape.get("shape_type") or "polygon"  # labelme before 3.x wrote polygons only
    if kind not in SHAPE_TYPES:
        return f"unknown shape_type {kind!r} (labelme writes {', '.join(SHAPE_TYPES)})"
    polygon = None
    if kind == "circle" and len(points) == 2:
        (cx, cy), (px, py) = points
        r = math.hypot(px - cx, py - cy)
        box = (cx - r, cy - r, cx + r, cy + r)
        # its outline too, so COCO output has its mask (round as drawn, cut by the border)
        angles = [2 * math.pi * k / CIRCLE_VERTICES for k in range(CIRCLE_VERTICES)]
        polygon = [_clip(v, image.width if i % 2 == 0 else image.height)
                   for a in angles for i, v in enumerate((cx + r * math.cos(a), cy + r * math.sin(a)))]
    else:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        box = (min(xs), min(ys), max(xs), max(ys))
        if kind == "polygon" and len(points) >= 3:
            polygon = [_clip(v, image.width if i % 2 == 0 else image.height)
                       for p in points for i, v in enumerate(p)]
        elif kind == "rectangle":  # its 4 corners: a mask for COCO output
            x0, y0, x1, y1 = (_clip(box[0], image.width), _clip(box[1], image.height),
                              _clip(box[2], image.width), _clip(box[3], image.height))
            polygon = [x0, y0, x1, y0, x1, y1, x0, y1]
    box = (_clip(box[0], image.width), _clip(box[1], image.height),
           _clip(box[2], image.width), _clip(box[3], image.height))
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        return f"{kind} '{label}' encloses less than a pixel (a point or a line)"
    difficult = bool((shape.get("flags") or {}).get("difficult"))
    return LabelmeShape(label, box, polygon, difficult)


def _clip(v, limit):
    return min(max(v, 0.0), float(limit))


# ----------------------------------------------------------------------------- conversion
def read_labelme_dir(src_dir):
    """Every ``*.json`` in ``src_dir`` (sorted) as LabelmeImages; all problems at once as one error."""
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise GluondetError(f"{src_dir}: not a folder")
    files = sorted(src_dir.glob("*.json"))
    if not files:
        raise GluondetError(f"{src_dir}: no labelme .json files")
    images, problems = [], []
    for path in files:
        try:
            images.append(read_labelme_json(path, src_dir))
        except GluondetError as e:
            problems.append(str(e))
    if problems:
        raise GluondetError(f"{len(problems)} labelme file(s) cannot be converted:\n" + "\n".join(problems))
    return images


def read_labelme_collection(src):
    """A folder of labelme JSON files as a Collection (convert.py's source format); classes sorted."""
    samples, warnings = [], []
    for image in read_labelme_dir(src):
        shapes = [Shape(s.label, tuple(s.box), difficult=s.difficult, polygons=[s.polygon] if s.polygon else [])
                  for s in image.shapes]
        samples.append(Sample(f"{image.stem}{image.ext}", image.width, image.height, source=image.source,
                              data=image.data, shapes=shapes))
        warnings.extend(image.warnings)
    classes = sorted({s.label for sample in samples for s in sample.shapes})
    return Collection(classes, samples, {}, warnings)
