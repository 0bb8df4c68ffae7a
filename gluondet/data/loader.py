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
from ..errors import GluondetError
from ..runtime import synchronous_engine, usable_cpus
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
        from gluoncv.data.transforms import bbox as tbbox, image as timage

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
