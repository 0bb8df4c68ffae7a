"""One training step per model family: forward on every device, the losses, and backward.

Each step object knows its loss names, how to move a DataLoader batch onto the devices, and how
to hybridize its network for training and for prediction. The batch arrives in ``cpu_shared``
memory from the DataLoader workers and is copied to each device here.
"""
from mxnet import autograd, gluon


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


class SSDStep:
    """SSD: confidence (softmax with 3:1 hard negatives) + smooth-L1 box loss, GluonCV's SSDMultiBoxLoss.

    The loss is already normalized by the number of positive anchors in the whole batch, so the
    trainer steps with batch size 1.
    """

    family = "ssd"
    loss_names = ("cls_loss", "box_loss")

    def __init__(self):
        from gluoncv.loss import SSDMultiBoxLoss

        self._loss = SSDMultiBoxLoss()

    def num_images(self, batch):
        return batch[0].shape[0]

    def step_batch_size(self, batch):
        return 1

    def __call__(self, net, batch, ctx_list):
        """Forward + backward; returns {loss name: float summed over the batch}."""
        data, cls_targets, box_targets = (
            gluon.utils.split_and_load(part, ctx_list, batch_axis=0, even_split=False) for part in batch)
        with autograd.record():
            cls_preds, box_preds = [], []
            for x in data:
                cls_pred, box_pred, _ = net(x)
                cls_preds.append(cls_pred)
                box_preds.append(box_pred)
            sum_loss, cls_loss, box_loss = self._loss(cls_preds, box_preds, cls_targets, box_targets)
            autograd.backward(sum_loss)
        return {"cls_loss": sum(l.sum().asscalar() for l in cls_loss),
                "box_loss": sum(l.sum().asscalar() for l in box_loss)}


class FasterRCNNStep:
    """Faster R-CNN: RPN objectness + box losses and R-CNN class + box losses, one image per device,
    each normalized by its sampled positives, as in GluonCV's train_faster_rcnn.py."""

    family = "faster_rcnn"
    loss_names = ("rpn_cls_loss", "rpn_box_loss", "rcnn_cls_loss", "rcnn_box_loss")

    def __init__(self):
        from mxnet.gluon.loss import HuberLoss, SigmoidBinaryCrossEntropyLoss, SoftmaxCrossEntropyLoss

        self._rpn_cls = SigmoidBinaryCrossEntropyLoss(from_sigmoid=False)
        self._rpn_box = HuberLoss(rho=1 / 9.0)  # smooth L1
        self._rcnn_cls = SoftmaxCrossEntropyLoss()
        self._rcnn_box = HuberLoss()

    def num_images(self, batch):
        return len(batch[0])

    def step_batch_size(self, batch):
        return len(batch[0])

    def __call__(self, net, batch, ctx_list):
        if len(batch[0]) > len(ctx_list):
            raise ValueError("Faster R-CNN trains one image per device")  # the loader guarantees it
        parts = [[x.as_in_context(ctx) for x, ctx in zip(part, ctx_list)] for part in batch]
        totals = dict.fromkeys(self.loss_names, 0.0)
        losses, records = [], []
        with autograd.record():
            for data, label, rpn_cls_targets, rpn_box_targets, rpn_box_masks in zip(*parts):
                # RPN targets come per feature-map cell (H, W, anchors); the network's RPN outputs
                # are flattened in the same order.
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
                losses.append(rpn_cls.sum() + rpn_box.sum() + rcnn_cls.sum() + rcnn_box.sum())
                records.append((rpn_cls, rpn_box, rcnn_cls, rcnn_box))
            autograd.backward(losses)
        for record in records:  # reported per image, like SSD's per-batch normalized loss
            for name, value in zip(self.loss_names, record):
                totals[name] += value.sum().asscalar() / len(records)
        return totals


STEPS = {"ssd": SSDStep, "faster_rcnn": FasterRCNNStep}


def trainable_params(net, family):
    """Parameters the trainer updates: Faster R-CNN freezes its first stages and BatchNorm (GluonCV)."""
    if family == "faster_rcnn":
        net.collect_params().setattr("grad_req", "null")
        net.collect_train_params().setattr("grad_req", "write")
        return net.collect_train_params()
    return net.collect_params()
