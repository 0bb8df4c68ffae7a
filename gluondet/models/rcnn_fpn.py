"""FPN R-CNN builders: Mask R-CNN and Faster R-CNN with a ResNet FPN backbone for any class list.

GluonCV's ``custom_mask_rcnn_fpn`` / ``custom_faster_rcnn_fpn`` build the backbone, FPN and heads
but take every detector setting as a keyword; the values below are those of GluonCV's COCO FPN
models (``mask_rcnn_fpn_resnet50_v1b_coco``, ``faster_rcnn_fpn_resnet50_v1b_coco``). A model YAML's
``kwargs`` override any of them (the small demo model shrinks proposals and channels there).

``norm: batchnorm`` in kwargs trains the BatchNorm layers instead of freezing them (GluonCV freezes
them, right for an ImageNet backbone; a backbone trained from scratch needs them to learn).
"""
FPN_DEFAULTS = {
    "min_stage": 2, "max_stage": 6, "nms_thresh": 0.5, "nms_topk": -1, "post_nms": -1,
    "roi_mode": "align", "roi_size": (7, 7), "strides": (4, 8, 16, 32, 64), "clip": 4.42,
    "rpn_channel": 1024, "base_size": 16, "scales": (2, 4, 8, 16, 32), "ratios": (0.5, 1, 2),
    "alloc_size": (384, 384), "rpn_nms_thresh": 0.7, "rpn_train_pre_nms": 12000,
    "rpn_train_post_nms": 2000, "rpn_test_pre_nms": 6000, "rpn_test_post_nms": 1000,
    "rpn_min_size": 1, "num_sample": 512, "pos_iou_thresh": 0.5, "pos_ratio": 0.25,
}
MASK_DEFAULTS = {"roi_size": (14, 14), "mask_channels": 256, "rcnn_max_dets": 1000, "target_roi_scale": 2,
                 "num_fcn_convs": 4}
FASTER_DEFAULTS = {"clip": 4.14, "max_num_gt": 100}
TUPLE_KEYS = ("roi_size", "strides", "scales", "ratios", "alloc_size")


def _kwargs(defaults, kwargs):
    merged = {**defaults, **kwargs}
    for key in TUPLE_KEYS:  # YAML gives lists; GluonCV compares and hashes tuples
        if isinstance(merged.get(key), list):
            merged[key] = tuple(merged[key])
    if merged.pop("norm", None) == "batchnorm":
        merged["norm_layer"] = TrainableBatchNorm()
        merged.setdefault("norm_kwargs", {})
    return merged


def TrainableBatchNorm():  # noqa: N802 (a class factory: MXNet is imported only when building)
    """nn.BatchNorm under another class, so GluonCV's ``norm_layer is nn.BatchNorm`` test (which
    freezes the statistics and leaves BatchNorm out of training) does not hold."""
    from mxnet.gluon import nn

    class _TrainableBatchNorm(nn.BatchNorm):
        pass

    return _TrainableBatchNorm


def mask_rcnn_fpn(base_network, classes, pretrained_base=True, **kwargs):
    """Mask R-CNN with an FPN over ``base_network`` (resnet18_v1b, resnet50_v1b, resnet101_v1d)."""
    from gluoncv.model_zoo.rcnn.mask_rcnn import custom_mask_rcnn_fpn

    return custom_mask_rcnn_fpn(list(classes), pretrained_base=pretrained_base, base_network_name=base_network,
                                **_kwargs({**FPN_DEFAULTS, **MASK_DEFAULTS}, kwargs))


def faster_rcnn_fpn(base_network, classes, pretrained_base=True, **kwargs):
    """Faster R-CNN with an FPN over ``base_network``."""
    from gluoncv.model_zoo.rcnn.faster_rcnn import custom_faster_rcnn_fpn

    return custom_faster_rcnn_fpn(list(classes), pretrained_base=pretrained_base, base_network_name=base_network,
                                  **_kwargs({**FPN_DEFAULTS, **FASTER_DEFAULTS}, kwargs))
