"""Instance segmentation: COCO bbox and segm AP of a Mask R-CNN, through pycocotools.

``COCOSegmMetric`` is ``COCOMetric`` with ``iouType="segm"``: each detection and ground-truth object
also carries a COCO RLE mask (and its pixel area, which decides small / medium / large, as COCO's
``loadRes`` computes it for results). ``InstanceMetric`` feeds one image at a time to a bbox and a
segm metric, so both see the same detections. ``evaluate_instances`` runs a network over a
the Mask R-CNN family's ``val_loader`` and scores it; predicted masks (the network's per-RoI 28x28 or 14x14
probabilities) are pasted at the image's own size with GluonCV's ``fill``, ground-truth masks are
rasterized by pycocotools from the dataset's mask specs (in the loader's workers).
"""
import numpy as np

from ..constants import MASK_METRICS
from ..data.coco import coco_paths, load_coco_api
from ..data.masks import encode_masks, paste_masks
from ..errors import GluondetError
from ..fileio import atomic_write_text
from ..progress import Progress
from .coco_metric import COCOMetric
from .results import metric_result
from .voc_metric import flatten_batches


class COCOSegmMetric(COCOMetric):
    """COCO mask AP (the 12 numbers, per class AP) from RLE masks; ``update_image`` only."""

    key = "coco_segm"
    iou_type = "segm"

    def reset(self):
        super().reset()
        self._pred_rles, self._gt_rles = [], []

    def update(self, *args, **kwargs):
        raise TypeError("COCOSegmMetric needs masks: use update_image")

    def update_image(self, pred_bboxes, pred_labels, pred_scores, pred_rles, gt_bboxes, gt_labels, gt_flags,
                     gt_rles):
        """One image: (N, 4) boxes, (N,) labels and scores, N RLEs; the same for its ground truth."""
        pred_labels, gt_labels = np.asarray(pred_labels).reshape(-1), np.asarray(gt_labels).reshape(-1)
        super().update(np.asarray(pred_bboxes).reshape(1, -1, 4), pred_labels[None],
                       np.asarray(pred_scores).reshape(1, -1), np.asarray(gt_bboxes).reshape(1, -1, 4),
                       gt_labels[None], np.asarray(gt_flags).reshape(1, -1))
        self._pred_rles.extend(r for r, label in zip(pred_rles, pred_labels) if label >= 0)
        self._gt_rles.extend(r for r, label in zip(gt_rles, gt_labels) if label >= 0)

    def rles(self):
        """(detections' RLEs, ground truth's RLEs), each in ``flatten_batches`` order: entry j is the
        mask of detection / object j of any matching of these batches (``VOCMApMetric.matching``).
        The metric's own lists: read them, do not change them."""
        return self._pred_rles, self._gt_rles

    def coco_datasets(self):
        from pycocotools import mask as mask_utils

        gt_dataset, dt_dataset = super().coco_datasets()
        dets, gts = flatten_batches(self._batches)  # the order COCOMetric built its annotations in
        num_classes = len(self.class_names)
        for anns, rles, labels in ((gt_dataset["annotations"], self._gt_rles, gts.label),
                                   (dt_dataset["annotations"], self._pred_rles, dets.label)):
            kept = [r for r, label in zip(rles, labels) if label < num_classes]
            for ann, rle in zip(anns, kept):
                ann["segmentation"] = rle
                ann["area"] = float(mask_utils.area(rle))
                # pycocotools' annToRLE reads the image's size even for an RLE
                image = gt_dataset["images"][ann["image_id"] - 1]
                image["height"], image["width"] = (int(v) for v in rle["size"])
        return gt_dataset, dt_dataset


class InstanceMetric:
    """Box and mask COCO AP over the same images: ``update_image`` then ``results()``."""

    def __init__(self, class_names):
        self.bbox = COCOMetric(class_names)
        self.segm = COCOSegmMetric(class_names)

    def reset(self):
        self.bbox.reset()
        self.segm.reset()

    def update_image(self, pred_bboxes, pred_labels, pred_scores, pred_rles, gt_bboxes, gt_labels, gt_flags,
                     gt_rles):
        self.bbox.update(np.asarray(pred_bboxes).reshape(1, -1, 4), np.asarray(pred_labels).reshape(1, -1),
                         np.asarray(pred_scores).reshape(1, -1), np.asarray(gt_bboxes).reshape(1, -1, 4),
                         np.asarray(gt_labels).reshape(1, -1), np.asarray(gt_flags).reshape(1, -1))
        self.segm.update_image(pred_bboxes, pred_labels, pred_scores, pred_rles, gt_bboxes, gt_labels,
                               gt_flags, gt_rles)

    def results(self):
        """{"coco_bbox": result dict, "coco_segm": result dict} (see eval/results.py)."""
        bbox, segm = metric_result(self.bbox), metric_result(self.segm)
        bbox["metric"] = "coco_bbox"
        bbox["coco_bbox"] = bbox.pop("coco", None)
        return {"coco_bbox": bbox, "coco_segm": segm}


def instances_from_output(ids, scores, boxes, masks, scale, size, threshold=0.0):
    """One image's network output (batch of 1) at the image's own ``size`` (w, h).

    Returns ``(labels (K,), scores (K,), boxes (K, 4), masks (K, h, w) uint8)`` of the detections
    with a class (id >= 0) and a score above ``threshold``: boxes scaled by ``scale`` (original /
    input) and clipped to the image, masks pasted into their boxes.
    """

    ids, scores = ids[0].asnumpy().reshape(-1), scores[0].asnumpy().reshape(-1)
    keep = (ids >= 0) & (scores > threshold)
    width, height = size
    boxes = boxes[0].asnumpy()[keep] * scale
    boxes = np.clip(boxes, 0, [width, height, width, height])
    full = paste_masks(masks[0].asnumpy()[keep], boxes, (width, height))
    return ids[keep].astype(int), scores[keep], boxes, full


