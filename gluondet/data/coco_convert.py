"""COCO instances files to and from the conversion Collection (see convert.py for the conventions).

Read: one instances JSON, or a COCO root folder (``annotations/instances_*.json``, each file a
split named after it: ``instances_train2017.json`` is ``train2017``), through the same reader
and check as training. Category order is the file's. Polygons, ``iscrowd``, ``area`` and
gluondet's ``difficult`` key are carried; RLE masks are counted (no other format holds them).
Write: ``annotations/instances_<split>.json`` per split (``instances_default.json`` when the
source has none) with every image in ``images/``; category ids 1..N in class order.
"""
import json
import os
from collections import Counter
from pathlib import Path

from ..errors import GluondetError
from ..fileio import atomic_write_text
from ..layouts import coco_file_spec, find_coco_splits
from .base import DatasetIndex
from .check import check_index
from .coco import coco_paths, load_coco_api, read_coco
from .collection import Collection, Sample, Shape, count_note, place_image, refuse, shape_area


def _source_specs(src):
    """[(split name, root, spec)] of a .json file or a COCO root folder."""
    if src.is_file():
        root, spec = coco_file_spec(src)
        return [(None, root, spec)]
    splits = find_coco_splits(src)
    if not splits:
        raise GluondetError(f"{src}: not a COCO dataset (no annotations/instances_*.json, and not a .json file)")
    return [(name, src, spec) for name, spec in splits.items()]


def read_coco_collection(src):
    classes, samples, splits, problems = None, {}, {}, []
    for split, root, spec in _source_specs(Path(src)):
        ann_path, _ = coco_paths(root, spec)
        api = load_coco_api(ann_path)
        entries, found, names, _ = read_coco(root, spec, api)
        result = check_index(DatasetIndex(entries, found, entries, names), names, str(ann_path))
        problems += result.errors
        if classes is None:
            classes = names
        elif names != classes:
            problems.append(f"{ann_path}: its categories ({', '.join(names)}) differ from the other "
                            f"file's ({', '.join(classes)})")
        if result.errors:
            continue
        members = []
        for img, entry in zip(_unique_images(api), entries):
            key = os.path.realpath(entry.image_path)
            if key not in samples:
                samples[key] = _sample(entry, api.imgToAnns.get(img["id"], []), api.cats)
            members.append(samples[key].name)
        if split is not None:
            splits[split] = members
    if problems:
        raise refuse(str(src), problems)
    return Collection(classes, list(samples.values()), splits)


def _unique_images(api):
    seen, out = set(), []
    for img in api.dataset["images"]:  # read_coco makes one entry per first occurrence of an id
        if img.get("id") not in seen:
            seen.add(img.get("id"))
            out.append(img)
    return out


def _sample(entry, anns, cats):
    w, h = entry.size
    shapes = []
    for ann in anns:  # the check passed: every annotation made an object, in this order
        x, y, bw, bh = (float(v) for v in ann["bbox"])
        seg = ann.get("segmentation")
        polygons = [[float(v) for v in p] for p in seg] if isinstance(seg, list) else []
        shapes.append(Shape(str(cats[ann["category_id"]]["name"]).strip(),
                            (max(x, 0.0), max(y, 0.0), min(x + bw, w), min(y + bh, h)),
                            difficult=bool(ann.get("difficult")), crowd=bool(ann.get("iscrowd")),
                            polygons=polygons, rle=isinstance(seg, dict),
                            area=float(ann["area"]) if isinstance(ann.get("area"), (int, float)) else None))
    return Sample(os.path.basename(entry.image_path), w, h, source=Path(entry.image_path), shapes=shapes)


# ----------------------------------------------------------------------------- writing
def coco_document(collection, names, image_ids, first_ann_ids):
    """The instances dict for the samples called ``names``; ids are global (stable across splits)."""
    cat_ids = {name: i + 1 for i, name in enumerate(collection.classes)}
    doc = {"info": {"description": "written by gluondet data convert"}, "licenses": [], "images": [],
           "annotations": [], "categories": [{"id": cat_ids[n], "name": n, "supercategory": ""}
                                             for n in collection.classes]}
    by_name = {s.name: s for s in collection.samples}
    for name in names:
        sample = by_name[name]
        image_id = image_ids[name]
        doc["images"].append({"id": image_id, "file_name": name, "width": sample.width, "height": sample.height})
        for k, shape in enumerate(sample.shapes):
            x0, y0, x1, y1 = shape.box
            ann = {"id": first_ann_ids[name] + k, "image_id": image_id, "category_id": cat_ids[shape.label],
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "area": shape_area(shape),
                   "segmentation": shape.polygons, "iscrowd": int(shape.crowd)}
            if shape.difficult:
                ann["difficult"] = 1
            doc["annotations"].append(ann)
    return doc


def write_coco_collection(collection, out, copy):
    """COCO files under ``out``; returns (the first annotation file, notes)."""
    out = Path(out)
    image_ids, first_ann_ids, next_id = {}, {}, 1
    for i, sample in enumerate(collection.samples, 1):
        place_image(sample, out / "images", copy)
        image_ids[sample.name], first_ann_ids[sample.name] = i, next_id
        next_id += len(sample.shapes)
    splits = collection.splits or {"default": [s.name for s in collection.samples]}
    paths = []
    for split, names in splits.items():
        doc = coco_document(collection, names, image_ids, first_ann_ids)
        paths.append(out / "annotations" / f"instances_{split}.json")
        atomic_write_text(paths[-1], json.dumps(doc, ensure_ascii=False, indent=1))
    counts = Counter()
    for shape in (sh for s in collection.samples for sh in s.shapes):
        counts["difficult"] += shape.difficult
        counts["rle"] += shape.rle
    notes = (count_note(counts, "difficult", "difficult objects kept as \"difficult\": 1 (COCO has no such "
                                             "flag; gluondet reads it back, pycocotools counts them as objects)")
             + count_note(counts, "rle", "RLE masks not kept (only polygons are carried over)"))
    return str(paths[0].relative_to(out)), notes
