"""Synthetic demo data: coloured shapes on textured backgrounds, written as a Pascal VOC dataset.

``write_shapes_voc`` makes the ``shapes_voc`` demo dataset that the README's first command and the
integration tests train on. Each image holds 0 to 4 filled shapes (circle/ellipse, square at any
rotation, triangle) of one of ``SHAPES_CLASSES``, at sizes from about 9% to 40% of the image, over
one of several textures (gradients, stripes, fine checks, smooth blobs, all with pixel noise). Shape
colours are drawn independently of the class, so a detector has to learn form, not hue; about 10%
of images hold no object (negatives). Shapes may overlap; a later shape never hides more than a
fifth of an earlier one.

Box convention. The generator knows each object's visible pixels exactly; its box is their tight
bound in 0-based *inclusive* pixel indices (``xmax`` is the last column holding a shape pixel).
Pascal VOC XML counts pixels from 1, and VOC readers (GluonCV's, gluondet's) subtract 1 from every
coordinate, so the XML holds ``index + 1``: an object covering columns 10..20 is written
``<xmin>11</xmin> ... <xmax>21</xmax>`` and read back as 10.0 .. 20.0.

Output is deterministic: the same arguments give the same bytes (each image draws from its own
random generator seeded by ``(seed, image index)``).
"""
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np

from ..errors import GluondetError
from ..progress import Progress

SHAPES_CLASSES = ("circle", "square", "triangle")

EMPTY_IMAGE_FRACTION = 0.1
MAX_OBJECTS = 4
MIN_SIZE_FRACTION = 0.09  # object extent relative to the image side
MAX_SIZE_FRACTION = 0.40
MIN_VISIBLE_FRACTION = 0.8  # a later shape may hide at most a fifth of an earlier one
MIN_COLOUR_DISTANCE = 90.0  # RGB distance between a shape and the background it sits on
JPEG_QUALITY = 92
CIRCLE_VERTICES = 32  # a circle (ellipse) is written as a polygon of this many vertices


@dataclass
class ShapesImage:
    """One generated image before encoding, with what the test needs to check its boxes."""

    image: np.ndarray  # HxWx3 uint8 RGB, shapes drawn
    background: np.ndarray  # HxWx3 uint8 RGB, the same texture without shapes
    boxes: np.ndarray  # (N, 4) int: xmin, ymin, xmax, ymax, 0-based inclusive pixel indices
    class_ids: np.ndarray  # (N,) int, index into SHAPES_CLASSES
    polygons: list = None  # with masks: one [x1, y1, x2, y2, ...] polygon per object
    masks: np.ndarray = None  # with masks: (N, H, W) uint8, exactly what pycocotools fills of each polygon