def evaluate_instances(net, loader, ctx_list, class_names, progress=True, image_ids=None, results=None,
                       metric=None):
    """COCO bbox and segm results of ``net`` (predict mode) on the Mask R-CNN family's ``val_loader`` (images in
    dataset order). ``results``, a list, receives COCO result entries (segm format, with ``bbox``)
    for ``--coco-results``, with image ids from ``image_ids`` (dataset order; default 1, 2, ...).
    ``metric``: the ``InstanceMetric`` to fill (reset first; a fresh one when None), for a caller
    that analyses its matched boxes and masks afterwards (eval/folder.py).
    """
    from mxnet import autograd

    metric = metric if metric is not None else InstanceMetric(class_names)
    metric.reset()
    ctx_list = list(ctx_list) if isinstance(ctx_list, (list, tuple)) else [ctx_list]
    seen = 0
    for batch in Progress(loader, desc="eval", unit="batch", enabled=progress):
        for k, (data, label, scale, gt_masks) in enumerate(zip(*batch)):
            gt_masks = gt_masks.asnumpy()[0]
            height, width = gt_masks.shape[1:]
            with autograd.predict_mode():
                out = net(data.as_in_context(ctx_list[k % len(ctx_list)]))
            labels, scores, boxes, masks = instances_from_output(*out, float(scale.asscalar()), (width, height))
            pred_rles = encode_masks(masks)
            gt = label.asnumpy()[0]
            metric.update_image(boxes, labels, scores, pred_rles, gt[:, :4], gt[:, 4], gt[:, 5],
                                encode_masks(gt_masks))
            if results is not None:
                image_id = image_ids[seen] if image_ids is not None else seen + 1
                results.extend(coco_results(image_id, labels, scores, boxes, pred_rles))
            seen += 1
    return metric.results()


def coco_results(image_id, labels, scores, boxes, rles):
    """COCO segm result entries of one image (category id = class index + 1, as the metric numbers
    them). No ``bbox``: with one, pycocotools' ``loadRes`` would take each detection's area from the
    box instead of the mask, and the segm numbers from the file would differ from ours."""
    image_id = int(image_id) if str(image_id).isdigit() else image_id
    return [{"image_id": image_id, "category_id": int(c) + 1, "score": float(s), "segmentation": r}
            for c, s, r in zip(labels, scores, rles)]


def validate_instances(net, loader, ctx_list, metric_name, class_names, progress=True, metric=None):
    """``evaluate_instances`` on the Mask R-CNN family's ``val_loader`` as validation wants it: the result dict of
    ``metric_name`` (coco_segm or coco_bbox, which picks the best checkpoint) with ``row``, every
    number of both metrics for metrics.csv (``segm/AP``, ``bbox/AP50``, ..., ``segm_ap/<class>``),
    and ``box`` and ``mask``, each metric's full result. ``metric``: see ``evaluate_instances``."""

    if metric_name not in MASK_METRICS:
        raise GluondetError(f"--metric {metric_name}: a mask model is validated with "
                            f"{' or '.join(MASK_METRICS)}")
    results = evaluate_instances(net, loader, ctx_list, class_names, progress=progress, metric=metric)
    result = dict(results[metric_name])
    row = {}
    for name, short in (("coco_segm", "segm"), ("coco_bbox", "bbox")):
        row.update({f"{short}/{k}": v for k, v in (results[name].get(name) or {}).items()})
        row.update({f"{short}_ap/{c}": v for c, v in results[name]["per_class"].items()})
    result.update(row=row, coco_bbox=results["coco_bbox"]["coco_bbox"], coco_segm=results["coco_segm"]["coco_segm"],
                  box=results["coco_bbox"], mask=results["coco_segm"])
    return result


def evaluate_run_instances(net, loader, ctx_list, metric_name, class_names, dataset, dataset_cfg, split,
                           coco_results=None, progress=True, metric=None):
    """``gluondet eval`` of a mask model: the result dict of ``metric_name`` (coco_segm unless
    coco_bbox) with ``box`` and ``mask``, each a full result dict with AP per class. ``coco_results``
    (a path) receives every scored detection in COCO's segm result format, with the dataset's
    image and category ids when it is a COCO dataset. ``metric``: see ``evaluate_instances``."""
    import json

    metric_name = metric_name if metric_name in MASK_METRICS else "coco_segm"
    entries = [] if coco_results else None
    image_ids = [dataset.image_id(i) for i in range(len(dataset))]
    results = evaluate_instances(net, loader, ctx_list, class_names, progress=progress, image_ids=image_ids,
                                 results=entries, metric=metric)
    result = dict(results[metric_name])
    result.update(box=results["coco_bbox"], mask=results["coco_segm"])
    if coco_results:
        ids = _category_ids(dataset_cfg, split, class_names)
        for entry in entries:
            entry["category_id"] = ids[entry["category_id"] - 1]
        atomic_write_text(coco_results, json.dumps(entries) + "\n")
    return result


def _category_ids(dataset_cfg, split, class_names):
    """The COCO category id of each class (by name) in a COCO dataset's file; class index + 1 else."""
    if dataset_cfg.format != "coco":
        return list(range(1, len(class_names) + 1))

    ann_path, _ = coco_paths(dataset_cfg.root, dataset_cfg.split_spec(split))
    by_name = {str(c.get("name", "")).strip(): c["id"] for c in load_coco_api(ann_path).dataset["categories"]}
    return [by_name[name] for name in class_names]
