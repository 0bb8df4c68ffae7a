"""Instance masks: reading them from COCO and VOC annotations, checking them, serving them.

An object's mask is kept as a small JSON-safe *mask spec* until an image is served, one per object
(``Entry.masks``, parallel to ``Entry.objects``; None: the object has no mask):

- a COCO ``segmentation`` as written in the file: a list of polygons ``[[x1, y1, x2, y2, ...]]``
  in continuous pixel coordinates, or an RLE ``{"size": [h, w], "counts": [...] | "..."}``;
- ``{"png": path, "value": k}`` for the VOC instance layout: the pixels of
  ``SegmentationObject/ID.png`` equal to ``k``, the 1-based position of the object in the XML
  (0 is background, 255 the "void" border VOC draws around objects). Where the image also has
  ``SegmentationClass/ID.png`` (class index per pixel: 0 background, k the k-th class of the
  dataset's list, 255 void), the spec names it as ``"class_png"``; only ``data check`` reads it,
  as a cross-check of each object's class.

Rasterizing is pycocotools' (``annToRLE``'s rules: polygons through ``frPyObjects`` and ``merge``,
uncompressed RLE through ``frPyObjects``, compressed RLE as is), so a mask served here is the mask
``COCO.annToMask`` gives for the same annotation.
"""
import math
import os

import numpy as np

from ..errors import GluondetError
from ..image import read_image
from .base import DetectionDataset, error, warning

SEGMENTATION_OBJECT_DIR = "SegmentationObject"
SEGMENTATION_CLASS_DIR = "SegmentationClass"
VOC_VOID = 255
POLYGON_TOLERANCE = 1.0  # pixels a polygon vertex may lie outside the image (rounding in tools)
MASK_BOX_TOLERANCE = 2.0  # pixels between a box side and its mask's, plus:
MASK_BOX_TOLERANCE_FRACTION = 0.1  # ... this fraction of the box's longer side


# ----------------------------------------------------------------------------- rasterizing
def _valid_polygons(polygons):
    """The polygons pycocotools can fill: >= 3 vertices. (A 4-number "polygon" would be taken
    for a box by ``frPyObjects``; check reports such polygons.)"""
    return [[float(v) for v in p] for p in polygons if len(p) >= 6 and len(p) % 2 == 0]


