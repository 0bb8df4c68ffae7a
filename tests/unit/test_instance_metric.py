"""COCO segm metric: the same 12 numbers and per-class AP as pycocotools run on files, on random cases."""
import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gluondet.data.masks import encode_masks
from gluondet.eval.instance import COCOSegmMetric, InstanceMetric, coco_results

CLASSES = ["a", "b", "c"]


def random_image(rng, size=40):
    """Ground truth (boxes, labels, flags, masks) and noisy detections of one image."""
    n = int(rng.integers(0, 4))
    masks, boxes = [], []
    for _ in range(n):
        x0, y0 = rng.integers(0, size - 10, 2)
        x1, y1 = x0 + rng.integers(4, 10), y0 + rng.integers(4, 10)
        m = np.zeros((size, size), np.uint8)
        m[y0:y1, x0:x1] = 1
        m[y0, x0] = 0  # not a plain rectangle
        masks.append(m)
        boxes.append([x0, y0, x1, y1])
    labels = rng.integers(0, len(CLASSES), n)
    flags = (rng.uniform(size=n) < 0.1).astype(int) * 2
    k = int(rng.integers(0, 5))
    det_masks = [np.roll(masks[j % n], rng.integers(-2, 3), axis=int(rng.integers(2))) if n and rng.uniform() < 0.7
                 else (rng.uniform(size=(size, size)) < 0.05).astype(np.uint8) for j in range(k)]
    det_boxes = np.array([[*mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m)))[:2], 0, 0]
                          for m in det_masks]).reshape(-1, 4)
    det_boxes[:, 2:] = det_boxes[:, :2] + 5
    det_labels = rng.integers(0, len(CLASSES), k)
    scores = rng.uniform(size=k)
    return (np.array(boxes, float).reshape(-1, 4), labels, flags, np.array(masks).reshape(-1, size, size),
            det_boxes, det_labels, scores, np.array(det_masks, np.uint8).reshape(-1, size, size))


def pycocotools_segm(images, tmp_path):
    gt = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]}
    results = []
    for image_id, (boxes, labels, flags, masks, det_boxes, det_labels, scores, det_masks) in enumerate(images, 7):
        gt["images"].append({"id": image_id, "width": 40, "height": 40})
        for box, label, flag, rle in zip(boxes, labels, flags, encode_masks(masks)):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id,
                                      "category_id": int(label) + 1, "segmentation": rle, "iscrowd": int(flag != 0),
                                      "area": float(mask_utils.area(rle)),
                                      "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
        results.extend(coco_results(str(image_id), det_labels, scores, det_boxes, encode_masks(det_masks)))
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp_path / "gt.json"))
        coco_dt = coco_gt.loadRes(str(tmp_path / "res.json")) if results else None
        if coco_dt is None:
            return None
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("seed", range(12))
def test_segm_metric_equals_pycocotools_on_files(seed, tmp_path):
    rng = np.random.default_rng(seed)
    images = [random_image(rng) for _ in range(int(rng.integers(3, 9)))]
    metric = InstanceMetric(CLASSES)
    for boxes, labels, flags, masks, det_boxes, det_labels, scores, det_masks in images:
        metric.update_image(det_boxes, det_labels, scores, encode_masks(det_masks), boxes, labels, flags,
                            encode_masks(masks))
    expected = pycocotools_segm(images, tmp_path)
    got = metric.results()["coco_segm"]
    if expected is None:
        return
    expected = np.where(expected < 0, np.nan, expected)
    np.testing.assert_allclose([np.nan if v is None else v for v in got["coco_segm"].values()], expected,
                               atol=1e-12, equal_nan=True)
    assert got["map"] == pytest.approx(expected[0], abs=1e-12) or np.isnan(expected[0])


def test_segm_differs_from_bbox_when_masks_do():
    metric = InstanceMetric(CLASSES)
    gt = np.zeros((1, 30, 30), np.uint8)
    gt[0, 5:25, 5:25] = 1
    half = gt.copy()
    half[0, :, 15:] = 0  # the right box, half the mask: box AP 1, mask IoU 0.5
    metric.update_image([[5, 5, 25, 25]], [0], [0.9], encode_masks(half), [[5, 5, 25, 25]], [0], [0],
                        encode_masks(gt))
    result = metric.results()
    assert result["coco_bbox"]["coco_bbox"]["AP50"] == pytest.approx(1.0)
    assert result["coco_segm"]["coco_segm"]["AP50"] == pytest.approx(1.0)  # IoU 0.5 matches at .50 only
    assert result["coco_segm"]["coco_segm"]["AP75"] == pytest.approx(0.0)
    with pytest.raises(TypeError):
        COCOSegmMetric(CLASSES).update(None, None, None, None, None)
