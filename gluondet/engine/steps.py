"""One training step per model family: forward on every device, the losses, and backward.

Each step object knows its loss names, how to spread a DataLoader batch over the devices, and how
to hybridize its network for training and for prediction. The batch arrives in ``cpu_shared``
memory from the DataLoader workers and is copied to each device here.

Several devices are the general case, one device the special one: ``prepare(net, ctx_list)`` puts
every parameter and constant (anchors, box-encoder means and stds, including those GluonCV creates
only at the first training forward) on every device; a batch is spread over the devices (SSD: a
slice of the stacked batch each, sizes differing by at most one; Faster R-CNN: image i on device
i mod N, one image per device per forward, with gradients accumulated when a device gets several).
The gradients of all devices are summed by the gluon.Trainer, which the caller steps with
``step_batch_size(batch)``, so one step on N devices updates the weights as one step with the whole
batch on one device does.
"""
from mxnet import autograd

from ..errors import GluondetError
from ..runtime import spread


def hybridize_for_training(net, family):
    """(Re)hybridize for the training graph.

    A hybridized GluonCV detector keeps the graph it traced first; after validation (predict mode,
    ``set_nms``) the training step would silently run the predict graph. ``hybridize`` clears the
    cached graph, so it is called again before every training epoch.
    """
    if family == "ssd":
        net.hybridize(static_alloc=True, static_shape=True)
    else:  # Faster R-CNN images keep their aspect ratio: shapes vary
        net.hybridize(static_alloc=True)


def hybridize_for_prediction(net, family):
    """Predict-mode graph with GluonCV's evaluation NMS settings."""
    if family == "ssd":
        net.set_nms(nms_thresh=0.45, nms_topk=400, post_nms=100)
        net.hybridize(static_alloc=True, static_shape=True)
    else:
        net.hybridize(static_alloc=True)


class TooFewImages(GluondetError):
    """A batch with fewer images than devices: a device would have nothing to compute its gradient on."""


def place_on(net, ctx_list):
    """Every parameter and constant of ``net`` on every context of ``ctx_list`` (a no-op where they are)."""
    params = net.collect_params()
    for param in params.values():
        if param.list_ctx() != list(ctx_list):
            param.reset_ctx(ctx_list)
    return net


def round_robin(count, ctx_list):
    """Rounds of (item index, context): item i goes to device i mod N, N items per round."""
    n = len(ctx_list)
    return [[(i, ctx_list[i % n]) for i in range(start, min(count, start + n))] for start in range(0, count, n)]


def _check_enough_images(count, ctx_list):
    if count < len(ctx_list):
        raise TooFewImages(
            f"a training batch of {count} image(s) for {len(ctx_list)} devices: every device needs at "
            f"least one; use --batch-size {len(ctx_list)} or more, and at least as many training images")


class Step:
    """What the training loop needs of a family: ``prepare`` once per device list, then ``__call__``
    on each batch (forward and backward on every device; returns {loss name: float}), then
    ``trainer.step(step.step_batch_size(batch))``."""

    family = None
    loss_names = ()

    def __init__(self, backward=autograd.backward):
        self._prepared = None  # (id(net), tuple(ctx_list)) last prepared for
        self._backward = backward  # engine.amp.Precision.backward scales the loss for float16

    def prepare(self, net, ctx_list):
        """Put the network, and the constants it creates lazily, on every device of ``ctx_list``."""
        self.build_lazy_blocks(net)  # on the default device; placed with the rest below
        place_on(net, ctx_list)
        self._prepared = (id(net), tuple(ctx_list))
        return net

    def build_lazy_blocks(self, net):
        """Build now the blocks a network would otherwise create at its first training forward,
        on one device only (a family with such blocks says which); none here."""

    def _ensure_prepared(self, net, ctx_list):
        if self._prepared != (id(net), tuple(ctx_list)):
            self.prepare(net, ctx_list)

    def num_images(self, batch):
        raise NotImplementedError

    def step_batch_size(self, batch):
        raise NotImplementedError


class SSDStep(Step):
    """SSD: confidence (softmax with 3:1 hard negatives) + smooth-L1 box loss, GluonCV's SSDMultiBoxLoss.

    The stacked batch is sliced over the devices. The loss is normalized by the number of positive
    anchors in the whole batch (over all devices), so the trainer steps with batch size 1.
    """

    family = "ssd"
    loss_names = ("cls_loss", "box_loss")

    def __init__(self, backward=autograd.backward):
        from gluoncv.loss import SSDMultiBoxLoss

        super().__init__(backward)
        self._loss = SSDMultiBoxLoss()

    def num_images(self, batch):
        return batch[0].shape[0]

    def step_batch_size(self, batch):
        return 1

    def __call__(self, net, batch, ctx_list):
        """Forward + backward; returns {loss name: float summed over the batch}."""
        self._ensure_prepared(net, ctx_list)
        _check_enough_images(self.num_images(batch), ctx_list)
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


