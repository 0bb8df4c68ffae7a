"""The anchors a network's training targets are matched against, in input pixels, and how well
boxes fit them.

Anchors are constants of the network's own blocks (GluonCV's anchor generators), so any network
built from the model config gives the same ones as the trained network, whatever its weights.
``gluondet.predict.Detector.anchor_layers`` reads the same blocks layer by layer, to draw them.
"""
import warnings

import numpy as np


def anchor_corners(net, family, width, height):
    """The network's anchors for an input of ``width`` x ``height`` pixels, as an (A, 4) float32
    array of x1, y1, x2, y2 in input pixels (``family.anchor_layers``: SSD's default boxes of every
    feature map, R-CNN's RPN anchors of every FPN level), or None for a family without anchors.
    Runs the feature extractor once on zeros (CPU), so pass a network that is not training: a
    forward of another shape would re-trace a hybridized training graph."""
    import mxnet as mx

    x = mx.nd.zeros((1, 3, int(height), int(width)))
    with warnings.catch_warnings():
        # an FPN backbone is a SymbolBlock: MXNet warns that it cannot infer the dtype of its input
        warnings.filterwarnings("ignore", message="Cannot decide type")
        layers = family.anchor_layers(net, x)
    if layers is None:
        return None
    return np.concatenate([corners for _, corners in layers]).astype(np.float32)


def best_iou(boxes, anchors, chunk=512):
    """For each of the (N, 4) corner ``boxes``, its largest IoU with any of the (A, 4) ``anchors``
    (continuous coordinates, as GluonCV's target matchers compute it: no +1); chunked so N x A
    never sits in memory at once."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 4)
    out = np.zeros(len(boxes))
    if not len(anchors):
        return out
    area_a = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    for start in range(0, len(boxes), chunk):
        b = boxes[start:start + chunk, None, :]
        iw = np.clip(np.minimum(b[..., 2], anchors[:, 2]) - np.maximum(b[..., 0], anchors[:, 0]), 0, None)
        ih = np.clip(np.minimum(b[..., 3], anchors[:, 3]) - np.maximum(b[..., 1], anchors[:, 1]), 0, None)
        inter = iw * ih
        area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
        union = area_b + area_a - inter
        out[start:start + chunk] = np.max(np.where(union > 0, inter / np.where(union > 0, union, 1), 0), axis=1)
    return out
