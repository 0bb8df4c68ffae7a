"""Faster R-CNN and Mask R-CNN (GluonCV's C4 and FPN models).

Images keep their aspect ratio (shorter side ``data_shape``, longer at most ``max_size``), so
GluonCV's R-CNNs take one image per forward: a batch goes round-robin over the devices, and a device
that gets several images runs them one after the other in the same step, its gradients accumulated.
Training images without objects are left out (the samplers need a positive). The first backbone
stages and every BatchNorm stay frozen, as in GluonCV's scripts.
"""
from mxnet import autograd

from ..data.loader import epoch_loader, images_with_objects, ordered_loader
from ..eval.instance import InstanceMetric, evaluate_run_instances, validate_instances
from .base import Family, Step, check_enough_images, round_robin
from .rcnn_data import (FasterRCNNTrainTransform, FasterRCNNValTransform, MaskRCNNTrainTransform, MaskRCNNValTransform,
                        check_elongated_images, check_smallest_input, covering_anchor_grid)


class FasterRCNNStep(Step):
    """Faster R-CNN: RPN objectness + box losses and R-CNN class + box losses, each normalized by its
    image's sampled positives, as in GluonCV's train_faster_rcnn.py.

    GluonCV's Faster R-CNN takes one image per forward; the images of a batch go round-robin over
    the devices (image i on device i mod N). A device that gets several images runs them one after
    the other in the same step, its gradients accumulated (``grad_req='add'``, zeroed at the start
    of every step), so ``--batch-size`` may be any number of at least one image per device. The
    trainer steps with the number of images: the update is the mean over the batch's images.
    """

    loss_names = ("rpn_cls_loss", "rpn_box_loss", "rcnn_cls_loss", "rcnn_box_loss")

    def __init__(self, backward=autograd.backward):
        from mxnet.gluon.loss import HuberLoss, SigmoidBinaryCrossEntropyLoss, SoftmaxCrossEntropyLoss

        super().__init__(backward)
        self._rpn_cls = SigmoidBinaryCrossEntropyLoss(from_sigmoid=False)
        self._rpn_box = HuberLoss(rho=1 / 9.0)  # smooth L1
        self._rcnn_cls = SoftmaxCrossEntropyLoss()
        self._rcnn_box = HuberLoss()

    def build_lazy_blocks(self, net):
        # GluonCV builds the R-CNN target generator (its box encoder holds means and stds) at the
        # first training forward, on the default device only; reading the property builds it now.
        return net.target_generator

    def num_images(self, batch):
        return len(batch[0])

    def __call__(self, net, batch, ctx_list):
        """Forward + backward of every image; returns {loss name: mean over the batch's images}."""
        self.ensure_prepared(net, ctx_list)
        count = self.num_images(batch)
        check_enough_images(count, ctx_list)
        rounds = round_robin(count, ctx_list)
        _start_gradients(net, accumulate=len(rounds) > 1)
        losses = []
        for placed in rounds:  # read back only at the end: the devices never wait for Python
            with autograd.record():
                images = [self.image_losses(net, [part[i].as_in_context(ctx) for part in batch])
                          for i, ctx in placed]
                self._backward([sum(l.sum() for l in image.values()) for image in images])
            losses += images
        # reported per image, like SSD's per-batch normalized loss
        return {name: sum(image[name].sum().asscalar() for image in losses) / count for name in self.loss_names}

    def image_losses(self, net, parts):
        """{loss name: NDArray} of one image on one device; ``parts`` are the loader's five arrays.
        (A mask family adds its mask loss by extending this.)"""
        data, label, rpn_cls_targets, rpn_box_targets, rpn_box_masks = parts
        (cls_pred, box_pred, _, _, _, rpn_score, rpn_box, _, cls_targets, box_targets,
         box_masks, _) = net(data, label[:, :, :4], label[:, :, 4:5])
        return dict(zip(self.loss_names, self.detection_losses(
            (rpn_score, rpn_box), (rpn_cls_targets, rpn_box_targets, rpn_box_masks),
            (cls_pred, box_pred), (cls_targets, box_targets, box_masks))))

    def detection_losses(self, rpn_out, rpn_targets, rcnn_out, rcnn_targets):
        """(rpn_cls, rpn_box, rcnn_cls, rcnn_box) of one image, each normalized by its sampled positives.

        RPN targets come per feature-map cell (H, W, anchors); the network's RPN outputs are
        flattened in the same order."""
        rpn_score, rpn_box = rpn_out
        rpn_cls_targets, rpn_box_targets, rpn_box_masks = rpn_targets
        cls_pred, box_pred = rcnn_out
        cls_targets, box_targets, box_masks = rcnn_targets
        rpn_cls_targets = rpn_cls_targets.reshape((1, -1))
        rpn_box_targets = rpn_box_targets.reshape((1, -1, 4))
        rpn_box_masks = rpn_box_masks.reshape((1, -1, 4))
        rpn_score = rpn_score.squeeze(axis=-1)
        num_rpn_pos = (rpn_cls_targets >= 0).sum()
        rpn_cls = self._rpn_cls(rpn_score, rpn_cls_targets, rpn_cls_targets >= 0) \
            * rpn_cls_targets.size / num_rpn_pos
        rpn_box = self._rpn_box(rpn_box, rpn_box_targets, rpn_box_masks) * rpn_box.size / num_rpn_pos
        num_rcnn_pos = (cls_targets >= 0).sum()
        rcnn_cls = self._rcnn_cls(cls_pred, cls_targets, cls_targets.expand_dims(-1) >= 0) \
            * cls_targets.size / num_rcnn_pos
        rcnn_box = self._rcnn_box(box_pred, box_targets, box_masks) * box_pred.size / num_rcnn_pos
        return rpn_cls, rpn_box, rcnn_cls, rcnn_box