class FasterRCNNStep(Step):
    """Faster R-CNN: RPN objectness + box losses and R-CNN class + box losses, each normalized by its
    image's sampled positives, as in GluonCV's train_faster_rcnn.py.

    GluonCV's Faster R-CNN takes one image per forward; the images of a batch go round-robin over
    the devices (image i on device i mod N). A device that gets several images runs them one after
    the other in the same step, its gradients accumulated (``grad_req='add'``, zeroed at the start
    of every step), so ``--batch-size`` may be any number of at least one image per device. The
    trainer steps with the number of images: the update is the mean over the batch's images.
    """

    family = "faster_rcnn"
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

    def step_batch_size(self, batch):
        return len(batch[0])

    def __call__(self, net, batch, ctx_list):
        """Forward + backward of every image; returns {loss name: mean over the batch's images}."""
        self._ensure_prepared(net, ctx_list)
        count = self.num_images(batch)
        _check_enough_images(count, ctx_list)
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
        # RPN targets come per feature-map cell (H, W, anchors); the network's RPN outputs are
        # flattened in the same order.
        rpn_cls_targets = rpn_cls_targets.reshape((1, -1))
        rpn_box_targets = rpn_box_targets.reshape((1, -1, 4))
        rpn_box_masks = rpn_box_masks.reshape((1, -1, 4))
        gt_label = label[:, :, 4:5]
        gt_box = label[:, :, :4]
        (cls_pred, box_pred, _, _, _, rpn_score, rpn_box, _, cls_targets, box_targets,
         box_masks, _) = net(data, gt_box, gt_label)
        rpn_score = rpn_score.squeeze(axis=-1)
        num_rpn_pos = (rpn_cls_targets >= 0).sum()
        rpn_cls = self._rpn_cls(rpn_score, rpn_cls_targets, rpn_cls_targets >= 0) \
            * rpn_cls_targets.size / num_rpn_pos
        rpn_box = self._rpn_box(rpn_box, rpn_box_targets, rpn_box_masks) * rpn_box.size / num_rpn_pos
        num_rcnn_pos = (cls_targets >= 0).sum()
        rcnn_cls = self._rcnn_cls(cls_pred, cls_targets, cls_targets.expand_dims(-1) >= 0) \
            * cls_targets.size / num_rcnn_pos
        rcnn_box = self._rcnn_box(box_pred, box_targets, box_masks) * box_pred.size / num_rcnn_pos
        return dict(zip(self.loss_names, (rpn_cls, rpn_box, rcnn_cls, rcnn_box)))


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

    Batches come from ``data.loader.mask_train_loader``: six lists of one (1, ...) array per image,
    the RPN targets of all FPN levels already flattened into one list of anchors.
    """

    family = "mask_rcnn"
    loss_names = FasterRCNNStep.loss_names + ("mask_loss",)

    def __init__(self, backward=autograd.backward):
        from mxnet.gluon.loss import SigmoidBinaryCrossEntropyLoss

        super().__init__(backward)
        self._mask = SigmoidBinaryCrossEntropyLoss()

    def image_losses(self, net, parts):
        """{loss name: NDArray} of one image; ``parts``: data, label, masks and the three RPN targets."""
        from mxnet import nd

        data, label, gt_masks, rpn_cls_targets, rpn_box_targets, rpn_box_masks = parts
        rpn_cls_targets = rpn_cls_targets.reshape((1, -1))
        rpn_box_targets = rpn_box_targets.reshape((1, -1, 4))
        rpn_box_masks = rpn_box_masks.reshape((1, -1, 4))
        (cls_pred, box_pred, mask_pred, rois, _, matches, rpn_score, rpn_box, _, cls_targets, box_targets,
         box_masks, indices) = net(data, label[:, :, :4], label[:, :, 4:5])
        rpn_score = rpn_score.squeeze(axis=-1)
        num_rpn = (rpn_cls_targets >= 0).sum()
        rpn_cls = self._rpn_cls(rpn_score, rpn_cls_targets, rpn_cls_targets >= 0) * rpn_cls_targets.size / num_rpn
        rpn_box = self._rpn_box(rpn_box, rpn_box_targets, rpn_box_masks) * rpn_box.size / num_rpn
        num_rcnn = (cls_targets >= 0).sum()
        rcnn_cls = self._rcnn_cls(cls_pred, cls_targets, cls_targets.expand_dims(-1) >= 0) \
            * cls_targets.size / num_rcnn
        rcnn_box = self._rcnn_box(box_pred, box_targets, box_masks) * box_pred.size / num_rcnn
        # mask targets for the positive RoIs the network kept (``indices``); one image per forward
        rois = nd.take(rois[0], indices[0]).expand_dims(0)
        mask_cls = nd.take(cls_targets[0], indices[0]).expand_dims(0)
        matches = nd.take(matches[0], indices[0]).expand_dims(0)
        mask_targets, mask_weights = net.mask_target(rois, gt_masks, matches, mask_cls)
        mask = self._mask(mask_pred, mask_targets, mask_weights) * mask_targets.size / mask_weights.sum()
        return dict(zip(self.loss_names, (rpn_cls, rpn_box, rcnn_cls, rcnn_box, mask)))


STEPS = {"ssd": SSDStep, "faster_rcnn": FasterRCNNStep, "mask_rcnn": MaskRCNNStep}


def trainable_params(net, family):
    """Parameters the trainer updates: Faster R-CNN freezes its first stages and BatchNorm (GluonCV)."""
    if family in ("faster_rcnn", "mask_rcnn"):
        from mxnet.gluon.parameter import Constant

        net.collect_params().setattr("grad_req", "null")
        train = net.collect_train_params()
        for param in train.values():
            if not isinstance(param, Constant):  # anchors match the pattern, but never learn
                param.grad_req = "write"
        return train
    return net.collect_params()
