"""What gluondet asks of a model family, and the training-step machinery every family shares.

A ``Family`` answers for its networks: how they are built and which parameters train; the training
loader, step and losses; the hybridize policy; the validation loader, metric and loop; how an image
becomes a network input (size, interpolation) and how boxes get back to the image; its anchors;
and its export input. The engine, eval, detect and export only ask.

Steps: several devices are the general case, one device the special one. ``Step.prepare(net,
ctx_list)`` puts every parameter and constant (anchors, box-encoder means and stds, including
those GluonCV creates only at the first training forward) on every device; each family's step
spreads a DataLoader batch (in ``cpu_shared`` memory) over the devices, so that one step on N
devices updates the weights as one step with the whole batch on one device does.
"""
from mxnet import autograd

from ..errors import GluondetError
from ..eval import make_metric

DEFAULT_EVAL_BATCH = 8  # images per evaluation batch, split over the devices (fixed-input families)


class TooFewImages(GluondetError):
    """A batch with fewer images than devices: a device would have nothing to compute its gradient on."""


def place_on(net, ctx_list):
    """Every parameter and constant of ``net`` on every context of ``ctx_list`` (a no-op where they are)."""
    for param in net.collect_params().values():
        if param.list_ctx() != list(ctx_list):
            param.reset_ctx(ctx_list)
    return net


def round_robin(count, ctx_list):
    """Rounds of (item index, context): item i goes to device i mod N, N items per round."""
    n = len(ctx_list)
    return [[(i, ctx_list[i % n]) for i in range(start, min(count, start + n))] for start in range(0, count, n)]


def check_enough_images(count, ctx_list):
    if count < len(ctx_list):
        raise TooFewImages(
            f"a training batch of {count} image(s) for {len(ctx_list)} devices: every device needs at "
            f"least one; use --batch-size {len(ctx_list)} or more, and at least as many training images")


class Step:
    """What the training loop calls: ``prepare`` once per device list, then ``__call__`` on each
    batch (forward and backward on every device; returns {loss name: float}), then
    ``trainer.step(step.step_batch_size(batch))``."""

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
        """Build now the blocks a network would otherwise create at its first training forward, on
        one device only (a family with such blocks says which); none here."""

    def ensure_prepared(self, net, ctx_list):
        if self._prepared != (id(net), tuple(ctx_list)):
            self.prepare(net, ctx_list)

    def num_images(self, batch):
        return batch[0].shape[0]

    def step_batch_size(self, batch):
        """What ``gluon.Trainer.step`` divides the summed gradients by: the batch's images, unless
        the family's loss is already normalized over the whole batch."""
        return self.num_images(batch)

    def loss_normalizer(self, batch):
        """The count the loss of ``batch`` is divided by, when the family normalizes it over the
        whole batch by one count (SSD: its positive anchors); None for a mean per image (or several
        counts). Horovod ranks weight their gradients by it, so that N ranks train as one process
        on the union of their batches (engine/horovod.py)."""
        return None


