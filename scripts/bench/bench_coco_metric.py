"""COCO metric speed: gluondet's COCOMetric (faster-coco-eval) against pycocotools' COCOeval.

Random detections around random ground truth (crowd boxes and empty images included), --images
images x about --dets detections each. The pycocotools leg is what ``--metric coco`` ran before:
COCO objects from the in-memory dicts, COCOeval evaluate + accumulate + summarize. gluondet's leg
is ``COCOMetric.update`` over padded batches, then ``get()``. Legs alternate (A B A B); each
asserts all 12 numbers equal to pycocotools'. Prints the best wall and CPU seconds and the ratios.

    .venv/bin/python scripts/bench/bench_coco_metric.py [--images 5000] [--dets 100] [--repeat 2]
"""
import argparse
import contextlib
import io
import time

import numpy as np

from gluondet.eval.coco_metric import COCO_STAT_NAMES, COCOMetric

CLASSES = [f"class{c}" for c in range(20)]


def make_case(num_images, dets_per_image, seed=0):
    """(images, ground-truth annotations, detections) in COCO form, category ids from 1."""
    rng = np.random.default_rng(seed)
    gts, dts = [], []
    for image_id in range(1, num_images + 1):
        boxes = []
        if rng.random() >= 0.05:  # 5% of images have no objects
            for _ in range(rng.integers(1, 8)):
                x, y = rng.uniform(0, 500, 2)
                w, h = rng.uniform(4, 200, 2)
                cat = int(rng.integers(1, len(CLASSES) + 1))
                boxes.append((x, y, w, h, cat))
                gts.append({"id": len(gts) + 1, "image_id": image_id, "category_id": cat,
                            "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(rng.random() < 0.05)})
        n = rng.poisson(dets_per_image)
        for _ in range(n):
            if boxes and rng.random() < 0.3:
                x, y, w, h, cat = boxes[rng.integers(len(boxes))]
                j = rng.normal(0, 0.1 * min(w, h), 4)
                box = [x + j[0], y + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])]
            else:
                cat = int(rng.integers(1, len(CLASSES) + 1))
                box = [*rng.uniform(0, 500, 2), *rng.uniform(4, 200, 2)]
            box = [round(v * 2) / 2 for v in box]  # exact in the float32 arrays the metric gets
            dts.append({"id": len(dts) + 1, "image_id": image_id, "category_id": cat, "bbox": box,
                        "area": box[2] * box[3], "score": round(float(rng.random()), 4), "iscrowd": 0})
    for ann in gts:
        ann["bbox"] = [round(v * 2) / 2 for v in ann["bbox"]]
        ann["area"] = ann["bbox"][2] * ann["bbox"][3]
    images = [{"id": i} for i in range(1, num_images + 1)]
    return images, gts, dts


def batches_of(images, gts, dts, batch_size=8):
    """The padded (B, N, ...) arrays a validation loop passes to update()."""
    by_image = {}
    for kind, anns in (("gt", gts), ("dt", dts)):
        for ann in anns:
            by_image.setdefault((kind, ann["image_id"]), []).append(ann)
    out = []
    for start in range(0, len(images), batch_size):
        ids = [img["id"] for img in images[start:start + batch_size]]
        rows = {kind: [by_image.get((kind, i), []) for i in ids] for kind in ("gt", "dt")}
        width = {kind: max(1, max(len(r) for r in rows[kind])) for kind in rows}
        gb = np.full((len(ids), width["gt"], 6), -1, np.float32)
        db = np.full((len(ids), width["dt"], 6), -1, np.float32)
        for b, (g, d) in enumerate(zip(rows["gt"], rows["dt"])):
            for k, ann in enumerate(g):
                x, y, w, h = ann["bbox"]
                gb[b, k] = [x, y, x + w, y + h, ann["category_id"] - 1, 2 * ann["iscrowd"]]
            for k, ann in enumerate(d):
                x, y, w, h = ann["bbox"]
                db[b, k] = [x, y, x + w, y + h, ann["category_id"] - 1, ann["score"]]
        out.append((db[..., :4], db[..., 4], db[..., 5], gb[..., :4], gb[..., 4], gb[..., 5]))
    return out


def pycocotools_leg(images, gts, dts):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    categories = [{"id": c + 1, "name": n} for c, n in enumerate(CLASSES)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {"images": images, "categories": categories, "annotations": gts}
        coco_dt.dataset = {"images": images, "categories": categories, "annotations": dts}
        coco_gt.createIndex()
        coco_dt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return np.array(coco_eval.stats)


def gluondet_leg(batches):
    metric = COCOMetric(CLASSES)
    for batch in batches:
        metric.update(*batch)
    names, values = metric.get()
    stats = np.array([values[names.index(n)] for n in COCO_STAT_NAMES])
    return np.where(np.isnan(stats), -1.0, stats)


def timed(fn, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets", type=int, default=100, help="mean detections per image")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of A B; the best of each counts")
    args = parser.parse_args()

    images, gts, dts = make_case(args.images, args.dets)
    batches = batches_of(images, gts, dts)
    print(f"{len(images)} images, {len(gts)} ground-truth boxes, {len(dts)} detections, "
          f"{len(CLASSES)} classes")
    best = {"pycocotools": [np.inf, np.inf], "gluondet": [np.inf, np.inf]}
    for _ in range(args.repeat):
        ref_wall, ref_cpu, reference = timed(pycocotools_leg, images, gts, dts)
        our_wall, our_cpu, ours = timed(gluondet_leg, batches)
        assert np.array_equal(ours, reference), (ours, reference)  # all 12 numbers, exactly
        for key, wall, cpu in (("pycocotools", ref_wall, ref_cpu), ("gluondet", our_wall, our_cpu)):
            best[key] = [min(best[key][0], wall), min(best[key][1], cpu)]
    print("12 numbers identical to pycocotools': " + ", ".join(f"{n} {v:.4f}" for n, v in
                                                              zip(COCO_STAT_NAMES, reference)))
    (rw, rc), (ow, oc) = best["pycocotools"], best["gluondet"]
    print(f"wall: pycocotools {rw:.2f} s  gluondet {ow:.2f} s  speed-up {rw / ow:.1f}x")
    print(f"CPU:  pycocotools {rc:.2f} s  gluondet {oc:.2f} s  speed-up {rc / oc:.1f}x")


if __name__ == "__main__":
    main()
