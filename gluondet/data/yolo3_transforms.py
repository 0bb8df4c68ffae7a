"""YOLOv3 training and validation transforms: GluonCV's, with targets, mixup and input sizes keyed
by (seed, epoch, batch).

Training follows GluonCV's ``train_yolo3.py``: ``MixupDetection`` (a Beta(1.5, 1.5) blend with a
second image) over the dataset, ``YOLO3DefaultTrainTransform``'s augmentation (``--augment ssd``;
``flip``: resize and flip only, as for SSD), and the network-independent targets of GluonCV's
``YOLOV3PrefetchTargetGenerator`` made here, in the loader, on the CPU. Differences, each for a
measured or stated reason:

- GluonCV's transform runs the network once per input size to learn its anchors, offsets and
  feature-map sizes (moving its parameters to the CPU and back, and on a hybridized network tracing
  a graph the training step would reuse). Here they come from the network's constants and from
  shape inference on its symbol: the network is never run, and the targets are the same arrays.
- The targets are computed in numpy (``prefetch_targets``), the generator's arithmetic step by
  step: its NDArray version took 17 ms an image, as long as the tiny YOLOv3's whole training step.
- An image without objects gets all-background targets through one ``-1`` box, which the target
  generator skips as it skips the batch's padding (GluonCV's transform fails on an empty label).
- Mixup is switched off for the last ``no_mixup_epochs`` epochs by the epoch each key carries
  (GluonCV sets it on the dataset, which its loader workers copied when they started). The input
  size of each batch is drawn from (seed, epoch, batch // every) (GluonCV draws it from the global
  NumPy stream), so a resumed run sees the same sizes.
"""
import numpy as np

from ..constants import AUGMENTATIONS, IMAGENET_MEAN, IMAGENET_STD
from .loader import ResizeFlip, drop_crowd, with_placeholder_row

MIXUP_BETA = (1.5, 1.5)  # train_yolo3.py: set_mixup(np.random.beta, 1.5, 1.5)
SHAPE_STEP = 32  # train_yolo3.py draws its sizes from x * 32 for x in 10..19


def shape_choices(low, high, step=SHAPE_STEP):
    """The input sides random shapes draw from: ``low`` to ``high`` by ``step``."""
    return list(range(int(low), int(high) + 1, step))


