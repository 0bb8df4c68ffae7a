"""Training and validation DataLoaders: GluonCV's transforms, with targets made in the workers.

SSD: ``SSDDefaultTrainTransform``'s augmentation, then training targets against the network's own
anchors, computed here in the DataLoader workers so the training step only runs the network.
Faster R-CNN: GluonCV's train/val transforms and one image per device, as in its reference script.
Crowd objects (flag 2) are left out of training targets. An image without objects trains SSD as
all background (zero targets), never through a fake box: a ``[-1]*6`` row becomes NaN box targets.
"""
import random
import re

import numpy as np

from ..constants import AUGMENTATIONS, IMAGENET_MEAN, IMAGENET_STD
from .base import FLAG_CROWD

SSD_BOX_NORM = (0.1, 0.1, 0.2, 0.2)
SSD_IOU_THRESH = 0.5
# MXNet's shape checks when an input is smaller than a kernel: Convolution ("kernel size exceed
# input") and Pooling ("kernel size (3) exceeds input (2 padded to 2)").
KERNEL_EXCEEDS_INPUT = re.compile(r"Error in operator (\S+?):.*?kernel size[^:\n]*?exceeds? input")


def default_num_workers():
    """Worker processes when --num-workers is not given: none on MXNet's synchronous engine (it runs
    on CPU-only machines, where loading in the main process measured as fast: gluondet/runtime.py
    ``configure_engine``); otherwise half the usable CPUs, at least 1, at most 4 (the other half
    runs the network).
    """
    from ..runtime import synchronous_engine, usable_cpus

    if synchronous_engine():
        return 0
    return max(1, min(4, usable_cpus() // 2))


def with_placeholder_row(label):
    """A validation label with at least one row: an image without objects gets one class -1 row,
    which metrics ignore, so batches of such images still stack and pad."""
    label = np.asarray(label, dtype=np.float32).reshape(-1, 6)
    return label if label.shape[0] else np.full((1, 6), -1, dtype=np.float32)


def drop_crowd(label):
    """Rows of an (N, 6) label that are not crowd regions."""
    if label.shape[1] > 5:
        return label[label[:, 5] != FLAG_CROWD]
    return label


class MappedDataset:
    """``dataset[i]`` passed through ``fn(img, label)``; picklable when ``fn`` is (for workers).

    A key may also be ``(seed, i)`` (what EpochBatchSampler yields): Python's and NumPy's generators
    are then seeded with ``seed`` before the transform, so an image's augmentation depends on the
    epoch and the image alone, not on which worker process draws it or on what ran before a resume.
    A key ``(seed, i, epoch, batch)`` (a sampler with ``positions``) goes to a transform that changes
    with the epoch and batch (YOLOv3's input size and mixup): ``fn.item(dataset, index, epoch, batch)``
    reads the item itself, as mixup reads a second one.
    """

    def __init__(self, dataset, fn, indices=None):
        self.dataset = dataset
        self.fn = fn
        self.indices = list(range(len(dataset))) if indices is None else list(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            seed, key, *position = key
            random.seed(seed)
            np.random.seed(seed)
            if position:
                return self.fn.item(self.dataset, self.indices[key], *position)
        return self.fn(*self.dataset[self.indices[key]])


class EpochBatchSampler:
    """Batches of ``(sample seed, index)`` keys in an order drawn from (seed, epoch) alone.

    ``set_epoch(epoch, start)`` chooses the epoch and skips its first ``start`` batches (a run
    resumed mid-epoch). The last incomplete batch is dropped unless it is the only one, so every
    training step sees a full batch (SSD's static graph keeps one shape). With ``positions`` each key
    also says where it is used, ``(sample seed, index, epoch, batch)``; the draws stay the same.
    """

    def __init__(self, num_samples, batch_size, seed, shuffle=True, positions=False):
        self.num_samples, self.batch_size, self.seed, self.shuffle = num_samples, batch_size, seed, shuffle
        self.positions = positions
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch, start=0):
        self.epoch, self.start = int(epoch), int(start)

    def __len__(self):
        return max(1, self.num_samples // self.batch_size) if self.num_samples else 0

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.num_samples) if self.shuffle else np.arange(self.num_samples)
        seeds = rng.integers(0, 2 ** 31 - 1, size=self.num_samples)
        for b in range(self.start, len(self)):
            chunk = order[b * self.batch_size:(b + 1) * self.batch_size]
            where = (self.epoch, b) if self.positions else ()
            yield [(int(seeds[i]), int(i), *where) for i in chunk]


class EpochLoader:
    """A DataLoader over an EpochBatchSampler, with the sampler's ``set_epoch``."""

    def __init__(self, loader, sampler):
        self.loader, self.sampler = loader, sampler

    def set_epoch(self, epoch, start=0):
        self.sampler.set_epoch(epoch, start)

    def __len__(self):
        return len(self.sampler)

    def __iter__(self):
        return iter(self.loader)


# ----------------------------------------------------------------------------- SSD


class ResizeFlip:
    """Light augmentation: resize to the input size and flip half the images horizontally."""

    def __init__(self, width, height, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self._width, self._height, self._mean, self._std = width, height, mean, std

    def __call__(self, img, label):
        import mxnet as mx
        from gluoncv.data.transforms import bbox as tbbox
        from gluoncv.data.transforms import image as timage

        h, w, _ = img.shape
        img = timage.imresize(img, self._width, self._height, interp=1)
        bbox = tbbox.resize(label, (w, h), (self._width, self._height))
        img, flips = timage.random_flip(img, px=0.5)
        bbox = tbbox.flip(bbox, (self._width, self._height), flip_x=flips[0])
        img = mx.nd.image.normalize(mx.nd.image.to_tensor(img), mean=self._mean, std=self._std)
        return img, bbox


class SSDTrainTransform:
    """Augmentation, then SSD training targets against the network's anchors.

    ``augment="ssd"``: GluonCV's SSD augmentation (colour, expand, constrained crop, resize, flip),
    what the zoo models were trained with; ``"flip"``: resize and horizontal flip only, which small
    networks trained from scratch on small objects learn from faster.
    Returns ``(img CHW float32, cls_targets (A,), box_targets (A, 4))`` for the A anchors.
    """

    def __init__(self, width, height, anchors, augment="ssd"):
        from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform

        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}")
        self._augment = (SSDDefaultTrainTransform(width, height, anchors=None) if augment == "ssd"
                         else ResizeFlip(width, height))
        self._anchors = anchors  # (1, A, 4) NDArray on the CPU
        self._target_generator = None

    def __call__(self, img, label):
        import mxnet as mx

        img, bbox = self._augment(img, drop_crowd(np.asarray(label, dtype=np.float32)))
        num_anchors = self._anchors.shape[1]
        if bbox.shape[0] == 0:
            return img, mx.nd.zeros((num_anchors,)), mx.nd.zeros((num_anchors, 4))
        if self._target_generator is None:  # built lazily: each worker process gets its own
            from gluoncv.model_zoo.ssd.target import SSDTargetGenerator

            self._target_generator = SSDTargetGenerator(
                iou_thresh=SSD_IOU_THRESH, stds=SSD_BOX_NORM, negative_mining_ratio=-1)
        gt_boxes = mx.nd.array(bbox[np.newaxis, :, :4])
        gt_ids = mx.nd.array(bbox[np.newaxis, :, 4:5])
        cls_targets, box_targets, _ = self._target_generator(self._anchors, None, gt_boxes, gt_ids)
        return img, cls_targets[0], box_targets[0]


class SSDValTransform:
    """Resize to the square input and normalize; the label keeps all 6 columns (difficult flags)."""

    def __init__(self, width, height):
        from gluoncv.data.transforms.presets.ssd import SSDDefaultValTransform

        self._transform = SSDDefaultValTransform(width, height)

    def __call__(self, img, label):
        return self._transform(img, with_placeholder_row(label))


def ssd_anchors(net, data_shape):
    """The network's anchors for a ``data_shape`` square input, as a (1, A, 4) CPU NDArray."""
    import mxnet as mx
    from mxnet import autograd

    from ..errors import GluondetError

    try:
        with autograd.train_mode():
            _, _, anchors = net(mx.nd.zeros((1, 3, data_shape, data_shape)))
    except (ValueError, mx.base.MXNetError) as e:
        # Only MXNet's shape check means the input is too small (the deeper feature maps shrink
        # below their kernels: VGG SSDs need 300 px or more); anything else is a real error.
        found = KERNEL_EXCEEDS_INPUT.search(str(e))
        if not found:
            raise
        raise GluondetError(f"--data-shape {data_shape} is too small for this network: at layer "
                            f"{found.group(1)} the feature map is smaller than the kernel; use its "
                            f"configured data_shape, or at least 300 for the VGG SSDs") from None
    return anchors.as_in_context(mx.cpu())


# ----------------------------------------------------------------------------- Faster R-CNN
def anchor_grid(net):
    """The side of the square grid of anchors an R-CNN's first RPN level holds (its ``alloc_size``).

    GluonCV's train transforms copy the anchors they make targets for from an ``ashape`` x ``ashape``
    grid, 128 unless told: at an FPN's stride 4 that covers 512 px, and a larger image got fewer
    targets than the RPN has anchors (MXNet's "Reshape: Check failed" at the first step). With the
    network's own grid they cover every image the network covers (GluonCV's scripts pass
    ``net.ashape``; the smaller side here, as the transforms cut a square from it).
    """
    from ..models import rpn_levels

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
    from ..errors import GluondetError
    from ..models import rpn_anchor_count, rpn_proposals, shortest_side

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


def images_with_objects(dataset):
    """Indices of images with at least one non-crowd object (Faster R-CNN cannot sample from none)."""
    keep = []
    for i in range(len(dataset)):
        label = dataset.label(i) if hasattr(dataset, "label") else dataset[i][1]
        if drop_crowd(np.asarray(label).reshape(-1, 6)).shape[0]:
            keep.append(i)
    return keep


# ----------------------------------------------------------------------------- loaders
def epoch_loader(dataset, transform, batchify, batch_size, num_workers, indices=None, seed=0, positions=False):
    """A training loader whose order and augmentation follow (seed, epoch), so a resumed run sees
    the same batches: ``transform`` over ``dataset`` (restricted to ``indices``: a distributed
    worker's shard, or images with objects), batched by ``batchify``. A family's ``train_loader``
    chooses the transform and batchify. ``positions``: the transform changes with the epoch and
    batch, and reads its items itself (``MappedDataset``)."""
    from mxnet.gluon.data import DataLoader

    mapped = MappedDataset(dataset, transform, indices)
    sampler = EpochBatchSampler(len(mapped), batch_size, seed, positions=positions)
    loader = DataLoader(mapped, batch_sampler=sampler, batchify_fn=batchify, num_workers=num_workers)
    return EpochLoader(loader, sampler)


def ordered_loader(dataset, transform, batchify, batch_size, num_workers):
    """A validation loader: ``transform`` over ``dataset`` in its order, the last batch kept."""
    from mxnet.gluon.data import DataLoader

    return DataLoader(MappedDataset(dataset, transform), batch_size, shuffle=False,
                      batchify_fn=batchify, last_batch="keep", num_workers=num_workers)


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
