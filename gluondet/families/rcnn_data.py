"""What R-CNN training and prediction need to know of a GluonCV R-CNN: its input sizes, its RPN's
anchors and proposals (and the data shapes and images they refuse), and its data transforms.

GluonCV's R-CNNs keep each image's aspect ratio (shorter side ``short``, longer at most
``max_size``); their RPN cuts anchors from a grid made when the network is built and keeps a fixed
number of proposals, so an input can be too small or too elongated for them: both are refused
here in one line, before any step.
"""
import numpy as np

from ..data.base import FLAG_CROWD
from ..data.loader import drop_crowd, with_placeholder_row
from ..errors import GluondetError

# ----------------------------------------------------------------------------- sizes and anchors
def shortest_side(net):
    """The shorter side GluonCV's R-CNN transforms resize to (the smallest, if it draws one at random)."""
    return int(min(net.short) if isinstance(net.short, (list, tuple)) else net.short)


def rpn_levels(net):
    """(feature-map symbol, anchor generator) of each RPN level of an R-CNN, in the RPN's order."""
    import mxnet as mx

    multi = getattr(net, "num_stages", 1) > 1
    features = net.features(mx.sym.var("data"))
    features = list(features) if multi else [features]
    generators = list(net.rpn.anchor_generator) if multi else [net.rpn.anchor_generator]
    return list(zip(features, generators))


def rpn_anchor_count(net, width, height, levels=None):
    """Anchors the RPN of an R-CNN places on a ``width`` x ``height`` input, every level together."""
    count = 0
    for feature, generator in levels or rpn_levels(net):
        _, _, rows, cols = feature.infer_shape(data=(1, 3, int(height), int(width)))[1][0]
        count += rows * cols * generator.num_depth
    return count


def covering_anchor_grid(net):
    """None when the R-CNN's anchors cover every input it takes (both sides at most ``max_size``:
    GluonCV's resize caps the longer one there); else the ``alloc_size`` that covers them.

    Each level cuts its anchors from a grid made when the network is built: an input whose feature
    map is larger than the grid fails in MXNet's slice (or the training targets miscount the
    anchors). GluonCV's RPN halves the grid from level to level (down to 16 cells), so level i
    needs ``cells << i``.
    """
    side = int(net.max_size)
    levels = [(max(feature.infer_shape(data=(1, 3, side, side))[1][0][2:4]), min(generator.anchors.shape[2:4]))
              for feature, generator in rpn_levels(net)]
    if all(cells <= grid for cells, grid in levels):
        return None
    return (max(cells << i for i, (cells, _) in enumerate(levels)),) * 2


def rpn_proposals(net, training=True):
    """How many proposals the RPN of an R-CNN keeps per image. Its graph slices that many rows out
    of one per anchor, so an input with fewer anchors fails (MXNet: "Invalid end for end=2000")."""
    return int(net.rpn._train_post_nms if training else net.rpn.get_test_post_nms())


