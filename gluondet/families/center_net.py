"""CenterNet (GluonCV's "Objects as Points" on ResNet-v1b, DLA-34 and MobileNetV3 bases, and
gluondet's tiny base): no anchors; a class heatmap, box sizes and centre offsets at stride 4.

Training is GluonCV's ``train_center_net.py``: ``CenterNetDefaultTrainTransform`` (flip, random
scale 0.6-1.4 and centre, colour) makes the targets (heatmap, wh target and mask, centre offset and
mask) in the DataLoader workers; the losses are ``HeatmapFocalLoss(from_logits=True)`` and
``MaskedL1Loss`` for sizes (x ``wh_weight``) and offsets (x ``center_reg_weight``), the family's
options. GluonCV divides each device's losses by that device's positives (and mask sums) and
steps with the number of devices; here every device divides by the whole batch's counts, so the
devices' losses add up to the loss of the whole batch on one device and one step on N devices
is one step on one (the trainer steps with 1, as for SSD). An image without objects has no
positives: its heatmap loss is the negatives' alone (counts are clipped to 1, as GluonCV does).
``augment: flip`` (the tiny demo's) keeps the flip alone, the targets from the same generator.

Prediction: the ``topk`` (100) highest peaks of the heatmap (a peak equals its 3x3 max-pool), as
(ids, scores, boxes) with boxes in input pixels: the decoder multiplies the stride-4 positions,
offsets and sizes by the network's ``scale`` (tested: GluonCV's targets of a box decode to that
box). GluonCV's CenterNet applies no NMS, so ``set_nms`` changes nothing and detect's
``--max-boxes`` cannot exceed ``topk`` (a builder keyword in the model YAML's ``kwargs``).

Every image is first stretched to the ``data_shape`` square, in training, validation, eval and
detect alike. GluonCV's validation transform letterboxes instead (aspect kept, centred on a black
square) and its training transform keeps the aspect too; gluondet's seam for fixed-input families
is a plain resize whose boxes map back by (sx, sy) division (``predict.Detector``, the eval
mosaics, INT8 calibration, the not-learning check), as GluonCV's SSD and YOLOv3 validate. So
training stretches the image to the square before GluonCV's transform (whose random affine then
keeps the stretched aspect), and the network learns the same geometry it is shown at test time;
boxes map back exactly, with no letterbox offset to carry through every consumer. The price: on
photos far from square, objects are seen squeezed (width and height are regressed in the squeezed
frame, so nothing is lost but resolution along the longer side).

Colour jitter: GluonCV's transform draws it from a generator it seeds once (123) and keeps, so an
image's jitter would depend on how many images its worker read before; here that generator is
reseeded for every image from NumPy's stream, which ``data.loader.MappedDataset`` seeds from
(seed, epoch, image), as it seeds Python's, which orders the colour operations: bit-exact resume
holds.
"""
import numpy as np
from mxnet import autograd

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..data.loader import ResizeFlip, drop_crowd, epoch_loader, ordered_loader, with_placeholder_row
from ..errors import GluondetError
from ..runtime import spread
from .base import Family, Step, check_enough_images


# ----------------------------------------------------------------------------- transforms
def _stretch(img, label, width, height):
    """An HxWx3 uint8 image (NDArray or numpy) resized to ``width`` x ``height`` (OpenCV bilinear,
    what ``predict.Detector`` does) and its (N, 6) label's boxes with it."""
    import cv2
    from gluoncv.data.transforms import bbox as tbbox

    pixels = img.asnumpy() if hasattr(img, "asnumpy") else np.asarray(img)
    h, w = pixels.shape[:2]
    if (w, h) != (width, height):
        pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)
        label = tbbox.resize(label, (w, h), (width, height)).astype(np.float32)
    return pixels, label


