"""COCO reader: an instances JSON and its image folder to index entries.

Category ids map to contiguous class ids in the order of the file's ``categories`` list, and
the class names are the category names (unless the dataset config lists classes, which are then
matched by name). ``bbox`` ``[x, y, w, h]`` becomes ``[x, y, x + w, y + h]`` in continuous pixel
coordinates (so ``w = xmax - xmin`` round-trips exactly to COCO evaluation); ``iscrowd`` objects
get flag 2 so training ignores them; images without annotations are kept as negatives.
"""
import contextlib
import io
import json
import math
import os
from pathlib import Path

from ..errors import GluondetError
from .base import FLAG_CROWD, FLAG_DIFFICULT, FLAG_NORMAL, DatasetIndex, Entry, error
from .cache import FileCache, paused_gc
from .voc import image_header, settle_image


def coco_paths(root, spec):
    """(annotation JSON, image folder) of a COCO split spec ``{annotations: ..., images: ...}``."""
    if isinstance(spec, str):
        spec = {"annotations": spec}
    if not isinstance(spec, dict) or "annotations" not in spec:
        raise GluondetError(f"COCO split {spec!r}: expected a mapping with 'annotations' (and 'images')")
    root = Path(root)
    ann = Path(os.path.expanduser(str(spec["annotations"])))
    ann = ann if ann.is_absolute() else root / ann
    if spec.get("images"):
        images = Path(os.path.expanduser(str(spec["images"])))
        images = images if images.is_absolute() else root / images
    else:
        images = root / ann.stem.replace("instances_", "")
    return ann, images


def load_coco_api(ann_path):
    """pycocotools' COCO object for a file, quietly; a broken file is a GluondetError."""
    from pycocotools.coco import COCO

    if not Path(ann_path).is_file():
        raise GluondetError(f"{ann_path}: COCO annotation file not found")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            api = COCO(str(ann_path))
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise GluondetError(f"{ann_path}: not valid JSON ({e})") from None
    except (KeyError, TypeError, AssertionError) as e:
        raise GluondetError(f"{ann_path}: not a COCO instances file ({type(e).__name__}: {e})") from None
    if not isinstance(api.dataset.get("images"), list) or not isinstance(api.dataset.get("categories"), list):
        raise GluondetError(f"{ann_path}: not a COCO instances file (needs 'images' and 'categories' lists)")
    return api