def check_smallest_input(net, key):
    """Refuse a data shape whose images have fewer anchors than the RPN keeps in training.

    A square image has the fewest anchors of all those up to 5:3 (they all get the shorter side);
    a longer one gets less than the shorter side and is checked against the dataset's images
    (``data.loader.check_elongated_images``). The message names the smallest data shape that has
    enough, found by bisection (the count grows with the side)."""
    levels, proposals = rpn_levels(net), rpn_proposals(net)
    short = shortest_side(net)

    def enough(side):
        return rpn_anchor_count(net, side, side, levels) >= proposals

    if enough(short):
        return
    low, high = short, short * 2
    while not enough(high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    raise GluondetError(f"model '{key}': data_shape {short} is too small: a {short}x{short} image has "
                        f"{rpn_anchor_count(net, short, short, levels)} anchors, fewer than the {proposals} "
                        f"proposals its RPN keeps in training; use --data-shape {high} or more")


# ----------------------------------------------------------------------------- Faster R-CNN
def anchor_grid(net):
    """The side of the square grid of anchors an R-CNN's first RPN level holds (its ``alloc_size``).

    GluonCV's train transforms copy the anchors they make targets for from an ``ashape`` x ``ashape``
    grid, 128 unless told: at an FPN's stride 4 that covers 512 px, and a larger image got fewer
    targets than the RPN has anchors (MXNet's "Reshape: Check failed" at the first step). With the
    network's own grid they cover every image the network covers (GluonCV's scripts pass
    ``net.ashape``; the smaller side here, as the transforms cut a square from it).
    """
    _, first = rpn_levels(net)[0]
    return int(min(first.anchors.shape[2:4]))


class FasterRCNNTrainTransform:
    """GluonCV's Faster R-CNN train transform (resize, flip, RPN targets) without crowd rows.

    With an FPN (several RPN levels) GluonCV gives one target array per level: they are flattened
    and concatenated, the order in which the RPN outputs its anchors."""

    def __init__(self, net):
        from gluoncv.data.transforms.presets.rcnn import FasterRCNNDefaultTrainTransform

        self._multi_stage = getattr(net, "num_stages", 1) > 1
        self._transform = FasterRCNNDefaultTrainTransform(net.short, net.max_size, net, ashape=anchor_grid(net),
                                                          multi_stage=self._multi_stage)

    def __call__(self, img, label):
        out = self._transform(img, drop_crowd(np.asarray(label, dtype=np.float32)))
        if not self._multi_stage:
            return out
        img, label, cls_targets, box_targets, box_masks = out
        return (img, label, *(np.concatenate([np.asarray(x).reshape(shape) for x in levels])
                              for levels, shape in ((cls_targets, (-1,)), (box_targets, (-1, 4)),
                                                    (box_masks, (-1, 4)))))


class FasterRCNNValTransform:
    def __init__(self, net):
        from gluoncv.data.transforms.presets.rcnn import FasterRCNNDefaultValTransform

        self._transform = FasterRCNNDefaultValTransform(net.short, net.max_size)

    def __call__(self, img, label):
        return self._transform(img, with_placeholder_row(label))


def resized_size(size, short, max_size):
    """(w, h) of a ``size`` image after GluonCV's ``resize_short_within(short, max_size)``: the
    shorter side to ``short`` unless the longer one then exceeds ``max_size``, where it stops."""
    w, h = size
    scale = short / min(w, h)
    if np.round(scale * max(w, h)) > max_size:
        scale = max_size / max(w, h)
    return int(np.round(w * scale)), int(np.round(h * scale))


def check_elongated_images(net, dataset, indices=None, training=True):
    """Refuse a dataset whose most elongated image (past 5:3 it gets less than the shorter side)
    has fewer anchors than an R-CNN's RPN keeps (in training, or in prediction); squarer images
    are checked with the data shape (``models.check_smallest_input``). Sizes come from the image
    headers: nothing is decoded."""
    indices = range(len(dataset)) if indices is None else indices
    sizes = {i: dataset.image_size(i) for i in indices}
    if not sizes:
        return
    worst = max(sizes, key=lambda i: max(sizes[i]) / min(sizes[i]))
    w, h = resized_size(sizes[worst], shortest_side(net), net.max_size)
    anchors, proposals = rpn_anchor_count(net, w, h), rpn_proposals(net, training)
    if anchors < proposals:
        raise GluondetError(
            f"{dataset.image_path(worst)}: {sizes[worst][0]}x{sizes[worst][1]} px is too elongated for "
            f"data_shape {shortest_side(net)}: resized to {w}x{h} it has {anchors} anchors, fewer than the "
            f"{proposals} proposals the RPN keeps {'in training' if training else 'per image'}; "
            f"use a larger --data-shape, or leave such images out")


# ----------------------------------------------------------------------------- Mask R-CNN
class MaskRCNNTrainTransform:
    """Resize (shorter side to ``net.short``, longer at most ``net.max_size``), flip half the images,
    normalize; then RPN targets over the network's anchors, all FPN levels concatenated in the
    order the RPN outputs them.

    Masks arrive as (N, H, W) uint8 arrays at the image's size (from any layout: polygons, RLE,
    PNG), so they are resized as pixels rather than as polygons like GluonCV's
    ``MaskRCNNDefaultTrainTransform``, whose anchors and RPN target generator are reused here.
    Returns ``(img (3, h, w), label (N, 6), masks (N, h, w) float32, rpn_cls_targets (A,),
    rpn_box_targets (A, 4), rpn_box_masks (A, 4))``.
    """

    def __init__(self, net):
        from gluoncv.data.transforms.presets.rcnn import MaskRCNNDefaultTrainTransform

        self._short, self._max_size = net.short, net.max_size
        self._multi_stage = getattr(net, "num_stages", 1) > 1
        self._gluoncv = MaskRCNNDefaultTrainTransform(net.short, net.max_size, net, ashape=anchor_grid(net),
                                                      multi_stage=self._multi_stage)

    def __call__(self, img, label, masks):
        import cv2
        import mxnet as mx
        from gluoncv.data.transforms import bbox as tbbox
        from gluoncv.data.transforms import image as timage

        label = np.asarray(label, dtype=np.float32)
        keep = label[:, 5] != FLAG_CROWD
        label, masks = label[keep], np.asarray(masks)[keep]
        h, w = img.shape[:2]
        img = timage.resize_short_within(img, self._short, self._max_size, interp=1)
        new_h, new_w = img.shape[:2]
        label = tbbox.resize(label, (w, h), (new_w, new_h))
        # uint8 0/1 pixels through bilinear resizing round back to 0/1: a threshold at one half
        masks = np.stack([cv2.resize(m, (new_w, new_h), interpolation=cv2.INTER_LINEAR) for m in masks])
        img, flips = timage.random_flip(img, px=0.5)
        if flips[0]:
            label = tbbox.flip(label, (new_w, new_h), flip_x=True)
            masks = masks[:, :, ::-1]
        img = mx.nd.image.normalize(mx.nd.image.to_tensor(img), mean=(0.485, 0.456, 0.406),
                                    std=(0.229, 0.224, 0.225))
        cls_targets, box_targets, box_masks = self._rpn_targets(img, label)
        return (img, mx.nd.array(label), mx.nd.array(np.ascontiguousarray(masks), dtype="float32"),
                cls_targets, box_targets, box_masks)

    def _rpn_targets(self, img, label):
        """RPN targets of every anchor, levels concatenated (each level's (H, W, anchors) flattened)."""
        import mxnet as mx

        base = self._gluoncv
        height, width = img.shape[1], img.shape[2]
        levels = base._anchors if self._multi_stage else [base._anchors]
        shapes = base._feat_sym if self._multi_stage else [base._feat_sym]
        anchors = []
        for anchor, feat in zip(levels, shapes):
            out_shape = feat.infer_shape(data=(1, 3, height, width))[1][0]
            anchors.append(anchor[:, :, :out_shape[2], :out_shape[3], :].reshape((-1, 4)))
        return base._target_generator(mx.nd.array(label[:, :4]), mx.nd.concat(*anchors, dim=0), width, height)


class MaskRCNNValTransform:
    """Resize and normalize; the label and masks stay at the image's own size.

    Returns ``(img (3, h, w), label (N, 6) at the original size, scale (original / input),
    masks (N, H, W) uint8)``: validation pastes predicted masks at the original size and compares
    them with these. An image without objects gets one placeholder row (class -1) and one empty mask.
    """

    def __init__(self, net):
        self._short, self._max_size = net.short, net.max_size

    def __call__(self, img, label, masks):
        import mxnet as mx
        from gluoncv.data.transforms import image as timage

        h, w = img.shape[:2]
        img = timage.resize_short_within(img, self._short, self._max_size, interp=1)
        scale = h / float(img.shape[0])
        img = mx.nd.image.normalize(mx.nd.image.to_tensor(img), mean=(0.485, 0.456, 0.406),
                                    std=(0.229, 0.224, 0.225))
        if not len(masks):
            masks = np.zeros((1, h, w), np.uint8)
        return img, mx.nd.array(with_placeholder_row(label)), mx.nd.array([scale]), mx.nd.array(masks, dtype=np.uint8)