class CenterNetTrainTransform:
    """Stretch to the input square, then GluonCV's ``CenterNetDefaultTrainTransform`` (or, with
    ``augment="flip"``, a horizontal flip only) and its targets; crowd regions left out.

    Returns ``(img (3, H, W), heatmap (C, H/4, W/4), wh_target (2, H/4, W/4), wh_mask,
    center_reg (2, H/4, W/4), center_reg_mask)``, stacked by the loader.
    """

    def __init__(self, width, height, num_class, scale_factor=4, augment="ssd"):
        from gluoncv.data.transforms.presets.center_net import CenterNetDefaultTrainTransform

        self._size = (int(width), int(height))
        self._augment = augment
        self._scale = int(scale_factor)
        self._gluoncv = CenterNetDefaultTrainTransform(width, height, num_class=num_class,
                                                       scale_factor=scale_factor)

    def __call__(self, img, label):
        import mxnet as mx

        label = drop_crowd(np.asarray(label, dtype=np.float32).reshape(-1, 6))
        pixels, label = _stretch(img, label, *self._size)
        if self._augment == "flip":
            return self._flip_only(pixels, label)
        # GluonCV keeps one colour-jitter generator per transform (seeded 123 once); drawn per image
        # from NumPy's stream here, which MappedDataset seeds per (seed, epoch, image)
        self._gluoncv._data_rng = np.random.RandomState(np.random.randint(0, 2 ** 31 - 1))
        return self._gluoncv(mx.nd.array(pixels, dtype=np.uint8), label)

    def _flip_only(self, pixels, label):
        """Flip half the images; targets from GluonCV's generator on the stride-4 boxes."""
        import mxnet as mx

        width, height = self._size
        img, bbox = ResizeFlip(width, height)(mx.nd.array(pixels, dtype=np.uint8), label)
        bbox = np.asarray(bbox, dtype=np.float32).copy()
        out_w, out_h = width // self._scale, height // self._scale
        bbox[:, 0:4:2] = np.clip(bbox[:, 0:4:2] / self._scale, 0, out_w - 1)
        bbox[:, 1:4:2] = np.clip(bbox[:, 1:4:2] / self._scale, 0, out_h - 1)
        return (img, *self._gluoncv._target_generator(bbox[:, :4], bbox[:, 4:5]))


class CenterNetValTransform:
    """Stretch to the input square (as ``Detector`` does) and normalize; the label keeps all six
    columns, in input pixels; an image without objects gets one class -1 row."""

    def __init__(self, width, height):
        self._size = (int(width), int(height))

    def __call__(self, img, label):
        import mxnet as mx

        pixels, label = _stretch(img, with_placeholder_row(label), *self._size)
        x = (pixels.astype(np.float32) / 255.0 - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD,
                                                                                                 np.float32)
        return mx.nd.array(x.transpose(2, 0, 1)), label


def check_data_shape(net, data_shape):
    """Refuse an input side the network does not map to a heatmap of side ``data_shape / scale``
    (its base halves the input five times: sides that are not multiples of 32 round up), naming
    the next side that works."""
    def fits(side):
        return heatmap_side(net, side) * int(net.scale) == side

    if fits(int(data_shape)):
        return
    better = next((s for s in range(int(data_shape) + 1, int(data_shape) + 257) if fits(s)), None)
    side = heatmap_side(net, data_shape)
    made = f"makes a heatmap of {side} cells of it, not {int(data_shape) / net.scale:g}" if side else "cannot take it"
    raise GluondetError(f"--data-shape {data_shape}: this CenterNet {made} (its base halves the input five times); "
                        f"use a multiple of 32" + (f", such as {better}" if better else ""))


def heatmap_side(net, side):
    """Rows of the heatmap ``net`` makes of a ``side`` x ``side`` input (0: the input is too small)."""
    import mxnet as mx

    with autograd.train_mode():
        heatmap = net(mx.sym.var("data"))[0]
    try:
        return int(heatmap.infer_shape(data=(1, 3, int(side), int(side)))[1][0][2])
    except mx.base.MXNetError:  # a feature map shrank below a kernel, or the up-path sizes disagree
        return 0


