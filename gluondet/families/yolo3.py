"""YOLOv3 (GluonCV's Darknet-53 and MobileNet YOLOv3s, and gluondet's tiny YOLOv3).

Trained as GluonCV's ``scripts/detection/yolo/train_yolo3.py`` trains it: every image stretched to
a square, the targets that do not depend on the network's predictions made in the loader
(``data.yolo3_transforms``), and the network, called in ``autograd.record()`` as
``net(x, gt_boxes, *targets)``, returns its four losses (objectness, box centre, box scale, class)
per image. GluonCV's tricks are the family's options (the model YAML's ``options:``, or
``gluondet train --model-option KEY=VALUE``):

- ``mixup``: blend image pairs (GluonCV's MixupDetection, Beta(1.5, 1.5)); ``no_mixup_epochs``:
  not in the run's last N epochs;
- ``label_smooth``: GluonCV's label smoothing of the class targets (its target merger's switch);
- ``no_wd``: no weight decay on biases and BatchNorm gamma and beta;
- ``random_shape``: a new input side every ``random_shape_every`` batches, drawn from
  ``random_shape_range`` (low, high) by 32, from (seed, epoch, batch) alone; validation, eval,
  detect and export use the model's ``data_shape``.

The stacked batch is sliced over the devices; each image's losses depend on that image alone, so
the trainer steps with the number of images.
"""
from mxnet import autograd

from ..data.loader import epoch_loader, ordered_loader
from ..data.yolo3_transforms import YOLO3TrainTransform, YOLO3ValTransform, shape_choices, target_geometry
from ..errors import GluondetError
from ..runtime import spread
from .base import Family, Step, check_enough_images
from .ssd import SSD

NO_WD_PATTERN = ".*beta|.*gamma|.*bias"  # train_yolo3.py --no-wd


class YOLOv3Step(Step):
    """GluonCV's YOLOv3 losses: the network computes them itself in training (its target merger
    adds the prediction-dependent part, the ignored anchors, to the loader's targets); each is a
    vector of one value per image, summed for the backward pass."""

    loss_names = ("obj_loss", "center_loss", "scale_loss", "cls_loss")

    def __init__(self, backward=autograd.backward, label_smooth=False):
        super().__init__(backward)
        self.label_smooth = bool(label_smooth)

    def prepare(self, net, ctx_list):
        # read when the training graph is traced (hybridize_for_training comes after prepare)
        net._target_generator._label_smooth = self.label_smooth
        return super().prepare(net, ctx_list)

    def __call__(self, net, batch, ctx_list):
        """Forward + backward; returns {loss name: mean over the batch's images}.

        ``batch``: the image, five prefetched targets and the padded boxes (GluonCV's order)."""
        self.ensure_prepared(net, ctx_list)
        count = self.num_images(batch)
        check_enough_images(count, ctx_list)
        parts = [spread(part, ctx_list) for part in batch]
        data, targets, boxes = parts[0], parts[1:6], parts[6]
        with autograd.record():
            losses = [net(x, boxes[k], *[t[k] for t in targets]) for k, x in enumerate(data)]
            self._backward([sum(device) for device in losses])
        return {name: sum(device[j].sum().asscalar() for device in losses) / count
                for j, name in enumerate(self.loss_names)}


def _check_options(options):
    """One line for an option of the wrong kind (they come from YAML and --model-option)."""
    for name in ("mixup", "label_smooth", "no_wd", "random_shape"):
        if not isinstance(options[name], bool):
            raise GluondetError(f"model option {name}: true or false, got {options[name]!r}")
    for name, low in (("no_mixup_epochs", 0), ("random_shape_every", 1)):
        value = options[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise GluondetError(f"model option {name}: a whole number of at least {low}, got {value!r}")
    shape_range = options["random_shape_range"]
    if not (isinstance(shape_range, (list, tuple)) and len(shape_range) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in shape_range)
            and 32 <= shape_range[0] <= shape_range[1]):
        raise GluondetError(f"model option random_shape_range: [low, high] input sides in pixels, "
                            f"32 <= low <= high (e.g. [320, 608]), got {shape_range!r}")