def load_coco_json(ann_path):
    """The instances JSON of ``ann_path`` as a dict with 'images', 'categories' and 'annotations'
    lists; a missing, broken or non-COCO file is a GluondetError naming it."""
    if not Path(ann_path).is_file():
        raise GluondetError(f"{ann_path}: COCO annotation file not found")
    try:  # text, not bytes: json.load of bytes holds the file twice (bytes and str) while parsing
        with open(ann_path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise GluondetError(f"{ann_path}: not valid JSON ({e})") from None
    except OSError as e:
        raise GluondetError(f"{ann_path}: cannot read ({e.strerror or e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("categories"), list):
        raise GluondetError(f"{ann_path}: not a COCO instances file (needs 'images' and 'categories' lists)")
    if not isinstance(data.setdefault("annotations", []) or [], list):
        raise GluondetError(f"{ann_path}: not a COCO instances file ('annotations' is not a list)")
    for key in ("images", "categories", "annotations"):
        if not all(isinstance(item, dict) for item in data[key] or ()):
            raise GluondetError(f"{ann_path}: not a COCO instances file (an item of '{key}' is not an object)")
    return data


def read_coco(root, spec, api=None):
    """Entries of a COCO split, file-level problems, the category names in file order and their
    supercategories.

    Returns ``(entries, problems, category_names, supercategories)``, the last {name: group} of
    the categories with a non-empty ``supercategory``. ``api``: the file's pycocotools COCO object, if
    loaded (its dataset is left as it is). One pass groups the annotations by image and
    each image's annotation dicts are released once its entry is built, so reading takes less
    time and memory than pycocotools' ``COCO()`` index (scripts/bench/coco_reader.py).
    """
    ann_path, images_dir = coco_paths(root, spec)
    with paused_gc():  # see data.cache.paused_gc: linear time on files of 100,000s of objects
        data = dict(api.dataset) if api is not None else load_coco_json(ann_path)
        problems = []
        categories = {}
        for cat in data["categories"]:
            name = str(cat.get("name", "")).strip()
            if name in categories.values():
                problems.append(error(ann_path, "duplicate-class", f"category name '{name}' is used by two ids"))
            categories[cat.get("id")] = name
        names = list(dict.fromkeys(categories.values()))
        groups = {str(cat.get("name", "")).strip(): str(cat.get("supercategory") or "").strip()
                  for cat in data["categories"]}
        supercategories = {name: group for name, group in groups.items() if group}
        images = []
        by_image = {}  # image id -> its annotation dicts
        for img in data["images"]:
            if _hashable(img.get("id"), ann_path) in by_image:
                problems.append(error(ann_path, "duplicate-id", f"image id {img.get('id')} is listed more than once"))
                continue
            by_image[img.get("id")] = []
            images.append(img)
        annotations = data.pop("annotations") or []
        for ann in annotations:
            found = by_image.get(_hashable(ann.get("image_id"), ann_path))
            if found is None:
                problems.append(error(ann_path, "missing-image",
                                      f"annotation {ann.get('id')} refers to image id {ann.get('image_id')}, "
                                      "which is not in 'images'"))
            else:
                found.append(ann)
        del annotations, data
        folder = _ImageFolder(images_dir)
        cache = FileCache(images_dir, "image-headers-v1") if folder.exists else None
        entries = [_image_entry(img, by_image.pop(img.get("id")), categories, folder, ann_path, cache)
                   for img in images]
    if cache is not None:
        cache.save()
    return entries, problems, names, supercategories


def _hashable(value, ann_path):
    try:
        hash(value)
    except TypeError:
        raise GluondetError(f"{ann_path}: not a COCO instances file (an id is {value!r})") from None
    return value


class _ImageFolder:
    """The image folder, listed once: a plain file name is found without a system call per image."""

    def __init__(self, images_dir):
        self.dir = images_dir
        self.base = images_dir.resolve()
        try:
            with os.scandir(images_dir) as listing:
                self.names = {e.name for e in listing if e.is_file()}
            self.exists = True
        except OSError:
            self.names, self.exists = set(), False

    def find(self, file_name):
        """(path, None) for an image file inside the folder, else (None, problem code)."""
        if file_name and "/" not in file_name and "\\" not in file_name and file_name not in (".", ".."):
            if file_name in self.names:
                return os.path.join(self.dir, file_name), None
            return None, "missing-image"
        image_path = self.dir / file_name  # a sub-folder path: kept inside the folder
        # lexical, not resolve(): '../' must not leave the folder, a symlinked image (data convert) may
        resolved = Path(os.path.normpath(self.base / file_name))
        if not file_name or (resolved != self.base and self.base not in resolved.parents):
            return None, "bad-value"
        return (str(image_path), None) if image_path.is_file() else (None, "missing-image")


def _image_entry(img, anns, categories, folder, ann_path, cache):
    file_name = str(img.get("file_name", ""))
    image_path, problem = folder.find(file_name)
    label_file = os.path.join(folder.dir, file_name)
    problems = []
    declared = None
    if img.get("width") and img.get("height"):
        declared = (int(img["width"]), int(img["height"]))
    header = None  # an ImageHeader, or a string saying why the image cannot be read
    if problem == "bad-value":
        problems.append(error(ann_path, "bad-value", f"image {img.get('id')}: file_name {file_name!r} "
                                                     f"is not a file inside {folder.dir}"))
    elif problem == "missing-image":
        problems.append(error(label_file, "missing-image", f"image {img.get('id')} is listed in "
                                                           f"{ann_path.name} but the file is not there"))
    elif cache is not None:
        header = image_header(image_path, file_name, cache)

    objects, raw, masks = [], [], []
    for ann in anns:
        cat = ann.get("category_id")
        if cat not in categories:
            problems.append(error(label_file, "unknown-class", f"annotation {ann.get('id')} has category_id "
                                                               f"{cat}, which is not in 'categories'"))
            continue
        bbox = ann.get("bbox")
        if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)):
            problems.append(error(label_file, "bad-box", f"annotation {ann.get('id')}: bbox {bbox!r} "
                                                         "is not [x, y, w, h]"))
            continue
        x, y, w, h = (float(v) for v in bbox)
        # "difficult" is not COCO's: gluondet's converter keeps VOC's flag in it (pycocotools ignores it)
        flag = FLAG_CROWD if ann.get("iscrowd") else FLAG_DIFFICULT if ann.get("difficult") else FLAG_NORMAL
        objects.append((categories[cat], x, y, x + w, y + h, flag))
        raw.append((x, y, w, h))
        masks.append(ann.get("segmentation") or None)  # polygons or RLE, see data/masks.py
    entry = Entry(image_id=str(img.get("id")), ann_file=label_file,
                  image_path=image_path, declared_size=declared,
                  header_size=None, objects=objects, problems=problems, max_offset=0, raw_boxes=raw,
                  masks=masks if any(m is not None for m in masks) else [])
    if header is not None:
        settle_image(entry, header)
    return entry


def read_coco_dataset(cfg, split=None):
    """DatasetIndex of a COCO dataset config for a role or spec; None: every split file it names."""
    if split is None:
        specs = []
        for spec in cfg.splits.values():
            if spec not in specs:
                specs.append(spec)
        if not specs:
            raise GluondetError(f"{cfg.source or cfg.name}: a COCO dataset needs 'splits' "
                                "(e.g. train: {annotations: ..., images: ...})")
    else:
        spec = cfg.split_spec(split)
        if isinstance(spec, str) and spec == split and not spec.endswith(".json"):
            known = ", ".join(cfg.splits) or "none"
            raise GluondetError(f"dataset {cfg.name}: no split '{split}' (known: {known})")
        specs = [spec]
    entries, problems, names, seen, supercategories = [], [], None, set(), {}
    for spec in specs:
        got, found, file_names, groups = read_coco(cfg.root, spec)
        supercategories = {**groups, **supercategories}  # the first file's word stands
        # split files overlap (trainval = train + val): each image once, unless it has its own problems
        entries.extend(e for e in got if e.problems or e.image_path is None or e.image_path not in seen)
        seen.update(e.image_path for e in got)
        problems.extend(found)
        if names is None:
            names = file_names
        elif file_names != names:
            ann, _ = coco_paths(cfg.root, spec)
            problems.append(error(ann, "class-mismatch", "its categories differ from the other split's "
                                                         f"({', '.join(file_names)} vs {', '.join(names)})"))
    return DatasetIndex(entries, problems, entries, names, supercategories or None)
