"""SSD (GluonCV's VGG, MobileNet and ResNet SSDs, and gluondet's tiny SSD).

Every image is stretched to a ``data_shape`` square; training targets are matched against the
network's own anchors in the DataLoader workers (``data.loader.SSDTrainTransform``), so the step
only runs the network. The stacked batch is sliced over the devices.
"""
import numpy as np
from mxnet import autograd

from ..data.loader import SSDTrainTransform, SSDValTransform, epoch_loader, ordered_loader, ssd_anchors
from ..runtime import spread
from .base import Family, Step, check_enough_images


class SSDStep(Step):
    """Confidence (softmax with 3:1 hard negatives) + smooth-L1 box loss, GluonCV's SSDMultiBoxLoss.

    The loss is normalized by the number of positive anchors in the whole batch (over all devices),
    so the trainer steps with batch size 1.
    """

    loss_names = ("cls_loss", "box_loss")

    def __init__(self, backward=autograd.backward):
        from gluoncv.loss import SSDMultiBoxLoss

        super().__init__(backward)
        self._loss = SSDMultiBoxLoss()

    def step_batch_size(self, batch):
        return 1

    def loss_normalizer(self, batch):
        return float((batch[1] > 0).sum().asscalar())  # SSDMultiBoxLoss's positive anchors

    def __call__(self, net, batch, ctx_list):
        """Forward + backward; returns {loss name: float summed over the batch}."""
        self.ensure_prepared(net, ctx_list)
        check_enough_images(self.num_images(batch), ctx_list)
        data, cls_targets, box_targets = (spread(part, ctx_list) for part in batch)
        with autograd.record():
            cls_preds, box_preds = [], []
            for x in data:
                cls_pred, box_pred, _ = net(x)
                cls_preds.append(cls_pred)
                box_preds.append(box_pred)
            sum_loss, cls_loss, box_loss = self._loss(cls_preds, box_preds, cls_targets, box_targets)
            self._backward(sum_loss)
        return {"cls_loss": sum(l.sum().asscalar() for l in cls_loss),
                "box_loss": sum(l.sum().asscalar() for l in box_loss)}


class SSD(Family):
    name = "ssd"
    step_class = SSDStep

    def train_loader(self, net, dataset, data_shape, batch_size, num_workers, indices=None, augment="ssd", seed=0,
                     epochs=None):
        """``augment``: ``ssd`` (GluonCV's SSD augmentation) or ``flip`` (see SSDTrainTransform)."""
        from gluoncv.data.batchify import Stack, Tuple

        transform = SSDTrainTransform(data_shape, data_shape, ssd_anchors(net, data_shape), augment)
        return epoch_loader(dataset, transform, Tuple(Stack(), Stack(), Stack()), batch_size, num_workers,
                            indices, seed)

    def val_loader(self, net, dataset, data_shape, batch_size, num_workers):
        """(data, label) batches: stacked images, labels padded with -1 rows."""
        from gluoncv.data.batchify import Pad, Stack, Tuple

        return ordered_loader(dataset, SSDValTransform(data_shape, data_shape), Tuple(Stack(), Pad(pad_val=-1)),
                              batch_size, num_workers)

    def interpolation(self, width, height, new_width, new_height):
        """MXNet's interp=9 (what SSDDefaultValTransform asks for): area when shrinking, cubic when
        enlarging, bilinear when one side grows and the other shrinks."""
        import cv2

        if new_width <= width and new_height <= height:
            return cv2.INTER_AREA
        if new_width >= width and new_height >= height:
            return cv2.INTER_CUBIC
        return cv2.INTER_LINEAR

    def anchor_layers(self, net, x):
        """GluonCV's default boxes of every feature map (centre, size), as corners."""
        layers = []
        for feat, gen in zip(net.features(x), net.anchor_generators):
            a = gen(feat).asnumpy().reshape(-1, 4)  # centre x, centre y, w, h (input pixels)
            corners = np.stack([a[:, 0] - a[:, 2] / 2, a[:, 1] - a[:, 3] / 2,
                                a[:, 0] + a[:, 2] / 2, a[:, 1] + a[:, 3] / 2], axis=1)
            layers.append((feat, corners.astype(np.float32)))
        return layers