class Family:
    """Defaults are those of a family whose images are all resized to one ``data_shape`` square and
    batched whole (SSD, YOLOv3, CenterNet); an aspect-keeping family (R-CNN) overrides them."""

    name = None
    fixed_input = True  # every image stretched to a data_shape square; False: shorter side, aspect kept
    masks = False  # predicts instance masks (a fourth output)
    needs_objects = False  # training images without objects are left out
    ignore_extra_weights = False  # saved weights may hold training-only constants
    per_image_forward = False  # the network predicts one image per forward (batches round-robin)
    int8_refusal = None  # why INT8 export cannot be done, or None
    int8_float_operators = ()  # operators INT8 export keeps in float32 (besides Concat and Flatten)
    int8_float_layers = ()  # layers INT8 export keeps in float32: parts of their graph node names
    option_defaults = {}  # the family's own training switches (model YAML ``options:``)
    step_class = Step

    def __init__(self, options=None):
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.option_defaults))
        if unknown:
            known = ", ".join(sorted(self.option_defaults)) or "none"
            raise GluondetError(f"model option '{unknown[0]}' is not one of the {self.name} family's ({known})")
        self.options = {**self.option_defaults, **options}

    def __repr__(self):
        return f"<family {self.name}>"

    # ------------------------------------------------------------------ building
    def builder_kwargs(self, key, data_shape):
        """Keyword arguments the builder of model ``key`` needs for ``data_shape``."""
        return {}

    def after_build(self, net, key, rebuild):
        """The built network, checked (and, if the family must, rebuilt with ``rebuild(**kwargs)``)."""
        return net

    def trainable_params(self, net):
        """The parameters the trainer updates (and their lr/wd multipliers)."""
        return net.collect_params()

    # ------------------------------------------------------------------ training
    def make_step(self, backward=autograd.backward):
        """The family's training step (``backward``: engine.amp.Precision.backward)."""
        return self.step_class(backward)

    @property
    def loss_names(self):
        return self.step_class.loss_names

    def train_indices(self, dataset):
        """Indices of the training images the family can learn from (None: all)."""
        return None

    def train_loader(self, net, dataset, data_shape, batch_size, num_workers, indices=None, augment="ssd", seed=0,
                     epochs=None):
        raise NotImplementedError

    def hybridize_for_training(self, net):
        """(Re)hybridize for the training graph. A hybridized GluonCV detector keeps the graph it
        traced first; after validation (predict mode, ``set_nms``) the training step would silently
        run the predict graph. ``hybridize`` clears it, so this runs before every training epoch."""
        net.hybridize(static_alloc=True, static_shape=self.fixed_input)

    # ------------------------------------------------------------------ evaluation
    def val_loader(self, net, dataset, data_shape, batch_size, num_workers):
        raise NotImplementedError

    def eval_batch_size(self, ctx_list):
        return DEFAULT_EVAL_BATCH

    def hybridize_for_prediction(self, net):
        """Predict-mode graph with GluonCV's evaluation NMS settings."""
        if hasattr(net, "set_nms"):
            net.set_nms(nms_thresh=0.45, nms_topk=400, post_nms=100)
        net.hybridize(static_alloc=True, static_shape=self.fixed_input)

    def new_metric(self, metric_name, classes, iou=0.5):
        """The metric validation and eval fill."""

        return make_metric(metric_name, classes, iou_thresh=iou)

    def validate(self, net, loader, ctx_list, metric, metric_name, classes, progress=True):
        """gluondet.eval's result dict of ``net`` (predict mode) on ``loader``, filling ``metric``."""
        from ..eval.evaluate import evaluate

        return evaluate(net, loader, ctx_list, metric, progress=progress)

    def evaluate(self, net, loader, ctx_list, metric, metric_name, classes, dataset, dataset_cfg, split,
                 coco_results=None, progress=True):
        """``gluondet eval``'s result dict (validation's, unless the family writes more)."""
        return self.validate(net, loader, ctx_list, metric, metric_name, classes, progress=progress)

    def original_scale(self, data_shape, image_size):
        """(sx, sy) taking the metric's boxes of one image (in network-input pixels) to its own."""
        if not data_shape:
            return 1.0, 1.0
        return image_size[0] / float(data_shape), image_size[1] / float(data_shape)

    # ------------------------------------------------------------------ prediction
    def input_size(self, width, height, data_shape, max_size=None):
        """(width, height) of the network input for an image of ``width`` x ``height``."""
        return int(data_shape), int(data_shape)

    def image_input_size(self, info, width, height):
        """(width, height) of the input for an image, from a predict.ModelInfo's sizes."""
        return self.input_size(width, height, info.data_shape)

    def describe_resize(self, data_shape, max_size=None):
        return f"every image stretched to {data_shape}x{data_shape} (--data-shape {data_shape})"

    def interpolation(self, width, height, new_width, new_height):
        """The OpenCV interpolation of the family's validation transform for this resize."""
        import cv2

        return cv2.INTER_LINEAR

    def anchor_layers(self, net, x):
        """[(feature map NDArray, (A, 4) corner anchors in input pixels)] per feature map for input
        ``x``; None for a family without anchor boxes."""
        return None

    # ------------------------------------------------------------------ export
    def example_shape(self, data_shape, short=None, max_size=None):
        """The (1, 3, H, W) input an export is traced with."""
        return (1, 3, int(data_shape), int(data_shape))

    def onnx_dynamic_shape(self, shape):
        """Which input axes the ONNX graph leaves free (None): the batch here."""
        return (None, 3, shape[2], shape[3])

    def check_int8(self):
        if self.int8_refusal:
            raise GluondetError(self.int8_refusal)