# ----------------------------------------------------------------------------- backgrounds
def _texture(rng, size):
    """A random textured background, HxWx3 float in [0, 255]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    kind = rng.integers(4)
    if kind == 0:  # linear gradient in a random direction
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * xx + np.sin(angle) * yy
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    elif kind == 1:  # soft stripes at a random angle and period
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(0.04, 0.25)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period)
    elif kind == 2:  # fine checks: cells well below the smallest object, a texture rather than squares
        cell = rng.uniform(0.015, 0.05)
        t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)
        t = 0.25 + 0.5 * t  # keep the two check colours apart from pure c1/c2
    else:  # smooth blobs: a few random low-frequency waves summed
        t = np.zeros_like(xx)
        for _ in range(4):
            fx, fy = rng.uniform(0.5, 4, 2)
            phase = rng.uniform(0, 2 * np.pi)
            t += np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    img = c1 + (c2 - c1) * t[..., None]
    img += rng.normal(0, rng.uniform(3, 14), img.shape)
    return np.clip(img, 0, 255)


# ----------------------------------------------------------------------------- shapes
def _shape_mask(rng, class_name, size):
    """A boolean mask of one shape of ``class_name`` at a random position, size and rotation."""
    import cv2

    extent = rng.uniform(MIN_SIZE_FRACTION, MAX_SIZE_FRACTION) * size
    r = extent / 2
    # inside the image: a shape cut in half by the border would be ambiguous (half a square is a
    # rectangle); only a stretched ellipse may lose a sliver
    cx, cy = rng.uniform(r, size - r, 2)
    mask = np.zeros((size, size), np.uint8)
    if class_name == "circle":
        aspect = rng.uniform(0.8, 1.25)
        axes = (max(2, int(round(r * np.sqrt(aspect)))), max(2, int(round(r / np.sqrt(aspect)))))
        cv2.ellipse(mask, (int(round(cx)), int(round(cy))), axes, rng.uniform(0, 180), 0, 360, 1, -1)
    else:
        if class_name == "square":
            corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * (r / np.sqrt(2))
        else:  # triangle: equilateral, corners jittered so not all triangles are alike
            angles = np.deg2rad([90, 210, 330]) + rng.uniform(-0.2, 0.2, 3)
            corners = np.stack([np.cos(angles), np.sin(angles)], axis=1) * r
        theta = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        pts = corners @ rot.T + [cx, cy]
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool)


def _colour_apart_from(rng, region_pixels):
    """A random RGB colour at least MIN_COLOUR_DISTANCE from the mean of ``region_pixels``."""
    mean = region_pixels.reshape(-1, 3).mean(axis=0)
    for _ in range(50):
        colour = rng.uniform(0, 255, 3)
        if np.linalg.norm(colour - mean) >= MIN_COLOUR_DISTANCE:
            return colour
    # the farthest corner of the RGB cube is always at least 127 * sqrt(3) away
    return np.where(mean < 127.5, 255.0, 0.0)


def _tight_box(mask):
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def render_shapes_image(rng, size=256):
    """Draw one image with its exact boxes; see ``ShapesImage``."""
    background = _texture(rng, size)
    n_objects = 0 if rng.uniform() < EMPTY_IMAGE_FRACTION else int(rng.integers(1, MAX_OBJECTS + 1))
    masks, class_ids = [], []
    for _ in range(n_objects):
        for _attempt in range(20):
            class_id = int(rng.integers(len(SHAPES_CLASSES)))
            mask = _shape_mask(rng, SHAPES_CLASSES[class_id], size)
            if mask.sum() < 16:
                continue
            # keep every earlier object mostly visible, so each stays a fair target
            if all((m & ~mask).sum() >= MIN_VISIBLE_FRACTION * m.sum() for m in masks):
                masks.append(mask)
                class_ids.append(class_id)
                break
    image = background.copy()
    for mask in masks:
        colour = _colour_apart_from(rng, background[mask])
        shade = colour + rng.normal(0, 4, (int(mask.sum()), 3))
        image[mask] = np.clip(shade, 0, 255)
    # a later shape hides part of an earlier one: boxes bound what is really visible
    visible = []
    for i, mask in enumerate(masks):
        covered = np.zeros_like(mask)
        for later in masks[i + 1:]:
            covered |= later
        visible.append(mask & ~covered)
    boxes = np.array([_tight_box(v) for v in visible], np.int64).reshape(-1, 4)
    return ShapesImage(
        image=np.round(image).astype(np.uint8),
        background=np.round(background).astype(np.uint8),
        boxes=boxes,
        class_ids=np.array(class_ids, np.int64),
    )


# ----------------------------------------------------------------------------- shapes with masks
def _shape_polygon(rng, class_name, size):
    """One shape of ``class_name`` as a polygon [x1, y1, ...] (vertices rounded to 1/100 pixel)."""
    r = rng.uniform(MIN_SIZE_FRACTION, MAX_SIZE_FRACTION) * size / 2
    cx, cy = rng.uniform(r, size - r, 2)
    theta = rng.uniform(0, 2 * np.pi)
    if class_name == "circle":
        aspect = rng.uniform(0.8, 1.25)
        angles = np.linspace(0, 2 * np.pi, CIRCLE_VERTICES, endpoint=False)
        corners = np.stack([np.cos(angles) * np.sqrt(aspect), np.sin(angles) / np.sqrt(aspect)], axis=1) * r
    elif class_name == "square":
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * (r / np.sqrt(2))
    else:
        angles = np.deg2rad([90, 210, 330]) + rng.uniform(-0.2, 0.2, 3)
        corners = np.stack([np.cos(angles), np.sin(angles)], axis=1) * r
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = np.clip(corners @ rot.T + [cx, cy], 0, size)
    return [round(float(v), 2) for v in pts.ravel()]


def _fill_polygon(polygon, size):
    """The pixels pycocotools fills for ``polygon`` (what COCO's annToMask gives), as bool."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.frPyObjects([polygon], size, size)
    return mask_utils.decode(mask_utils.merge(rle)).astype(bool)


def render_masked_shapes_image(rng, size=256):
    """Like ``render_shapes_image``, with each object's exact polygon and mask; shapes do not touch
    (a hidden part would make the visible region differ from the polygon)."""
    background = _texture(rng, size)
    n_objects = 0 if rng.uniform() < EMPTY_IMAGE_FRACTION else int(rng.integers(1, MAX_OBJECTS + 1))
    polygons, masks, class_ids = [], [], []
    taken = np.zeros((size, size), bool)
    for _ in range(n_objects):
        for _attempt in range(20):
            class_id = int(rng.integers(len(SHAPES_CLASSES)))
            polygon = _shape_polygon(rng, SHAPES_CLASSES[class_id], size)
            mask = _fill_polygon(polygon, size)
            if mask.sum() >= 16 and not (mask & taken).any():
                polygons.append(polygon)
                masks.append(mask)
                class_ids.append(class_id)
                taken |= _grow(mask)
                break
    image = background.copy()
    for mask in masks:
        colour = _colour_apart_from(rng, background[mask])
        image[mask] = np.clip(colour + rng.normal(0, 4, (int(mask.sum()), 3)), 0, 255)
    return ShapesImage(
        image=np.round(image).astype(np.uint8), background=np.round(background).astype(np.uint8),
        boxes=np.array([_tight_box(m) for m in masks], np.int64).reshape(-1, 4),
        class_ids=np.array(class_ids, np.int64), polygons=polygons,
        masks=np.array(masks, np.uint8).reshape(-1, size, size))


def _grow(mask):
    """``mask`` and its 1-pixel neighbourhood, so the next shape keeps a gap of background."""
    import cv2

    return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


# ----------------------------------------------------------------------------- VOC writing
def _voc_xml(image_id, size, boxes, class_ids):
    """VOC annotation text; coordinates written 1-based (see the module docstring)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    size_el = ET.SubElement(root, "size")
    ET.SubElement(size_el, "width").text = str(size)
    ET.SubElement(size_el, "height").text = str(size)
    ET.SubElement(size_el, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for (xmin, ymin, xmax, ymax), class_id in zip(boxes.tolist(), class_ids.tolist()):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = SHAPES_CLASSES[class_id]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            ET.SubElement(box, tag).text = str(value + 1)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _encode_jpeg(image_rgb):
    import cv2

    ok, buf = cv2.imencode(".jpg", image_rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG image")
    return buf.tobytes()


def write_shapes_voc(out_dir, n_train=300, n_val=100, seed=0, size=256, progress=False, masks=False):
    """Write the shapes demo dataset as a VOC folder at ``out_dir`` and return its path.

    Writes ``JPEGImages/*.jpg``, ``Annotations/*.xml`` and ``ImageSets/Main/{train,val,trainval,
    test}.txt`` (test is the same list as val). The folder appears whole or not at all: it is
    built beside ``out_dir`` and renamed into place. An existing non-empty ``out_dir`` is refused.
    ``progress`` shows progress as gluondet.progress does (a bar on a terminal, one line otherwise).
    ``masks``: shapes that do not touch, each with its exact polygon, in both instance layouts:
    VOC's ``SegmentationObject/`` and ``SegmentationClass/`` PNGs, and COCO's
    ``annotations/instances_{train,val}.json`` (polygon segmentation, images named
    ``JPEGImages/ID.jpg`` from the root) with ``coco.yaml``, a dataset config for them.
    """
    out_dir = Path(out_dir).expanduser()
    if n_train < 0 or n_val < 0 or n_train + n_val == 0:
        raise GluondetError(f"{out_dir}: need a positive number of images (train={n_train}, val={n_val})")
    if size < 32:
        raise GluondetError(f"{out_dir}: image size {size} is too small for the shapes data (use >= 32)")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise GluondetError(f"{out_dir}: already exists and is not an empty folder; choose another")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        _write_into(work, n_train, n_val, seed, size, progress, masks, name=out_dir.name)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); os.replace cannot replace a folder
        os.replace(work, out_dir)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return out_dir


def _write_into(root, n_train, n_val, seed, size, progress, masks=False, name="shapes"):
    (root / "JPEGImages").mkdir()
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    ids = [f"shape_{i:06d}" for i in range(n_train + n_val)]
    coco = {image_id: None for image_id in ids}
    bar = Progress(ids, desc="shapes_voc", unit="img", enabled=progress)
    for index, image_id in enumerate(bar):
        rng = np.random.default_rng([seed, index])
        shapes = render_masked_shapes_image(rng, size) if masks else render_shapes_image(rng, size)
        (root / "JPEGImages" / f"{image_id}.jpg").write_bytes(_encode_jpeg(shapes.image))
        xml = _voc_xml(image_id, size, shapes.boxes, shapes.class_ids)
        (root / "Annotations" / f"{image_id}.xml").write_text(xml, encoding="utf-8")
        if masks:
            _write_voc_masks(root, image_id, shapes)
            coco[image_id] = shapes
    splits = {"train": ids[:n_train], "val": ids[n_train:]}
    if masks:
        for split in ("train", "val"):
            _write_coco_split(root / "annotations" / f"instances_{split}.json",
                              [(i, coco[i]) for i in splits[split]], size)
        (root / "coco.yaml").write_text(COCO_CONFIG.format(name=name), encoding="utf-8")
    splits["trainval"] = ids
    splits["test"] = splits["val"]
    for name, members in splits.items():
        text = "".join(f"{i}\n" for i in members)
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text(text, encoding="utf-8")


COCO_CONFIG = """# The same shapes as the VOC folder here, as COCO instances with polygon segmentation.
name: {name}_coco
format: coco
root: .
classes: [circle, square, triangle]
splits:
  train: {{annotations: annotations/instances_train.json, images: .}}
  val: {{annotations: annotations/instances_val.json, images: .}}
  test: {{annotations: annotations/instances_val.json, images: .}}
"""


def _palette_png(values):
    """A palette PNG of an index array, with VOC's colour map (what its Segmentation* PNGs are)."""
    from PIL import Image

    im = Image.fromarray(values.astype(np.uint8), mode="P")
    palette = []
    for i in range(256):  # VOC's bit-interleaved colour map
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.extend((r, g, b))
    im.putpalette(palette)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _write_voc_masks(root, image_id, shapes):
    """SegmentationObject (1-based object index in XML order) and SegmentationClass (class id + 1)."""
    size = shapes.image.shape[0]
    objects = np.zeros((size, size), np.uint8)
    classes = np.zeros((size, size), np.uint8)
    for k, (mask, class_id) in enumerate(zip(shapes.masks, shapes.class_ids), 1):
        objects[mask > 0] = k
        classes[mask > 0] = class_id + 1
    for folder, values in (("SegmentationObject", objects), ("SegmentationClass", classes)):
        (root / folder).mkdir(exist_ok=True)
        (root / folder / f"{image_id}.png").write_bytes(_palette_png(values))


def _write_coco_split(path, items, size):
    from pycocotools import mask as mask_utils

    doc = {"images": [], "annotations": [],
           "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPES_CLASSES)]}
    for image_number, (image_id, shapes) in enumerate(items, 1):
        doc["images"].append({"id": image_number, "file_name": f"JPEGImages/{image_id}.jpg",
                              "width": size, "height": size})
        for polygon, mask, class_id in zip(shapes.polygons, shapes.masks, shapes.class_ids):
            rle = mask_utils.encode(np.asfortranarray(mask))
            x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": image_number,
                                       "category_id": int(class_id) + 1, "segmentation": [polygon],
                                       "area": float(mask_utils.area(rle)), "bbox": [x, y, w, h], "iscrowd": 0})
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")
