"""FPN R-CNN builders: Mask R-CNN and Faster R-CNN with a ResNet FPN backbone for any class list.

GluonCV's ``custom_mask_rcnn_fpn`` / ``custom_faster_rcnn_fpn`` build the backbone, FPN and heads
but take every detector setting as a keyword; the values below are those of GluonCV's COCO FPN
models (``mask_rcnn_fpn_resnet50_v1b_coco``, ``faster_rcnn_fpn_resnet50_v1b_coco``). A model YAML's
``kwargs`` override any of them (the small demo model shrinks proposals and channels there).

Every network built here pools its RoIs with ``pyramid_roi_features`` (see there): GluonCV's own
FPN pooling reads uninitialized memory on the CPU.

``norm: batchnorm`` in kwargs trains the BatchNorm layers instead of freezing them (GluonCV freezes
them, right for an ImageNet backbone; a backbone trained from scratch needs them to learn);
``norm: groupnorm`` (``norm_groups``, default NORM_GROUPS) puts GroupNorm in their place, which
trains from scratch at one image per step without BatchNorm's statistics (the demo model's choice:
measured in configs/models/mask_rcnn_tiny.yaml).
"""
from ..errors import GluondetError

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
MASK_PREDICTOR_INIT_STD = 0.001
NORM_GROUPS = 16  # GroupNorm's groups with norm: groupnorm (Wu & He's default is 32)
TUPLE_KEYS = ("roi_size", "strides", "scales", "ratios", "alloc_size")


def _kwargs(defaults, kwargs):
    merged = {**defaults, **kwargs}
    for key in TUPLE_KEYS:  # YAML gives lists; GluonCV compares and hashes tuples
        if isinstance(merged.get(key), list):
            merged[key] = tuple(merged[key])
    norm, groups = merged.pop("norm", None), merged.pop("norm_groups", NORM_GROUPS)
    if norm == "batchnorm":
        merged["norm_layer"] = TrainableBatchNorm()
        merged.setdefault("norm_kwargs", {})
    elif norm == "groupnorm":
        merged["norm_layer"] = GroupNormLayer()
        merged["norm_kwargs"] = {"num_groups": int(groups)}
    elif norm is not None:
        raise GluondetError(f"model kwargs: norm '{norm}' is not one of batchnorm, groupnorm "
                            f"(leave it out for GluonCV's frozen BatchNorm)")
    return merged


def TrainableBatchNorm():  # noqa: N802 (a class factory: MXNet is imported only when building)
    """nn.BatchNorm under another class, so GluonCV's ``norm_layer is nn.BatchNorm`` test (which
    freezes the statistics and leaves BatchNorm out of training) does not hold."""
    from mxnet.gluon import nn

    class _TrainableBatchNorm(nn.BatchNorm):
        pass

    return _TrainableBatchNorm


def GroupNormLayer():  # noqa: N802 (a class factory, as TrainableBatchNorm)
    """nn.GroupNorm taking the ``in_channels`` keyword GluonCV's ResNets pass to a norm layer
    (MXNet 1.9's GroupNorm infers its channels and has no such argument)."""
    from mxnet.gluon import nn

    class _GroupNorm(nn.GroupNorm):
        def __init__(self, in_channels=0, **kwargs):
            super().__init__(**kwargs)

    return _GroupNorm


def mask_rcnn_fpn(base_network, classes, pretrained_base=True, **kwargs):
    """Mask R-CNN with an FPN over ``base_network`` (resnet18_v1b, resnet50_v1b, resnet101_v1d)."""
    from gluoncv.model_zoo.rcnn.mask_rcnn import custom_mask_rcnn_fpn

    net = custom_mask_rcnn_fpn(list(classes), pretrained_base=pretrained_base, base_network_name=base_network,
                               **_kwargs({**FPN_DEFAULTS, **MASK_DEFAULTS}, kwargs))
    import mxnet as mx

    # the mask predictor starts near zero (detectron2's std 0.001): GluonCV's Xavier start gives mask
    # logits of 10-30 and first mask losses of 2-3 that the rest of the network then chases
    net.mask.mask.weight.init = mx.init.Normal(MASK_PREDICTOR_INIT_STD)
    return use_zeroed_roi_pooling(net)


def faster_rcnn_fpn(base_network, classes, pretrained_base=True, **kwargs):
    """Faster R-CNN with an FPN over ``base_network``."""
    # the module, not the package: the package re-exports the double-head R-CNN's function of that name
    from gluoncv.model_zoo.rcnn.faster_rcnn.faster_rcnn import custom_faster_rcnn_fpn

    return use_zeroed_roi_pooling(custom_faster_rcnn_fpn(
        list(classes), pretrained_base=pretrained_base, base_network_name=base_network,
        **_kwargs({**FPN_DEFAULTS, **FASTER_DEFAULTS}, kwargs)))