def shape_at(seed, epoch, batch, sizes, every):
    """The input side of training batch ``batch`` of ``epoch``: one of ``sizes``, the same for the
    ``every`` batches of a group, drawn from (seed, epoch, batch // every) alone."""
    if len(sizes) == 1:
        return int(sizes[0])
    rng = np.random.default_rng([int(seed), int(epoch), int(batch) // int(every)])
    return int(sizes[rng.integers(len(sizes))])


def target_geometry(net, sides):
    """{side: what YOLOv3's prefetch target generator needs of ``net`` at a ``side`` square input}:
    per output layer (deepest first, as the network gives them) its anchors (1, 1, A, 2), the cell
    offsets of its feature map (1, H*W, 1, 2) and the feature map's shape (1, 1, H, W), numpy."""
    import mxnet as mx
    from mxnet import autograd

    with autograd.train_mode():  # the training branch returns the layers' anchors and feature maps
        _, _, _, feat_maps, *_ = net(mx.sym.var("data"))
    constants = [(out.anchors.list_data()[0].asnumpy(), out.offsets.list_data()[0].asnumpy())
                 for out in net.yolo_outputs]
    geometry = {}
    for side in sides:
        layers = []
        for (anchors, offsets), feat in zip(constants, feat_maps):
            shape = tuple(feat.infer_shape(data=(1, 3, side, side))[1][0])
            layers.append((anchors, offsets[:, :, :shape[2], :shape[3], :].reshape((1, -1, 1, 2)), shape))
        geometry[int(side)] = layers
    return geometry


class YOLO3TrainTransform:
    """``item(dataset, index, epoch, batch)``: image ``index`` of ``dataset`` (blended with another
    while mixup is on), augmented at the batch's input size, with its training targets.

    Returns GluonCV's seven arrays: image (3, S, S), objectness (N, 1), centre (N, 2) and scale
    (N, 2) targets, their weights (N, 2), class targets (N, classes), and the boxes (M, 4) the
    network matches its predictions against (one -1 row for an image without objects).
    Holds only numpy arrays and numbers, so it pickles into loader workers.
    """

    def __init__(self, net, sizes, every=10, seed=0, mixup=False, mixup_epochs=None, augment="ssd",
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}")
        self.sizes, self.every, self.seed = [int(s) for s in sizes], int(every), int(seed)
        self.augment = augment
        self.mixup = bool(mixup)
        self.mixup_epochs = mixup_epochs  # mixup in epochs before this one (None: every epoch)
        self.mean, self.std = mean, std
        self.num_class = len(net.classes)
        self.geometry = target_geometry(net, self.sizes)

    def size_at(self, epoch, batch):
        return shape_at(self.seed, epoch, batch, self.sizes, self.every)

    def mixing(self, epoch):
        return self.mixup and (self.mixup_epochs is None or epoch < self.mixup_epochs)

    def item(self, dataset, index, epoch, batch):
        from gluoncv.data.mixup.detection import MixupDetection

        items = _WithoutCrowd(dataset)
        if self.mixup:  # GluonCV's MixupDetection; in the epochs without mixing its ratio is 1
            items = MixupDetection(items, np.random.beta if self.mixing(epoch) else None, *MIXUP_BETA)
        img, label = items[index]
        return self(img, label, self.size_at(epoch, batch))

    def __call__(self, img, label, size):
        """The augmented image at a ``size`` square and its targets."""
        from gluoncv.data.transforms.presets.yolo import YOLO3DefaultTrainTransform

        if self.augment == "ssd":  # GluonCV's colour, expand, crop, resize (random method), flip
            augment = YOLO3DefaultTrainTransform(size, size, net=None, mean=self.mean, std=self.std,
                                                 mixup=self.mixup)
        else:
            augment = ResizeFlip(size, size, mean=self.mean, std=self.std)
        img, bbox = augment(img, label)
        return (img, *self.targets(np.asarray(bbox, dtype=np.float32), size))

    def targets(self, bbox, size):
        """The prefetched targets of the (M, 5+) ``bbox`` at a ``size`` square input, and its boxes
        (numpy: the batchify makes one NDArray of each for the whole batch)."""
        if not len(bbox):  # no objects: one -1 box, skipped like the batch's padding
            bbox = np.full((1, bbox.shape[1] if bbox.ndim == 2 else 6), -1, dtype=np.float32)
        mixratio = bbox[:, -1] if self.mixup else None
        return (*prefetch_targets(bbox, self.geometry[size], size, self.num_class, mixratio),
                np.ascontiguousarray(bbox[:, :4]))


def prefetch_targets(bbox, layers, size, num_class, mixratio=None):
    """GluonCV's ``YOLOV3PrefetchTargetGenerator`` for one image, in numpy: the same float32
    arithmetic, step by step, without its hundreds of small NDArray operations (17 ms an image on
    the tiny YOLOv3 against well under one here; held equal to it by tests/unit/test_yolo3.py).

    ``layers``: ``target_geometry``'s, deepest first. Each object (until the first invalid, -1
    box: the padding) goes to the anchor whose shape, both centred, overlaps it most, at the cell of
    its layer that holds its centre; later objects overwrite earlier ones in the same place. Returns
    objectness (N, 1) (1, or the object's mixup share), centre (N, 2) and log-scale (N, 2) targets,
    their weights (N, 2) (2 - the object's share of the image), class targets (N, classes) (one-hot
    at objects, -1 elsewhere), N = every layer's cells x its anchors, layer by layer.
    """
    f32 = np.float32
    anchors = np.concatenate([a.reshape(-1, 2) for a, _, _ in layers]).astype(f32)
    grids = [(shape[2], shape[3]) for _, _, shape in layers]
    anchor_start = np.cumsum([0] + [a.size // 2 for a, _, _ in layers])
    cell_start = np.cumsum([0] + [h * w for h, w in grids])
    center = np.zeros((cell_start[-1], anchor_start[-1], 2), f32)
    scale, weight = np.zeros_like(center), np.zeros_like(center)
    objectness = np.zeros(center.shape[:2] + (1,), f32)
    classes = np.full(center.shape[:2] + (num_class,), -1, f32)
    boxes = bbox[:, :4].astype(f32)
    gw, gh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    gx, gy = boxes[:, 0] + gw * f32(0.5), boxes[:, 1] + gh * f32(0.5)
    # IoU of each anchor with each object, both centred at 0 (GluonCV's box_iou of the shifted boxes)
    inter = np.minimum(anchors[:, None, 0], gw) * np.minimum(anchors[:, None, 1], gh)
    union = anchors[:, None, 0] * anchors[:, None, 1] + gw * gh - inter
    matches = np.argmax(inter / union, axis=0)
    for m in range(len(boxes)):
        if not (boxes[m] >= 0).all():
            break
        match = int(matches[m])
        layer = int(np.nonzero(anchor_start[1:] > match)[0][0])
        rows, cols = grids[layer]
        loc_x, loc_y = int(gx[m] / size * cols), int(gy[m] / size * rows)
        index = cell_start[layer] + loc_y * cols + loc_x
        center[index, match] = (gx[m] / size * cols - loc_x, gy[m] / size * rows - loc_y)
        scale[index, match] = (np.log(max(gw[m], 1) / anchors[match, 0]), np.log(max(gh[m], 1) / anchors[match, 1]))
        weight[index, match] = 2.0 - gw[m] * gh[m] / size / size
        objectness[index, match] = mixratio[m] if mixratio is not None else 1
        classes[index, match] = 0
        classes[index, match, int(bbox[m, 4])] = 1
    return tuple(np.concatenate([x[cell_start[i]:cell_start[i + 1], anchor_start[i]:anchor_start[i + 1]]
                                 .reshape(-1, x.shape[-1]) for i in range(len(layers))])
                 for x in (objectness, center, scale, weight, classes))


class _WithoutCrowd:
    """A dataset's items without crowd regions (never training targets), labels as float32."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        img, label = self.dataset[i]
        return img, drop_crowd(np.asarray(label, dtype=np.float32).reshape(-1, 6))


class YOLO3ValTransform:
    """GluonCV's ``YOLO3DefaultValTransform`` (stretch to the square, MXNet's interp=9) with the
    label's six columns kept (difficult flags) and one class -1 row for an image without objects."""

    def __init__(self, width, height, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        from gluoncv.data.transforms.presets.yolo import YOLO3DefaultValTransform

        self._transform = YOLO3DefaultValTransform(width, height, mean=mean, std=std)

    def __call__(self, img, label):
        return self._transform(img, with_placeholder_row(label))