def _start_gradients(net, accumulate):
    """Before a step's first backward: with ``accumulate`` (several backward passes per device),
    trained parameters switch to ``grad_req='add'``; once they add, they are zeroed every step."""
    params = [p for p in net.collect_params().values() if p.grad_req != "null"]
    if accumulate:
        for param in params:
            if param.grad_req == "write":
                param.grad_req = "add"
    if any(p.grad_req == "add" for p in params):
        for param in params:
            param.zero_grad()


class MaskRCNNStep(FasterRCNNStep):
    """Mask R-CNN: Faster R-CNN's RPN and R-CNN losses plus a per-pixel sigmoid mask loss on the
    positive RoIs the network keeps, normalized by the target pixels, as GluonCV's
    train_mask_rcnn.py does. Devices, rounds and gradient accumulation as FasterRCNNStep.

    Batches come from the family's ``train_loader``: six lists of one (1, ...) array per image,
    the RPN targets of all FPN levels already flattened into one list of anchors.
    """

    loss_names = FasterRCNNStep.loss_names + ("mask_loss",)

    def __init__(self, backward=autograd.backward):
        from mxnet.gluon.loss import SigmoidBinaryCrossEntropyLoss

        super().__init__(backward)
        self._mask = SigmoidBinaryCrossEntropyLoss()

    def image_losses(self, net, parts):
        """{loss name: NDArray} of one image; ``parts``: data, label, masks and the three RPN targets."""
        from mxnet import nd

        data, label, gt_masks, rpn_cls_targets, rpn_box_targets, rpn_box_masks = parts
        (cls_pred, box_pred, mask_pred, rois, _, matches, rpn_score, rpn_box, _, cls_targets, box_targets,
         box_masks, indices) = net(data, label[:, :, :4], label[:, :, 4:5])
        losses = self.detection_losses((rpn_score, rpn_box), (rpn_cls_targets, rpn_box_targets, rpn_box_masks),
                                       (cls_pred, box_pred), (cls_targets, box_targets, box_masks))
        # mask targets for the positive RoIs the network kept (``indices``); one image per forward
        rois = nd.take(rois[0], indices[0]).expand_dims(0)
        mask_cls = nd.take(cls_targets[0], indices[0]).expand_dims(0)
        matches = nd.take(matches[0], indices[0]).expand_dims(0)
        mask_targets, mask_weights = net.mask_target(rois, gt_masks, matches, mask_cls)
        mask = self._mask(mask_pred, mask_targets, mask_weights) * mask_targets.size / mask_weights.sum()
        return dict(zip(self.loss_names, (*losses, mask)))