def use_zeroed_roi_pooling(net):
    """Make an FPN R-CNN (GluonCV's FasterRCNN or MaskRCNN, also a zoo detector) pool with
    ``pyramid_roi_features``; a network without FPN levels is returned as it is."""
    import types

    if getattr(net, "num_stages", 1) > 1:
        net._pyramid_roi_feats = types.MethodType(pyramid_roi_features, net)
    return _zero_fpn_biases(net)


def _zero_fpn_biases(net):
    """Zeros for the FPN's biases when nothing loaded them (no pretrained base): they live in a
    SymbolBlock whose deferred initialization hands a bias to a weight initializer (Xavier then
    refuses a vector), so ``models.initialize_missing`` could not start such a network."""
    import mxnet as mx

    for name, param in net.collect_params().items():
        if name.endswith("_bias") and param._data is None and getattr(param, "_deferred_init", ()) == ():
            param.initialize(init=mx.init.Zero())
    return net


def pyramid_roi_features(net, F, features, rois, roi_size, strides, roi_mode="align",
                         roi_canonical_scale=224.0, sampling_ratio=2, eps=1e-6):
    """RoI features from the FPN level each RoI belongs to (FPN paper's rule: level
    floor(4 + log2(sqrt(area) / 224)), clipped to the network's levels, P6 left out); a RoI whose
    batch index is negative gets zeros. Each row equals ROIAlign of that RoI alone at its level.

    Each level's ROIAlign computes only its own RoIs: the others get batch index -1, which the
    kernel skips (forward and backward), as GluonCV does for MXNet >= 1.6. MXNet 1.9.1's CPU kernel
    gets two things wrong there (roi_align.cc, ``top_data[n] = 0``): a skipped row is left
    unwritten (old memory: 1e30 values, mask losses of 1e28), and the zero meant for it lands on
    element n of the flattened output, i.e. inside the first rows, a RoI that was pooled (seen: 2 of
    147 values of a valid row zeroed, racing with the thread that writes that row). So the RoIs go
    in behind as many rows of -1 (``_align_own_rois``): every stray zero falls in those rows, which
    are dropped, and ``where`` zeroes the skipped rows. Pooling every RoI at every level instead
    cost 4 ROIAligns: 1.9x the time forward + backward, 2.1x forward (scripts/bench/
    bench_fpn_pooling.py). N rows of padding, not one: one suffices only while N < C x roi_size,
    which a traced graph cannot check (one row measured 3.4 ms faster per mask_rcnn_tiny step: the
    CPU backward visits every element of every row, skipped or not). MXNet's GPU kernel writes
    zeros into each skipped row itself (roi_align.cu, read, not run here): there the padding and
    ``where`` change nothing but the work. ``roi_mode="pool"`` (ROIPooling) pools every RoI at
    every level.
    """
    max_stage = net._max_stage - 1 if net._max_stage > 5 else net._max_stage
    batch_index, x1, y1, x2, y2 = F.split(rois, axis=-1, num_outputs=5)
    level = F.floor(4 + F.log2(F.sqrt((x2 - x1 + 1) * (y2 - y1 + 1)) / roi_canonical_scale + eps))
    level = F.squeeze(F.clip(level, net._min_stage, max_stage))
    pooled_at_all = F.squeeze(batch_index >= 0)
    skipped = F.ones_like(rois) * -1
    pooled = []
    for i, stage in enumerate(range(net._min_stage, max_stage + 1)):
        own = (level == stage) * pooled_at_all
        if roi_mode == "align":
            feature = _align_own_rois(F, features[i], F.where(own, rois, skipped), skipped, roi_size,
                                      1. / strides[i], sampling_ratio)
        else:
            feature = F.ROIPooling(features[i], rois, roi_size, 1. / strides[i])
        pooled.append(F.where(own, feature, F.zeros_like(feature)))
    return F.ElementWiseSum(*pooled)


def _align_own_rois(F, feature, rois, skipped, roi_size, spatial_scale, sampling_ratio):
    """ROIAlign of ``rois`` (N rows, the skipped ones with batch index -1) put behind the N rows of
    ``skipped``: the CPU kernel's stray zero for skipped row n lands at flat index n < 2N, inside the
    dropped half (N rows of C x roi_size values each). Rows skipped in ``rois`` stay unwritten."""
    both = F.stop_gradient(F.concat(skipped, rois, dim=0))
    out = F.contrib.ROIAlign(feature, both, roi_size, spatial_scale, sample_ratio=sampling_ratio)
    out = F.slice_axis(F.reshape(out, (-4, 2, -1, -2)), axis=0, begin=1, end=2)
    return F.reshape(out, (-3, -2))
