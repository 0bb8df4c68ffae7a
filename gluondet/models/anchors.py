"""The anchors a network's training targets are matched against, in input pixels, and how well
boxes fit them.

Anchors are constants of the network's own blocks (GluonCV's anchor generators), so any network
built from the model config gives the same ones as the trained network, whatever its weights.
``gluondet.predict.Detector.anchor_layers`` reads the same blocks layer by layer, to draw them.
"""
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import GluondetError


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


# ----------------------------------------------------------------------------- drawn per feature map
@dataclass
class AnchorLayer:
    """The anchors of one feature map, in original image pixels (corner format)."""

    index: int
    grid: tuple  # (rows, cols) of the feature map
    boxes: np.ndarray  # (rows, cols, anchors_per_position, 4) xmin, ymin, xmax, ymax
    stride: tuple = field(default=(0.0, 0.0))  # (x, y) pixels between positions, original image

    def at(self, fx, fy):
        """Anchors (A, 4) of the position holding the point (fx, fy), given as fractions of width/height."""
        rows, cols = self.grid
        r = min(rows - 1, max(0, int(fy * rows)))
        c = min(cols - 1, max(0, int(fx * cols)))
        return self.boxes[r, c]


def anchor_layers(net, family, input_size, image_size, ctx=None, source=""):
    """The network's own anchors for an image of ``image_size`` (w, h) resized to ``input_size``
    (w, h), per feature map, in the image's pixels (AnchorLayer). SSD: the default boxes of every
    feature map (all sizes and ratios); R-CNN: the RPN anchors. Needs the Gluon network (a run
    folder): an export's graph has no Python blocks to ask. ``source`` names it in errors."""
    import mxnet as mx

    if isinstance(net, mx.gluon.SymbolBlock) or not isinstance(net, mx.gluon.Block):
        raise GluondetError(f"{source}: anchors are read from the network's Python blocks; "
                            "use --run with a run folder, not an export folder")
    (nw, nh), (width, height) = input_size, image_size
    sx, sy = nw / width, nh / height
    layers = family.anchor_layers(net, mx.nd.zeros((1, 3, nh, nw), ctx=ctx or mx.cpu()))
    if layers is None:
        raise GluondetError(f"{source}: a {family.name} network has no anchor boxes to show")
    return [_anchor_layer(i, feat.shape[2:], corners, sx, sy, nw, nh) for i, (feat, corners) in enumerate(layers)]


def _anchor_layer(index, grid, corners, sx, sy, nw, nh):
    rows, cols = int(grid[0]), int(grid[1])
    boxes = corners.reshape(rows, cols, -1, 4) / np.array([sx, sy, sx, sy], np.float32)
    return AnchorLayer(index=index, grid=(rows, cols), boxes=boxes.astype(np.float32),
                       stride=(nw / cols / sx, nh / rows / sy))