class FasterRCNN(Family):
    name = "faster_rcnn"
    step_class = FasterRCNNStep
    fixed_input = False
    needs_objects = True
    ignore_extra_weights = True  # saved weights hold the training target generator's constants
    per_image_forward = True
    int8_refusal = ("INT8 export supports SSD models; this run is an R-CNN "
                    "(its proposal and ROI operators have no INT8 kernels)")

    def builder_kwargs(self, key, data_shape):
        """data_shape is the shorter side (GluonCV's ``short``); the longer one at most 5/3 of it."""
        return {"short": int(data_shape), "max_size": int(round(int(data_shape) * 5 / 3))} if data_shape else {}

    def after_build(self, net, key, rebuild):
        """GluonCV's anchor grid (the zoo's, kept wherever it suffices: its weights hold the anchors
        as a constant) stops short of the largest input: built again with one that reaches it.
        Then a data shape with fewer anchors than the RPN keeps is refused."""

        grid = covering_anchor_grid(net)
        if grid:
            net = rebuild(alloc_size=grid)
        check_smallest_input(net, key)
        return net

    def trainable_params(self, net):
        """GluonCV's trainable pattern (first stages and BatchNorm frozen); anchors never learn."""
        from mxnet.gluon.parameter import Constant

        net.collect_params().setattr("grad_req", "null")
        train = net.collect_train_params()
        for param in train.values():
            if not isinstance(param, Constant):  # anchors match the pattern, but never learn
                param.grad_req = "write"
        return train

    def train_indices(self, dataset):
        return images_with_objects(dataset)

    # (transform, arrays per image) of the loaders: data, label and the three RPN targets in
    # training; data, label and im_scale in validation
    train_transform, train_arrays = FasterRCNNTrainTransform, 5
    val_transform, val_arrays = FasterRCNNValTransform, 3

    def train_loader(self, net, dataset, data_shape, batch_size, num_workers, indices=None, augment="ssd", seed=0,
                     epochs=None):
        """Lists of one image per item (GluonCV's train transform, RPN targets in the workers)."""
        from gluoncv.data.batchify import Append, Tuple

        check_elongated_images(net, dataset, indices)
        return epoch_loader(dataset, self.train_transform(net), Tuple(*[Append() for _ in range(self.train_arrays)]),
                            batch_size, num_workers, indices, seed)

    def val_loader(self, net, dataset, data_shape, batch_size, num_workers):
        """Lists of one image each, in dataset order."""
        from gluoncv.data.batchify import Append, Tuple

        check_elongated_images(net, dataset, training=False)
        return ordered_loader(dataset, self.val_transform(net), Tuple(*[Append() for _ in range(self.val_arrays)]),
                              batch_size, num_workers)

    def eval_batch_size(self, ctx_list):
        return len(ctx_list)  # one image per device, as GluonCV evaluates it

    def hybridize_for_prediction(self, net):
        net.hybridize(static_alloc=True)  # shapes vary with the images

    def original_scale(self, data_shape, image_size):
        return 1.0, 1.0  # evaluate() already scaled the boxes back by im_scale

    def input_size(self, width, height, data_shape, max_size=None):
        """Shorter side ``data_shape``, longer at most ``max_size`` (GluonCV's ``resize_short_within``)."""
        scale = float(data_shape) / min(width, height)
        if max_size:
            scale = min(scale, float(max_size) / max(width, height))
        return int(round(width * scale)), int(round(height * scale))

    def image_input_size(self, info, width, height):
        return self.input_size(width, height, info.short, info.max_size)

    def describe_resize(self, data_shape, max_size=None):
        return (f"the shorter image side resized to {data_shape} (--data-shape {data_shape}"
                + (f", the longer at most {max_size})" if max_size else ")"))

    def anchor_layers(self, net, x):
        """The RPN's anchors of every FPN level (already corners, input pixels)."""
        import numpy as np

        feats = net.features(x)
        feats = feats if isinstance(feats, (list, tuple)) else [feats]
        gens = net.rpn.anchor_generator
        gens = list(gens) if getattr(net.rpn, "_multi_level", False) else [gens]
        return [(feat, gen(feat).asnumpy().reshape(-1, 4).astype(np.float32)) for feat, gen in zip(feats, gens)]

    def example_shape(self, data_shape, short=None, max_size=None):
        side = int(short or data_shape)
        return (1, 3, side, side)

    def onnx_dynamic_shape(self, shape):
        return (1, 3, None, None)  # one image per forward, any size


class MaskRCNN(FasterRCNN):
    """Faster R-CNN plus a mask head: every object's mask is read with its box, and validation
    scores both boxes and masks (COCO's segm and bbox AP)."""

    name = "mask_rcnn"
    step_class = MaskRCNNStep
    masks = True

    # data, label, masks and the three RPN targets; data, label, im_scale and masks
    train_transform, train_arrays = MaskRCNNTrainTransform, 6
    val_transform, val_arrays = MaskRCNNValTransform, 4

    def new_metric(self, metric_name, classes, iou=0.5):
        """Boxes and masks together: the analysis reads its boxes, the mosaics its masks."""

        return InstanceMetric(classes)

    def validate(self, net, loader, ctx_list, metric, metric_name, classes, progress=True):
        return validate_instances(net, loader, ctx_list, metric_name, classes, progress=progress, metric=metric)

    def evaluate(self, net, loader, ctx_list, metric, metric_name, classes, dataset, dataset_cfg, split,
                 coco_results=None, progress=True):

        return evaluate_run_instances(net, loader, ctx_list, metric_name, classes, dataset, dataset_cfg, split,
                                      coco_results, progress=progress, metric=metric)