def _read_png_values(path):
    """The 2-D index array of a palette or greyscale PNG (VOC's SegmentationObject/Class)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise GluondetError(f"{path}: mode {im.mode} is not an indexed (palette) or greyscale PNG; "
                                    "VOC segmentation PNGs store one index per pixel")
            return np.array(im)
    except (OSError, ValueError) as e:
        raise GluondetError(f"{path}: not a readable PNG ({e})") from None


def spec_to_rle(spec, height, width, png_cache=None):
    """A mask spec (see the module docstring) as a compressed pycocotools RLE for an h x w image."""
    from pycocotools import mask as mask_utils

    if isinstance(spec, list):
        polygons = _valid_polygons(spec)
        if not polygons:
            return mask_utils.encode(np.zeros((height, width), np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if "png" in spec:
        values = png_cache.get(spec["png"]) if png_cache is not None else None
        if values is None:
            values = _read_png_values(spec["png"])
            if png_cache is not None:
                png_cache[spec["png"]] = values
        return mask_utils.encode(np.asfortranarray((values == spec["value"]).astype(np.uint8)))
    if isinstance(spec.get("counts"), list):
        return mask_utils.frPyObjects(spec, height, width)
    rle = dict(spec)
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return rle


def decode_masks(specs, height, width):
    """(N, h, w) uint8 masks of the specs of one image (each PNG read once)."""
    from pycocotools import mask as mask_utils

    if not specs:
        return np.zeros((0, height, width), np.uint8)
    cache = {}
    masks = [mask_utils.decode(spec_to_rle(s, height, width, cache)) for s in specs]
    return np.stack(masks).astype(np.uint8)


def rle_to_json(rle):
    """A compressed RLE with ``counts`` as str, as COCO result files write it."""
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def encode_masks(masks):
    """COCO RLEs (JSON-ready) of an (N, h, w) array of 0/1 masks."""
    from pycocotools import mask as mask_utils

    masks = np.asfortranarray(np.asarray(masks, dtype=np.uint8).transpose(1, 2, 0))
    return [rle_to_json(r) for r in mask_utils.encode(masks)] if masks.shape[2] else []


def paste_masks(probs, boxes, size):
    """(K, h, w) uint8 masks of K per-box mask probabilities (K, M, M) pasted into their boxes (in
    the image's pixels) on a ``size`` (w, h) image, thresholded at 0.5 (GluonCV's ``fill``)."""
    from gluoncv.data.transforms.mask import fill

    width, height = size
    if not len(boxes):
        return np.zeros((0, height, width), np.uint8)
    return fill(np.asarray(probs, np.float32), np.asarray(boxes, np.float32), (width, height))


# ----------------------------------------------------------------------------- VOC instance layout
def attach_voc_masks(entry, voc_root, png_names, header_size, class_png_names=()):
    """Give a VOC entry the masks of ``SegmentationObject/<id>.png`` when that file exists.

    ``png_names`` is the set of file names in that folder, ``class_png_names`` those in
    ``SegmentationClass/`` (may be empty: the class PNGs are optional); ``header_size(path, key)``
    reads (w, h) from a PNG header through the reader's cache, or returns a string saying why it cannot.
    """
    name = f"{entry.image_id}.png"
    if name not in png_names:
        return entry
    path = _sized_png(entry, voc_root, SEGMENTATION_OBJECT_DIR, name, header_size)
    if path is None:
        return entry
    specs = [{"png": path, "value": k} for k in range(1, len(entry.objects) + 1)]
    if name in class_png_names:  # only a cross-check (training reads the XML's classes): warnings
        class_path = _sized_png(entry, voc_root, SEGMENTATION_CLASS_DIR, name, header_size, severity=warning)
        if class_path is not None:
            specs = [dict(spec, class_png=class_path) for spec in specs]
    entry.masks = specs
    return entry


def _sized_png(entry, voc_root, folder, name, header_size, severity=error):
    """The path of ``folder/name`` if its header is readable and its size is the image's; else
    None, with the problem (``severity``: base.error or base.warning) added to the entry."""
    path = os.path.join(str(voc_root), folder, name)
    size = header_size(path, f"{folder}/{name}")
    if isinstance(size, str):
        entry.problems.append(severity(path, "unreadable-mask", size))
        return None
    if entry.size and tuple(size) != tuple(entry.size):
        entry.problems.append(severity(path, "mask-size-mismatch",
                                       f"the {folder} PNG is {size[0]}x{size[1]} but the image is "
                                       f"{entry.size[0]}x{entry.size[1]}"))
        return None
    return path


# ----------------------------------------------------------------------------- checks
def mask_problems(entry, classes=None):
    """Problems of the masks of one image: polygons with < 3 points or outside the image, RLE
    of the wrong size, masks with no pixels, boxes that disagree with their masks, and (given the
    dataset's ``classes``) VOC objects whose SegmentationClass pixels carry another class."""
    if not any(spec is not None for spec in entry.masks) or not entry.size:
        return []
    file = entry.ann_file
    width, height = entry.size
    problems, png_cache = [], {}
    for k, (obj, spec) in enumerate(zip(entry.objects, entry.masks)):
        if spec is None:
            continue
        what = f"object {k + 1} ({obj[0]})"
        found = _spec_problem(spec, width, height)
        if found:
            problems.append(error(file, found[0], f"{what}: {found[1]}"))
            continue
        try:
            area, mask_box = _mask_extent(spec, height, width, png_cache, entry.max_offset)
        except GluondetError as e:
            problems.append(error(file, "unreadable-mask", f"{what}: {e}"))
            break
        problem = _mask_box_problem(area, mask_box, obj)
        if problem:
            problems.append(error(file, problem[0], f"{what}: {problem[1]}"))
    if classes is not None and not problems:
        problems.extend(segmentation_class_problems(entry, classes, png_cache))
    return problems


def segmentation_class_problems(entry, classes, png_cache=None):
    """One ``segmentation-class-mismatch`` warning per VOC object whose pixels in
    SegmentationClass/ID.png mostly carry another class than its XML ``<name>`` (index k is
    ``classes[k - 1]``; background and void pixels are not counted, an object with none left is not
    judged). Warnings, not errors: training takes the class from the XML and never reads this PNG,
    and a tool that numbers its classes in another order would otherwise block every image."""
    specs = [(k, obj, spec) for k, (obj, spec) in enumerate(zip(entry.objects, entry.masks), 1)
             if isinstance(spec, dict) and "class_png" in spec]
    if not specs:
        return []
    object_png, class_png = specs[0][2]["png"], specs[0][2]["class_png"]
    try:
        objects = (png_cache or {}).get(object_png)
        objects = _read_png_values(object_png) if objects is None else objects
        class_values = _read_png_values(class_png)
    except GluondetError as e:
        return [warning(entry.ann_file, "unreadable-mask", str(e))]
    problems = []
    for k, obj, spec in specs:
        values = class_values[(objects == spec["value"]) & (class_values != 0) & (class_values != VOC_VOID)]
        if not values.size:
            continue
        index = int(np.bincount(values).argmax())
        name = classes[index - 1] if index <= len(classes) else None
        if name != obj[0]:
            there = f"class {index} ({name})" if name else f"class index {index}, beyond the {len(classes)} classes"
            problems.append(warning(class_png, "segmentation-class-mismatch",
                                    f"object {k} of {os.path.basename(entry.ann_file)} is '{obj[0]}' in the XML "
                                    f"but its pixels here are {there}"))
    return problems


def _spec_problem(spec, width, height):
    """(code, sentence) of what is wrong with a spec before rasterizing it, or None."""
    if isinstance(spec, list):
        if not spec:
            return "bad-mask", "its segmentation is an empty list"
        for j, polygon in enumerate(spec, 1):
            if not isinstance(polygon, (list, tuple)) or not all(
                    isinstance(v, (int, float)) and math.isfinite(v) for v in polygon):
                return "bad-mask", f"polygon {j} is not a list of numbers"
            if len(polygon) < 6 or len(polygon) % 2:
                return "polygon-too-few-points", (f"polygon {j} has {len(polygon) / 2:g} points "
                                                  "(a polygon needs at least 3 x, y pairs)")
            xs, ys = polygon[0::2], polygon[1::2]
            tol = POLYGON_TOLERANCE
            if min(xs) < -tol or min(ys) < -tol or max(xs) > width + tol or max(ys) > height + tol:
                return "polygon-outside-image", (f"polygon {j} spans x {min(xs):g}..{max(xs):g}, "
                                                 f"y {min(ys):g}..{max(ys):g}, outside the {width}x{height} image")
        return None
    if not isinstance(spec, dict):
        return "bad-mask", f"segmentation {str(spec)[:40]!r} is neither polygons nor RLE"
    if "png" in spec:
        return None
    size, counts = spec.get("size"), spec.get("counts")
    if not (isinstance(size, (list, tuple)) and len(size) == 2) or not isinstance(counts, (list, str)):
        return "bad-mask", "RLE needs 'size': [h, w] and 'counts'"
    if [int(v) for v in size] != [height, width]:
        return "mask-size-mismatch", f"RLE size is {size[1]}x{size[0]} (w x h) but the image is {width}x{height}"
    if isinstance(counts, list) and (sum(counts) != width * height or min(counts, default=0) < 0):
        return "bad-mask", f"RLE counts cover {sum(counts)} pixels, the image has {width * height}"
    return None


def _mask_extent(spec, height, width, png_cache, max_offset):
    """(area, (xmin, ymin, xmax, ymax)) of a mask. Polygons from their vertices (shoelace area and
    continuous bounds: no rasterizing, so checking all of COCO stays quick); RLE and PNG masks from
    pycocotools' area and box of their pixels, xmax inclusive when boxes are (VOC, ``max_offset``)."""
    from pycocotools import mask as mask_utils

    if isinstance(spec, list):
        area, xs, ys = 0.0, [], []
        for polygon in _valid_polygons(spec):
            px, py = np.array(polygon[0::2]), np.array(polygon[1::2])
            area += abs(float(np.dot(px, np.roll(py, -1)) - np.dot(py, np.roll(px, -1)))) / 2
            xs.extend(px)
            ys.extend(py)
        return area, (min(xs), min(ys), max(xs), max(ys))
    rle = spec_to_rle(spec, height, width, png_cache)
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return float(mask_utils.area(rle)), (x, y, x + w - max_offset, y + h - max_offset)


def _mask_box_problem(area, mask_box, obj):
    """An empty mask, or a box further from its mask's bounds than the tolerance."""
    if area <= 0:
        return "empty-mask", "its mask has no area (pycocotools fills nothing: collinear or degenerate points)"
    box = obj[1:5]
    tol = MASK_BOX_TOLERANCE + MASK_BOX_TOLERANCE_FRACTION * max(box[2] - box[0], box[3] - box[1])
    if max(abs(a - b) for a, b in zip(box, mask_box)) > tol:
        return "box-mask-mismatch", ("box [{:g}, {:g}, {:g}, {:g}] but its mask spans "
                                     "[{:g}, {:g}, {:g}, {:g}] (xmin, ymin, xmax, ymax)".format(*box, *mask_box))
    return None


# ----------------------------------------------------------------------------- the dataset
class InstanceDataset(DetectionDataset):
    """A DetectionDataset whose items also carry masks: ``ds[i] -> (image HxWx3 uint8 NDArray,
    label (N, 6) float32, masks (N, H, W) uint8)``, masks in label order, at the image's size."""

    def __init__(self, classes, image_paths, image_ids, image_sizes, labels, masks=None, **kwargs):
        super().__init__(classes, image_paths, image_ids, image_sizes, labels, **kwargs)
        self._masks = [list(m) for m in (masks or [[] for _ in labels])]
        if len(self._masks) != len(self._labels):
            raise ValueError("masks and labels differ in length")

    @classmethod
    def from_entries(cls, entries, classes, **kwargs):
        """Build from reader entries; every object must have a mask (GluondetError naming the files)."""
        missing = [e.ann_file for e in entries
                   if len(e.masks) != len(e.objects) or any(m is None for m in e.masks)]
        if missing:
            listed = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise GluondetError(f"{len(missing)} image(s) have objects without a mask (a mask model needs "
                                f"one per object: COCO 'segmentation', or VOC SegmentationObject/ID.png): {listed}")
        return super().from_entries(entries, classes, masks=[list(e.masks) for e in entries], **kwargs)

    def __getitem__(self, i):
        import mxnet as mx

        img = read_image(self._paths[i], apply_orientation=self._turned[i])
        masks = decode_masks(self._masks[i], img.shape[0], img.shape[1])
        return mx.nd.array(img, dtype=np.uint8), self._labels[i].copy(), masks

    def masks(self, i):
        """The (N, H, W) uint8 masks of image ``i`` without decoding the image."""
        w, h = self._sizes[i]
        return decode_masks(self._masks[i], h, w)

    def mask_specs(self, i):
        return list(self._masks[i])
