"""Detection metrics (VOC mAP, COCO) and validation of a network over a dataset.

``METRIC_CLASSES`` maps the box-metric names ``--metric`` accepts (constants.BOX_METRICS) to classes; ``evaluate`` (in
``gluondet.eval.evaluate``, which imports MXNet) runs a network over a loader with one of them.
"""
from ..errors import GluondetError
from .coco_metric import COCOMetric
from .results import format_ap_table, metric_result
from .voc_metric import VOC07MApMetric, VOCMApMetric

METRIC_CLASSES = {"voc": VOCMApMetric, "voc07": VOC07MApMetric, "coco": COCOMetric}


def make_metric(name, class_names, iou_thresh=0.5):
    """A fresh metric for ``name`` (one of ``METRIC_CLASSES``) over ``class_names``."""
    if name not in METRIC_CLASSES:
        raise GluondetError("unknown metric %r: choose one of %s" % (name, ", ".join(METRIC_CLASSES)))
    if name == "coco":  # COCO averages over IoU 0.50:0.95 itself
        return COCOMetric(class_names)
    return METRIC_CLASSES[name](iou_thresh=iou_thresh, class_names=list(class_names))


__all__ = ["METRIC_CLASSES", "make_metric", "VOCMApMetric", "VOC07MApMetric", "COCOMetric",
           "metric_result", "format_ap_table"]
