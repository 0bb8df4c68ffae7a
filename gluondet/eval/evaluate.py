"""Validation: run a detection network over a data loader and score it with a metric.

Works with the two batch shapes GluonCV's validation loaders produce:
- ``(data, label)`` stacked batches (SSD's val transform): data (B, 3, H, W), label (B, N, 6)
  padded with -1, boxes in network-input pixels; sliced over the devices (``runtime.spread``);
- ``(data, label, im_scale)`` (Faster R-CNN's val transform with ``Append`` batchify): lists with
  one (1, ...) array per image, image i on device i mod N. The label boxes are in network-input
  pixels too, and, as GluonCV's reference ``validate`` does, both predictions and labels are scaled
  by ``im_scale`` (original size / input size) so the metric compares them at the original size.

Every device's forward is launched before any result is read, so the devices work at once; the
metric sees the parts in batch order, so the score does not depend on the number of devices.
"""
import warnings

import mxnet as mx
from mxnet import autograd

from ..progress import Progress
from ..runtime import spread
from .results import metric_result


def evaluate(net, loader, ctx_list, metric, progress=True):
    """Score ``net`` (in predict mode, hybridized or not as the caller set it) on ``loader`` with
    ``metric`` (reset first); returns ``metric_result(metric)``: {"map", "per_class", ...}.
    """

    ctx_list = list(ctx_list) if isinstance(ctx_list, (list, tuple)) else [ctx_list]
    metric.reset()
    try:
        total = len(loader)
    except TypeError:
        total = None
    with Progress(loader, total=total, desc="eval", unit="batch", enabled=progress) as bar:
        for batch in bar:
            parts = list(_per_device(batch, ctx_list))
            with autograd.predict_mode(), warnings.catch_warnings():
                # A Faster R-CNN that has trained holds its training target generator, which the
                # predict graph rightly leaves out: MXNet's "not used by any computation" notice.
                warnings.filterwarnings("ignore", message=r"Parameter .* is not used by any computation")
                outputs = [net(data) for data, _, _ in parts]  # every device starts before any is read
            for (data, label, im_scale), (ids, scores, bboxes) in zip(parts, outputs):
                _update(metric, data, label, im_scale, ids, scores, bboxes)
    return metric_result(metric)


def _update(metric, data, label, im_scale, ids, scores, bboxes):
    """One metric update for one device's part (per-image labels of Faster R-CNN differ in length)."""
    bboxes = _clip_to_image(bboxes, data)
    gt_bboxes = label.slice_axis(axis=-1, begin=0, end=4)
    if im_scale is not None:
        scale = float(im_scale.reshape((-1,))[0].asscalar())
        bboxes = bboxes * scale
        gt_bboxes = gt_bboxes * scale
    flags = label.slice_axis(axis=-1, begin=5, end=6) if label.shape[-1] > 5 else None
    metric.update(bboxes, ids, scores, gt_bboxes, label.slice_axis(axis=-1, begin=4, end=5), flags)


def _per_device(batch, ctx_list):
    """(data, label, im_scale or None) parts of a batch, each on its device."""
    data, label = batch[0], batch[1]
    im_scale = batch[2] if len(batch) > 2 else None
    if isinstance(data, (list, tuple)):  # Append batchify: one image per item
        scales = im_scale if im_scale is not None else [None] * len(data)
        for i, (x, y, s) in enumerate(zip(data, label, scales)):
            ctx = ctx_list[i % len(ctx_list)]
            yield x.as_in_context(ctx), y.as_in_context(ctx), s
        return
    # a last batch smaller than the device list uses fewer devices
    parts = [spread(part, ctx_list) for part in (data, label)]
    scales = spread(im_scale, ctx_list) if im_scale is not None else [None] * len(parts[0])
    for x, y, s in zip(parts[0], parts[1], scales):
        if s is not None and s.size > 1:
            # a stacked batch of scales: one scale per image, so go image by image
            for j in range(x.shape[0]):
                yield x[j:j + 1], y[j:j + 1], s[j]
        else:
            yield x, y, s


def _clip_to_image(bboxes, data):
    """Boxes (B, N, 4) clipped to the input image (B, C, H, W): x to [0, W], y to [0, H]."""
    height, width = data.shape[2], data.shape[3]
    limits = mx.nd.array([width, height, width, height], ctx=bboxes.context, dtype=bboxes.dtype)
    return mx.nd.broadcast_minimum(mx.nd.maximum(bboxes, 0), limits.reshape((1, 1, 4)))
