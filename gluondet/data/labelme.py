"""labelme JSON to a VOC folder or a COCO file (``gluondet data convert labelme SRC DST --to voc|coco``).

Every shape with points becomes a box: rectangles and masks (two corners), polygons, line strips
(their extent), circles (centre and a point on the rim). Polygons are kept as COCO segmentation.
A shape that encloses no area (a point, a straight line) is left out with a warning. The image is
``imagePath`` relative to the JSON file, which must stay inside SRC_DIR; when that file is missing
the embedded ``imageData`` is used. Photos with an EXIF rotation are written upright, since
labelme draws (and so labels) them upright.

Everything is read and checked before anything is written: a problem in any file stops the
conversion with a list of them, and nothing is half-written.
"""
import base64
import io
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from ..errors import GluondetError
from ..fileio import atomic_write_bytes, atomic_write_text

EXIF_ORIENTATION = 0x0112
PIL_FORMAT_EXT = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp"}


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
    data: Optional[bytes] = None  # encoded image bytes to write (imageData, or re-encoded upright)
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
    from PIL import Image, ImageOps

    stem = json_path.stem
    rel = str(doc.get("imagePath") or "").replace("\\", "/")  # labelme on Windows writes backslashes
    source = (json_path.parent / rel).resolve() if rel else None
    if source is not None and source != src_dir and src_dir not in source.parents:
        raise GluondetError(f"{json_path}: imagePath {rel!r} points outside {src_dir}; refused")
    if source is not None and source.is_file():
        data, ext = None, source.suffix.lower()
        opener = lambda: Image.open(source)  # noqa: E731
    elif doc.get("imageData"):
        try:
            data = base64.b64decode(doc["imageData"], validate=False)
        except ValueError as e:
            raise GluondetError(f"{json_path}: imageData is not base64 ({e})") from None
        source, ext = None, None
        opener = lambda: Image.open(io.BytesIO(data))  # noqa: E731
    else:
        raise GluondetError(f"{json_path}: image {rel or '(no imagePath)'} not found and no imageData embedded")
    try:
        with opener() as im:
            ext = ext or PIL_FORMAT_EXT.get(im.format, ".png")
            width, height = im.size
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
            if orientation not in (1, None):  # labelme shows (and the user labelled) the upright image
                upright = ImageOps.exif_transpose(im)
                buf = io.BytesIO()
                upright.convert("RGB").save(buf, format="JPEG", quality=95)
                data, source, ext = buf.getvalue(), None, ".jpg"
                width, height = upright.size
            elif data is not None and ext not in (".jpg", ".jpeg", ".png", ".bmp"):
                buf = io.BytesIO()
                im.convert("RGB").save(buf, format="PNG")
                data, ext = buf.getvalue(), ".png"
    except GluondetError:
        raise
    except Exception as e:  # PIL raises many types for a bad file
        raise GluondetError(f"{json_path}: its image cannot be read ({type(e).__name__}: {e})") from None
    image = LabelmeImage(stem, json_path, width, height, ext, source=source, data=data)
    declared = (doc.get("imageWidth"), doc.get("imageHeight"))
    if all(declared) and tuple(declared) != (width, height):
        image.warnings.append(f"{json_path}: imageWidth/imageHeight say {declared[0]}x{declared[1]} but the "
                              f"image is {width}x{height}; using the image's size")
    return image


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
    polygon = None
    if kind == "circle" and len(points) == 2:
        (cx, cy), (px, py) = points
        r = math.hypot(px - cx, py - cy)
        box = (cx - r, cy - r, cx + r, cy + r)
    else:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        box = (min(xs), min(ys), max(xs), max(ys))
        if kind == "polygon" and len(points) >= 3:
            polygon = [_clip(v, image.width if i % 2 == 0 else image.height)
                       for p in points for i, v in enumerate(p)]
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


def convert_labelme(src_dir, dst, to="voc"):
    """Convert a folder of labelme JSON files into a VOC folder or a COCO dataset at ``dst``.

    VOC: ``dst/Annotations/*.xml`` and ``dst/JPEGImages/``. COCO: ``dst/annotations/
    instances_default.json`` and ``dst/images/``. Returns ``{"images", "boxes", "classes",
    "warnings", "output"}``.
    """
    if to not in ("voc", "coco"):
        raise GluondetError(f"--to {to}: use voc or coco")
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise GluondetError(f"{dst}: exists and is not an empty folder; choose a new destination")
    images = read_labelme_dir(src_dir)
    classes = sorted({s.label for im in images for s in im.shapes})
    if to == "voc":
        output = _write_voc(images, dst)
    else:
        output = _write_coco(images, classes, dst)
    return {"images": len(images), "boxes": sum(len(im.shapes) for im in images), "classes": classes,
            "warnings": [w for im in images for w in im.warnings], "output": str(output)}


def _write_image(image, folder):
    target = folder / f"{image.stem}{image.ext}"
    if image.data is not None:
        atomic_write_bytes(target, image.data)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image.source, target)
    return target


def _write_voc(images, dst):
    for image in images:
        _write_image(image, dst / "JPEGImages")
        atomic_write_text(dst / "Annotations" / f"{image.stem}.xml", voc_xml(image))
    return dst


def voc_xml(image):
    """VOC annotation text for a LabelmeImage: 1-based integer pixel coordinates, like LabelImg."""
    from xml.etree import ElementTree as ET

    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = f"{image.stem}{image.ext}"
    size = ET.SubElement(root, "size")
    for tag, value in (("width", image.width), ("height", image.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for shape in image.shapes:
        x0, y0, x1, y1 = shape.box
        # continuous [x0, x1] covers pixels floor(x0) .. ceil(x1) - 1 (0-based) = floor(x0)+1 .. ceil(x1) (1-based)
        xmin, ymin = min(math.floor(x0) + 1, image.width - 1), min(math.floor(y0) + 1, image.height - 1)
        xmax, ymax = max(math.ceil(x1), xmin + 1), max(math.ceil(y1), ymin + 1)
        xmax, ymax = min(xmax, image.width), min(ymax, image.height)
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = shape.label
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "1" if shape.difficult else "0"
        box = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _write_coco(images, classes, dst):
    cat_ids = {name: i + 1 for i, name in enumerate(classes)}
    doc = {"info": {"description": "converted from labelme by gluondet"}, "licenses": [],
           "images": [], "annotations": [], "categories": [{"id": cat_ids[n], "name": n, "supercategory": ""}
                                                           for n in classes]}
    ann_id = 0
    for image_id, image in enumerate(images, 1):
        target = _write_image(image, dst / "images")
        doc["images"].append({"id": image_id, "file_name": target.name, "width": image.width,
                              "height": image.height})
        for shape in image.shapes:
            ann_id += 1
            x0, y0, x1, y1 = shape.box
            polygon = shape.polygon or [x0, y0, x1, y0, x1, y1, x0, y1]
            area = _polygon_area(polygon) if shape.polygon else (x1 - x0) * (y1 - y0)
            doc["annotations"].append({"id": ann_id, "image_id": image_id, "category_id": cat_ids[shape.label],
                                       "bbox": [x0, y0, x1 - x0, y1 - y0], "area": area,
                                       "segmentation": [polygon], "iscrowd": 0})
    ann_path = dst / "annotations" / "instances_default.json"
    atomic_write_text(ann_path, json.dumps(doc, ensure_ascii=False, indent=1))
    return ann_path


def _polygon_area(flat):
    xs, ys = flat[0::2], flat[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2.0