class YOLOv3(Family):
    name = "yolo3"
    step_class = YOLOv3Step
    # every trick off unless the model YAML (GluonCV's recipe) or --model-option turns it on
    option_defaults = {"mixup": False, "no_mixup_epochs": 20, "label_smooth": False, "no_wd": False,
                       "random_shape": False, "random_shape_range": [320, 608], "random_shape_every": 10}
    # INT8 export keeps elementwise sums in float32: the box corners (centre -/+ half the exp-scaled
    # anchor), where an untrained or diverged network's exp overflows and quantize_net failed on the
    # infinite range, and with them the backbone's residual sums. Tiny YOLOv3 trained 30 epochs on
    # 300 shapes images: VOC mAP 0.2289 (all INT8: 0.2312, float32: 0.2338); 138 img/s (all INT8:
    # 143, float32: 64.5), batch 8, one thread, load 9. Its recipe's held-back run: README's table.
    int8_float_operators = ("elemwise_add", "elemwise_sub")

    def __init__(self, options=None):
        super().__init__(options)
        _check_options(self.options)

    # ------------------------------------------------------------------ building
    def builder_kwargs(self, key, data_shape):
        """The tiny YOLOv3's anchors are sized for its input."""
        return {"data_shape": int(data_shape)} if key == "yolo3_tiny" and data_shape else {}

    def trainable_params(self, net):
        """Every parameter; with ``no_wd``, none of the biases and BatchNorm scales and shifts decay."""
        params = net.collect_params()
        if self.options["no_wd"]:
            for param in net.collect_params(NO_WD_PATTERN).values():
                param.wd_mult = 0.0
        return params

    # ------------------------------------------------------------------ training
    def make_step(self, backward=autograd.backward):
        return YOLOv3Step(backward, label_smooth=self.options["label_smooth"])

    def train_sizes(self, data_shape):
        """The input sides training draws from: the random-shape range, or ``data_shape`` alone."""

        return shape_choices(*self.options["random_shape_range"]) if self.options["random_shape"] \
            else [int(data_shape)]

    def train_loader(self, net, dataset, data_shape, batch_size, num_workers, indices=None, augment="ssd", seed=0,
                     epochs=None):
        """GluonCV's YOLOv3 targets after ``augment`` (``ssd``: GluonCV's YOLOv3 augmentation, the
        same colour, expand, crop and flip as SSD's; ``flip``: resize and flip), the batch's input
        size and the mixup switch from the epoch and batch each key carries; mixup stops
        ``no_mixup_epochs`` before the run's ``epochs`` end."""
        from gluoncv.data.batchify import Pad, Stack, Tuple

        options = self.options
        mixup_epochs = None if epochs is None else epochs - options["no_mixup_epochs"]
        transform = YOLO3TrainTransform(net, self.train_sizes(data_shape), options["random_shape_every"], seed,
                                        mixup=options["mixup"], mixup_epochs=mixup_epochs, augment=augment)
        batchify = Tuple(*[Stack() for _ in range(6)], Pad(axis=0, pad_val=-1))  # train_yolo3.py's
        return epoch_loader(dataset, transform, batchify, batch_size, num_workers, indices, seed, positions=True)

    def hybridize_for_training(self, net):
        """As the base, but the graph's memory is planned per shape when the input size changes."""
        net.hybridize(static_alloc=True, static_shape=not self.options["random_shape"])

    # ------------------------------------------------------------------ evaluation
    def val_loader(self, net, dataset, data_shape, batch_size, num_workers):
        """(data, label) batches: GluonCV's YOLOv3 validation transform, labels padded with -1 rows."""
        from gluoncv.data.batchify import Pad, Stack, Tuple

        return ordered_loader(dataset, YOLO3ValTransform(data_shape, data_shape), Tuple(Stack(), Pad(pad_val=-1)),
                              batch_size, num_workers)

    # YOLO3DefaultValTransform resizes with MXNet's interp=9, as SSD's validation transform does
    interpolation = SSD.interpolation

    # ------------------------------------------------------------------ anchors
    def anchor_layers(self, net, x):
        """Each output layer's anchors (finest first): every anchor's width and height centred on
        every cell of the layer's feature map (where a zero prediction puts its box), as corners.
        Shapes come from the network's symbol: nothing runs, whatever graph the network holds."""
        import mxnet as mx
        import numpy as np

        height, width = x.shape[2], x.shape[3]
        if height != width:
            raise GluondetError(f"YOLOv3 anchors are drawn for a square input, not {width}x{height}")
        layers = []
        for anchors, _, shape in target_geometry(net, [width])[width][::-1]:
            rows, cols = shape[2], shape[3]
            cy, cx = np.meshgrid((np.arange(rows) + 0.5) * height / rows, (np.arange(cols) + 0.5) * width / cols,
                                 indexing="ij")
            wh = anchors.reshape(1, 1, -1, 2)
            centres = np.stack([cx, cy], axis=-1)[:, :, None, :]
            corners = np.concatenate([centres - wh / 2, centres + wh / 2], axis=-1)
            layers.append((mx.nd.zeros(shape), corners.reshape(-1, 4).astype(np.float32)))
        return layers
