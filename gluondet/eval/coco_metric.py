"""COCO box metrics (AP@[.5:.95] and the other 11 standard numbers) through faster-coco-eval.

``COCOMetric`` takes batches the way the VOC metrics do (padded (B, N, ...) arrays, label -1 =
padding), builds COCO-format ground truth and detections in memory at ``get()`` and runs
faster-coco-eval's ``COCOeval_faster``: pycocotools' algorithm in C++, the same 12 numbers
(tests/unit/test_coco_metric.py holds it to pycocotools on random cases) several times faster.

Conventions:
- boxes are gluondet labels (xmin, ymin, xmax, ymax) in continuous pixel coordinates, as the COCO
  reader produces them (xmax = x + w): the COCO box is [xmin, ymin, xmax - xmin, ymax - ymin] and
  its area (which decides small / medium / large) is w * h;
- ground truth with flag 2 (crowd) becomes ``iscrowd=1``, and so does flag 1 (VOC difficult):
  pycocotools has no other way to ignore a box (``COCOeval._prepare`` overwrites an ``ignore``
  field with ``iscrowd``). Detections matched to such a box count neither as true nor as false
  positives; unlike VOC, the match uses intersection over the detection's area (crowd semantics)
  and prefers a regular box when one overlaps enough;
- every image given to ``update`` takes part, also those without ground truth or predictions;
- predicted class ids outside ``class_names`` cannot be scored and are left out.
"""
import contextlib
import logging

import numpy as np

from ..data.cache import paused_gc
from .voc_metric import flatten_batches, split_batch

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                   "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class COCOMetric:
    """COCO bbox evaluation with the VOC metrics' interface.

    ``get()`` returns (names, values): the AP@[.5:.95] of each class, the 12 numbers of
    ``COCO_STAT_NAMES`` (-1 from pycocotools becomes NaN), then 'mAP' (= AP) last.
    ``verbose=True`` lets pycocotools print its progress and summary.
    """

    key = "coco"
    iou_type = "bbox"  # pycocotools' iouType; the segm metric (eval/instance.py) overrides it

    def __init__(self, class_names, verbose=False):
        if not isinstance(class_names, (list, tuple)) or not all(
                isinstance(name, str) for name in class_names):
            raise TypeError("class_names must be a list of str")
        self.class_names = list(class_names)
        self.verbose = verbose
        self.name = self.class_names + list(COCO_STAT_NAMES) + ["mAP"]
        self.reset()

    def reset(self):
        """Forget everything seen so far."""
        self._batches = []
        self.coco_eval = None

    def update(self, pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels,
               gt_difficults=None):
        """Add a batch, same arguments as ``VOCMApMetric.update`` (flags: 1 difficult, 2 crowd)."""
        self._batches.extend(split_batch(pred_bboxes, pred_labels, pred_scores, gt_bboxes,
                                         gt_labels, gt_difficults))

    def get(self):
        """(names, values): AP per class, the 12 COCO numbers, then 'mAP' last (NaN: no data)."""
        stats, class_aps = self._evaluate()
        values = [float(v) for v in class_aps] + [float(v) for v in stats] + [float(stats[0])]
        return list(self.name), values

    def get_name_value(self):
        """[(name, value), ...] as mx.metric.EvalMetric gives it."""
        return list(zip(*self.get()))

    def coco_datasets(self):
        """(ground truth, detections) as COCO-format dicts: image id from 1, category class + 1."""
        dets, gts = flatten_batches(self._batches)
        num_images = sum(len(b.pred_labels) for b in self._batches)
        images = [{"id": i + 1} for i in range(num_images)]
        categories = [{"id": c + 1, "name": name} for c, name in enumerate(self.class_names)]
        keep = gts.label < len(self.class_names)
        gt_anns = _annotations(gts.image[keep], gts.label[keep], gts.box[keep],
                               iscrowd=(gts.flag[keep] != 0))
        keep = dets.label < len(self.class_names)
        dt_anns = _annotations(dets.image[keep], dets.label[keep], dets.box[keep],
                               score=dets.score[keep])
        return ({"images": images, "categories": categories, "annotations": gt_anns},
                {"images": images, "categories": categories, "annotations": dt_anns})

    def _evaluate(self):
        with paused_gc():  # half a million small dicts without cycles: see paused_gc
            return self._evaluate_all()

    def _evaluate_all(self):
        nan_stats = np.full(len(COCO_STAT_NAMES), np.nan)
        nan_classes = np.full(len(self.class_names), np.nan)
        gt_dataset, dt_dataset = self.coco_datasets()
        if not gt_dataset["images"]:
            return nan_stats, nan_classes
        from faster_coco_eval import COCO, COCOeval_faster

        say = print if self.verbose else _quiet
        with _quiet_logger():
            coco_gt = COCO(gt_dataset, print_function=say)
            coco_dt = COCO(dt_dataset, print_function=say)
            coco_eval = COCOeval_faster(coco_gt, coco_dt, self.iou_type, print_function=say)
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        self.coco_eval = coco_eval
        stats = np.asarray(coco_eval.stats[:len(COCO_STAT_NAMES)], dtype=np.float64)
        stats = np.where(stats < 0, np.nan, stats)
        # precision: (iou thresholds, recall points, classes, area ranges, max dets); -1 = no gt
        precision = coco_eval.eval["precision"][:, :, :, 0, -1]
        class_aps = nan_classes.copy()
        for k, cat_id in enumerate(coco_eval.params.catIds):
            p = precision[:, :, k]
            if (p > -1).any():
                class_aps[cat_id - 1] = np.mean(p[p > -1])
        return stats, class_aps


def _quiet(*_args, **_kwargs):
    pass


@contextlib.contextmanager
def _quiet_logger():
    """faster-coco-eval also logs through the ``logging`` module; keep get() silent unless verbose."""
    logger = logging.getLogger("faster_coco_eval")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _annotations(image, label, box, iscrowd=None, score=None):
    """COCO annotation dicts (ids from 1: pycocotools treats id 0 as "unmatched"), built from
    Python lists in one pass: at 500,000 detections a per-element float() loop shows."""
    box = box.astype(np.float64)
    xywh = np.stack([box[:, 0], box[:, 1], box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]], axis=1)
    areas = (xywh[:, 2] * xywh[:, 3]).tolist()
    image_ids = (image.astype(np.int64) + 1).tolist()
    category_ids = (label.astype(np.int64) + 1).tolist()
    anns = [{"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "area": a}
            for k, (i, c, b, a) in enumerate(zip(image_ids, category_ids, xywh.tolist(), areas))]
    if score is not None:
        for ann, s in zip(anns, score.astype(np.float64).tolist()):
            ann["score"] = s
            ann["iscrowd"] = 0
    else:
        for ann, c in zip(anns, iscrowd.astype(np.int64).tolist()):
            ann["iscrowd"] = c
    return anns