# ----------------------------------------------------------------------------- the step
class CenterNetStep(Step):
    """Heatmap focal loss + masked L1 on sizes and offsets, normalized over the whole batch."""

    loss_names = ("heatmap_loss", "wh_loss", "center_reg_loss")

    def __init__(self, backward=autograd.backward, wh_weight=0.1, center_reg_weight=1.0):
        from gluoncv.loss import HeatmapFocalLoss, MaskedL1Loss

        super().__init__(backward)
        self._heatmap = HeatmapFocalLoss(from_logits=True)  # the network's heatmap is after a sigmoid
        self._wh = MaskedL1Loss(weight=wh_weight)
        self._center_reg = MaskedL1Loss(weight=center_reg_weight)

    def step_batch_size(self, batch):
        return 1  # the losses are already means over the whole batch's objects

    def __call__(self, net, batch, ctx_list):
        """Forward + backward; returns {loss name: the whole batch's loss}."""
        self.ensure_prepared(net, ctx_list)
        check_enough_images(self.num_images(batch), ctx_list)
        # GluonCV's losses divide by the counts of the part they see; each device's part is
        # rescaled from its own count to the whole batch's (both clipped to 1 as GluonCV does)
        totals = [max(1.0, float(count.asscalar())) for count in
                  ((batch[1] == 1).sum(), batch[3].sum(), batch[5].sum())]
        parts = [spread(part, ctx_list) for part in batch]
        with autograd.record():
            losses = [self.device_losses(net, part, totals) for part in zip(*parts)]
            self._backward([sum(device) for device in losses])
        return {name: sum(float(device[k].asscalar()) for device in losses)
                for k, name in enumerate(self.loss_names)}

    def device_losses(self, net, part, totals):
        """(heatmap, wh, offset) losses of one device's slice, each over the whole batch's count."""
        from mxnet import nd

        x, heatmap, wh_target, wh_mask, reg_target, reg_mask = part
        heatmap_pred, wh_pred, reg_pred = net(x)
        own = [nd.maximum(count, 1) for count in ((heatmap == 1).sum(), wh_mask.sum(), reg_mask.sum())]
        return (self._heatmap(heatmap_pred, heatmap) * own[0] / totals[0],
                self._wh(wh_pred, wh_target, wh_mask) * own[1] / totals[1],
                self._center_reg(reg_pred, reg_target, reg_mask) * own[2] / totals[2])


# ----------------------------------------------------------------------------- the family
class CenterNet(Family):
    name = "center_net"
    step_class = CenterNetStep
    # train_center_net.py's --wh-weight and --center-reg-weight
    option_defaults = {"wh_weight": 0.1, "center_reg_weight": 1.0}
    # INT8: the decoder finds peaks where the heatmap equals its own 3x3 max-pool, then multiplies
    # them by the heatmap; a quantized pool rounds the maximum, so it never equals the float
    # heatmap again (every score 0, measured: VOC mAP 0.00 against 0.40), and oneDNN's quantized
    # elementwise product takes int8 only (the sigmoid's output is uint8: it fails)
    int8_float_operators = ("Pooling", "elemwise_mul")
    # and the heads (every node of the CenterNet block itself: gluondet's CenterNetDetector and
    # GluonCV's CenterNet name theirs centernet..., their bases do not). The tiny demo at 192 px
    # (export --int8 --verify): heads in INT8, VOC mAP 0.574 against the run's 0.619, 2.3x its
    # speed; heads float, 0.6185, 1.4x (one thread)
    int8_float_layers = ("centernet",)

    def make_step(self, backward=autograd.backward):
        return CenterNetStep(backward, wh_weight=float(self.options["wh_weight"]),
                             center_reg_weight=float(self.options["center_reg_weight"]))

    def trainable_params(self, net):
        """Every parameter; biases without weight decay (train_center_net.py's ``.*bias`` wd_mult 0)."""
        params = net.collect_params()
        for name, param in params.items():
            if name.endswith("bias"):
                param.wd_mult = 0.0
        return params

    def train_loader(self, net, dataset, data_shape, batch_size, num_workers, indices=None, augment="ssd", seed=0,
                     epochs=None):
        """Six stacked arrays per batch (``CenterNetTrainTransform``). ``augment``: ``ssd`` (the
        default) is GluonCV's CenterNet augmentation, ``flip`` a horizontal flip only."""
        from gluoncv.data.batchify import Stack, Tuple

        check_data_shape(net, data_shape)
        transform = CenterNetTrainTransform(data_shape, data_shape, len(net.classes), int(net.scale), augment)
        return epoch_loader(dataset, transform, Tuple(*[Stack() for _ in range(6)]), batch_size, num_workers,
                            indices, seed)

    def val_loader(self, net, dataset, data_shape, batch_size, num_workers):
        """(data, label) batches: stacked images, labels padded with -1 rows, in input pixels."""
        from gluoncv.data.batchify import Pad, Stack, Tuple

        check_data_shape(net, data_shape)
        return ordered_loader(dataset, CenterNetValTransform(data_shape, data_shape), Tuple(Stack(), Pad(pad_val=-1)),
                              batch_size, num_workers)

    def describe_resize(self, data_shape, max_size=None):
        return (f"every image stretched to {data_shape}x{data_shape} (--data-shape {data_shape}), "
                f"objects found as centres on a {int(data_shape) // 4}x{int(data_shape) // 4} heatmap")
