"""COCO box metrics (AP@[.5:.95] and the other 11 standard numbers) through pycocotools.

``COCOMetric`` takes batches the way the VOC metrics do (padded (B, N, ...) arrays, label -1 =
padding), builds COCO-format ground truth and detections in memory at ``get()`` and runs
pycocotools' ``COCOeval``, so its numbers are pycocotools' own.

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
import io

import numpy as np

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
        nan_stats = np.full(len(COCO_STAT_NAMES), np.nan)
        nan_classes = np.full(len(self.class_names), np.nan)
        gt_dataset, dt_dataset = self.coco_datasets()
        if not gt_dataset["images"]:
            return nan_stats, nan_classes
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        quiet = (contextlib.nullcontext() if self.verbose
                 else contextlib.redirect_stdout(io.StringIO()))
        with quiet:
            coco_gt, coco_dt = COCO(), COCO()
            coco_gt.dataset, coco_dt.dataset = gt_dataset, dt_dataset
            coco_gt.createIndex()
            coco_dt.createIndex()
            coco_eval = COCOeval(coco_gt, coco_dt, self.iou_type)
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        self.coco_eval = coco_eval
        stats = np.where(coco_eval.stats < 0, np.nan, coco_eval.stats)
        # precision: (iou thresholds, recall points, classes, area ranges, max dets); -1 = no gt
        precision = coco_eval.eval["precision"][:, :, :, 0, -1]
        class_aps = nan_classes.copy()
        for k, cat_id in enumerate(coco_eval.params.catIds):
            p = precision[:, :, k]
            if (p > -1).any():
                class_aps[cat_id - 1] = np.mean(p[p > -1])
        return stats, class_aps


def _annotations(image, label, box, iscrowd=None, score=None):
    box = box.astype(np.float64)
    width = box[:, 2] - box[:, 0]
    height = box[:, 3] - box[:, 1]
    anns = []
    for i in range(len(label)):
        ann = {"id": i + 1,  # pycocotools treats id 0 as "unmatched": start at 1
               "image_id": int(image[i]) + 1, "category_id": int(label[i]) + 1,
               "bbox": [float(box[i, 0]), float(box[i, 1]), float(width[i]), float(height[i])],
               "area": float(width[i] * height[i])}
        if score is not None:
            ann["score"] = float(score[i])
            ann["iscrowd"] = 0
        else:
            ann["iscrowd"] = int(iscrowd[i])
        anns.append(ann)
    return anns
