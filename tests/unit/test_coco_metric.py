"""COCOMetric (faster-coco-eval inside) against pycocotools, the reference, run directly on
COCO-format JSON (files and in-memory lists): all 12 numbers and the per-class APs equal."""
import contextlib
import io
import json
import math

import mxnet as mx
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gluondet.eval import make_metric, metric_result
from gluondet.eval.coco_metric import COCO_STAT_NAMES, COCOMetric

CLASSES = ["cat", "dog", "bird"]
CATEGORY_IDS = [3, 7, 12]  # non-contiguous on purpose: the metric must not depend on json ids


def reference_eval(coco_gt, detections):
    """pycocotools' own path: loadRes on result dicts, evaluate, accumulate, summarize."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(detections), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    stats = np.where(coco_eval.stats < 0, np.nan, coco_eval.stats)
    per_class = []
    for k in range(len(coco_eval.params.catIds)):
        p = coco_eval.eval["precision"][:, :, k, 0, 2]
        per_class.append(p[p > -1].mean() if (p > -1).any() else np.nan)
    return stats, np.array(per_class)


def padded(rows, width):
    """Rows of one image padded with -1 to a common count."""
    out = np.full((max(len(rows), 1), width), -1, np.float32)
    if rows:
        out[:len(rows)] = rows
    return out


def feed(metric, images, gt_by_image, dt_by_image):
    """Feed per-image COCO annotations ([x, y, w, h] boxes) as padded xyxy batches of one image."""
    for image_id in images:
        gts = [ann["bbox"][:2] + [ann["bbox"][0] + ann["bbox"][2], ann["bbox"][1] + ann["bbox"][3]]
               + [CATEGORY_IDS.index(ann["category_id"]), 2 * ann.get("iscrowd", 0)]
               for ann in gt_by_image.get(image_id, [])]
        dts = [d["bbox"][:2] + [d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]]
               + [CATEGORY_IDS.index(d["category_id"]), d["score"]]
               for d in dt_by_image.get(image_id, [])]
        gt, dt = padded(gts, 6)[None], padded(dts, 6)[None]
        metric.update(dt[..., :4], dt[..., 4], dt[..., 5], gt[..., :4], gt[..., 4], gt[..., 5])


def group(anns):
    by_image = {}
    for ann in anns:
        by_image.setdefault(ann["image_id"], []).append(ann)
    return by_image


def test_hand_made_json_case(tmp_path):
    gt = {
        "images": [{"id": i, "width": 200, "height": 200, "file_name": "%d.jpg" % i}
                   for i in (1, 2, 3)],
        "categories": [{"id": c, "name": n} for c, n in zip(CATEGORY_IDS, CLASSES)],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 50, 40], "area": 2000, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [100, 20, 80, 120], "area": 9600, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [5, 5, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 4, "image_id": 2, "category_id": 3, "bbox": [60, 60, 120, 120], "area": 14400, "iscrowd": 1},
            # image 3 has no objects; "bird" has no ground truth at all
        ],
    }
    detections = [
        {"image_id": 1, "category_id": 3, "bbox": [12, 11, 48, 40], "score": 0.9},
        {"image_id": 1, "category_id": 3, "bbox": [10, 10, 50, 42], "score": 0.6},  # duplicate
        {"image_id": 1, "category_id": 7, "bbox": [110, 30, 70, 100], "score": 0.8},
        {"image_id": 2, "category_id": 3, "bbox": [6, 4, 20, 22], "score": 0.7},
        {"image_id": 2, "category_id": 3, "bbox": [70, 70, 60, 60], "score": 0.95},  # in the crowd
        {"image_id": 2, "category_id": 7, "bbox": [5, 5, 20, 20], "score": 0.3},  # wrong class
        {"image_id": 3, "category_id": 12, "bbox": [0, 0, 30, 30], "score": 0.5},
    ]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(detections))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp_path / "gt.json"))
    stats, per_class = reference_eval(coco_gt, str(tmp_path / "dt.json"))

    metric = COCOMetric(CLASSES)
    feed(metric, [1, 2, 3], group(gt["annotations"]), group(detections))
    names, values = metric.get()
    assert names == CLASSES + list(COCO_STAT_NAMES) + ["mAP"]
    np.testing.assert_allclose(values[3:15], stats, rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(values[:3], per_class, rtol=0, atol=1e-12, equal_nan=True)
    assert values[-1] == values[3] and 0 < values[-1] < 1
    assert math.isnan(values[2])  # bird: no ground truth
    assert type(metric.coco_eval).__module__.startswith("faster_coco_eval")

    result = metric_result(metric)
    assert result["metric"] == "coco" and result["map"] == pytest.approx(stats[0])
    assert result["per_class"]["bird"] is None
    assert result["coco"]["AP50"] == pytest.approx(stats[1])


def random_case(rng, num_images):
    """Random per-image annotations in COCO form (image ids from 100), with crowd boxes, images
    without objects (some with detections on them, some with none) and duplicate detections."""
    gts, dts = [], []
    for image_id in range(100, 100 + num_images):
        empty = rng.random() < 0.2
        for _ in range(0 if empty else rng.integers(0, 6)):
            x, y = rng.uniform(0, 300, 2)
            w, h = rng.uniform(4, 150, 2)
            cat = int(rng.choice(CATEGORY_IDS[:2]))  # the third class never has ground truth
            gts.append({"id": len(gts) + 1, "image_id": image_id, "category_id": cat,
                        "bbox": [x, y, w, h], "area": w * h,
                        "iscrowd": int(rng.random() < 0.1)})
            for _ in range(rng.integers(0, 4)):  # detections near this object, sometimes mislabelled
                jitter = rng.normal(0, 0.15 * min(w, h), 4)
                dts.append({"image_id": image_id,
                            "category_id": cat if rng.random() < 0.8 else int(rng.choice(CATEGORY_IDS)),
                            "bbox": [x + jitter[0], y + jitter[1], max(w + jitter[2], 1.0),
                                     max(h + jitter[3], 1.0)],
                            "score": float(rng.random())})
        for _ in range(rng.integers(0, 3)):  # background detections
            x, y = rng.uniform(0, 300, 2)
            dts.append({"image_id": image_id, "category_id": int(rng.choice(CATEGORY_IDS)),
                        "bbox": [x, y, *rng.uniform(4, 80, 2)], "score": float(rng.random())})
    return gts, dts


@pytest.mark.parametrize("seed", range(24))
def test_equals_pycocotools_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    images = list(range(100, 100 + int(rng.integers(1, 30))))
    gts, dts = random_case(rng, len(images))
    coco_gt = COCO()
    coco_gt.dataset = {"images": [{"id": i} for i in images],
                       "categories": [{"id": c, "name": n} for c, n in zip(CATEGORY_IDS, CLASSES)],
                       "annotations": gts}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
    # on a half-pixel grid the xyxy float32 arrays the metric gets hold the boxes exactly
    for ann in gts + dts:
        ann["bbox"] = [round(v * 2) / 2 for v in ann["bbox"]]
    for ann in gts:
        ann["area"] = ann["bbox"][2] * ann["bbox"][3]
    if not dts:
        pytest.skip("no detections drawn")
    stats, per_class = reference_eval(coco_gt, dts)
    metric = COCOMetric(CLASSES)
    feed(metric, images, group(gts), group(dts))
    values = metric.get()[1]
    assert len(stats) == 12 and not np.isnan(stats).all()
    np.testing.assert_allclose(values[3:15], stats, rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(values[:3], per_class, rtol=0, atol=1e-12, equal_nan=True)


def test_difficult_is_ignored_and_batches_of_ndarrays_work():
    # image 0: a normal object and a difficult one; image 1: padding only
    gt = mx.nd.array([[[0, 0, 50, 50, 0, 0], [100, 100, 160, 160, 0, 1]],
                      [[-1, -1, -1, -1, -1, -1], [-1, -1, -1, -1, -1, -1]]])
    ids = mx.nd.array([[[0], [0]], [[-1], [-1]]])
    scores = mx.nd.array([[[0.9], [0.8]], [[-1], [-1]]])
    # the top-scored detection hits the difficult box: neither TP nor FP
    det = mx.nd.array([[[100, 100, 160, 160], [0, 0, 50, 50]], [[-1, -1, -1, -1]] * 2])
    metric = make_metric("coco", ["obj"])
    metric.update(det, ids, scores, gt[..., :4], gt[..., 4], gt[..., 5])
    assert dict(zip(*metric.get()))["mAP"] == pytest.approx(1.0)
    # nothing detects the difficult box: it is not missed either, unless it counts (no flags)
    det = mx.nd.array([[[0, 0, 50, 50], [-1, -1, -1, -1]], [[-1, -1, -1, -1]] * 2])
    ids = mx.nd.array([[[0], [-1]], [[-1], [-1]]])
    for flags, expected_ap50 in ((gt[..., 5], 1.0), (None, 0.5)):
        metric.reset()
        metric.update(det, ids, scores, gt[..., :4], gt[..., 4], flags)
        assert dict(zip(*metric.get()))["AP50"] == pytest.approx(expected_ap50, abs=0.02)


def test_empty_metric_is_nan_and_quiet(capsys):
    metric = COCOMetric(["a"])
    assert all(math.isnan(v) for v in metric.get()[1])
    metric.update(np.zeros((1, 0, 4)), np.zeros((1, 0)), np.zeros((1, 0)),
                  np.array([[[0, 0, 10, 10]]]), np.array([[0]]))
    names, values = metric.get()
    assert values[names.index("AP")] == 0.0
    assert capsys.readouterr().out == ""
