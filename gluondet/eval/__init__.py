"""Detection metrics (VOC mAP, COCO) and validation of a network over a dataset.

``METRICS`` maps the names ``--metric`` accepts to metric classes; ``evaluate`` (in
``gluondet.eval.evaluate``, which imports MXNet) runs a network over a loader with one of them.
"""
from ..errors import GluondetError
from .coco_metric import COCOMetric
from .report import format_ap_table, metric_result
from .voc_metric import VOC07MApMetric, VOCMApMetric

METRICS = {"voc": VOCMApMetric, "voc07": VOC07MApMetric, "coco": COCOMetric}


def make_metric(name, class_names, iou_thresh=0.5):
    """A fresh metric for ``name`` (one of ``METRICS``) over ``class_names``."""
    if name not in METRICS:
        raise GluondetError("unknown metric %r: choose one of %s" % (name, ", ".join(METRICS)))
    if name == "coco":  # COCO averages over IoU 0.50:0.95 itself
        return COCOMetric(class_names)
    return METRICS[name](iou_thresh=iou_thresh, class_names=list(class_names))


__all__ = ["METRICS", "make_metric", "VOCMApMetric", "VOC07MApMetric", "COCOMetric",
           "metric_result", "format_ap_table"]
