"""The YOLOv3 family against GluonCV's own pieces: training items equal GluonCV's mixup,
augmentation and targets for the same seeds; label smoothing equals a numpy replay of the class
loss; no-wd reaches every bias and BatchNorm scale and shift; random input sizes follow (seed,
epoch, batch); one step on cpu0,cpu1 updates as one step on one device; an image without objects
trains as background.

The network is gluondet's tiny YOLOv3 narrowed further (a real GluonCV ``YOLOV3``: its outputs,
target generators and losses are the zoo's), on a few generated shapes images.
"""
import random

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")

from mxnet import autograd, gluon  # noqa: E402

from gluondet.errors import GluondetError  # noqa: E402
from gluondet.families import family_of, get_family  # noqa: E402
from gluondet.models import initialize_missing  # noqa: E402

ONE, TWO = [mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]
SIZE = 64
CROWD = 2


def toy_yolo(classes, frozen_norm=False):
    """The tiny YOLOv3, narrow; ``frozen_norm``: BatchNorm on its running statistics, so each image's
    output depends on that image only and 1 and 2 devices can agree exactly."""
    from gluondet.models.tiny_yolo3 import tiny_yolo3

    net = tiny_yolo3(classes, data_shape=SIZE, stage_channels=(8, 16, 16, 32, 32), head_channels=(16, 16, 8),
                     norm_kwargs={"use_global_stats": True} if frozen_norm else None, alloc_size=(16, 16))
    initialize_missing(net)
    return net


class Labelled:
    """A dataset with labels of our choosing (a crowd row, an image without objects) over real images."""

    def __init__(self, dataset, labels):
        self.dataset, self.labels = dataset, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.dataset[i][0], self.labels[i].copy()


@pytest.fixture(scope="module")
def toy_voc(tmp_path_factory):
    from gluondet.config import resolve_dataset
    from gluondet.data import load_dataset
    from gluondet.data.synth import write_shapes_voc

    root = write_shapes_voc(tmp_path_factory.mktemp("toy") / "voc", n_train=8, n_val=3, seed=3, size=SIZE + 16)
    cfg = resolve_dataset(str(root))
    return load_dataset(cfg, "train"), load_dataset(cfg, "val")


@pytest.fixture(scope="module")
def with_crowd(toy_voc):
    """The training images, each with its objects, plus a crowd region on the first."""
    train_ds, _ = toy_voc
    labels = [train_ds.label(i) for i in range(len(train_ds))]
    labels = [lb if len(lb) else np.array([[4, 4, 30, 30, 1, 0]], np.float32) for lb in labels]
    labels[0] = np.vstack([labels[0], [[0, 0, 40, 40, 0, CROWD]]]).astype(np.float32)
    return Labelled(train_ds, labels)


def _yolo(options=None):
    return family_of({"family": "yolo3", "options": options or {}})


def _reference_batch(net, dataset, keys, sizes, mixing):
    """GluonCV's way, item by item: MixupDetection over the dataset without crowd rows, then
    YOLO3DefaultTrainTransform (which runs the network for its anchors), batched as train_yolo3.py."""
    from gluoncv.data.batchify import Pad, Stack, Tuple
    from gluoncv.data.mixup.detection import MixupDetection
    from gluoncv.data.transforms.presets.yolo import YOLO3DefaultTrainTransform

    no_crowd = Labelled(dataset, [lb[lb[:, 5] != CROWD] for lb in dataset.labels])
    mixup = MixupDetection(no_crowd, np.random.beta if mixing else None, 1.5, 1.5)
    items = []
    for seed, index, _, batch in keys:
        random.seed(seed)
        np.random.seed(seed)
        img, label = mixup[index]
        items.append(YOLO3DefaultTrainTransform(sizes[batch], sizes[batch], net, mixup=True)(img, label))
    return Tuple(*[Stack() for _ in range(6)], Pad(axis=0, pad_val=-1))(items)


# ----------------------------------------------------------------------------- against GluonCV
@pytest.mark.parametrize("epoch, mixing", [(0, True), (3, False)])  # mixup off for the last 2 of 5 epochs
def test_training_batches_are_gluoncv_s_mixup_augmentation_and_targets(epoch, mixing, with_crowd):
    family = _yolo({"mixup": True, "no_mixup_epochs": 2, "random_shape": True, "random_shape_range": [64, 128],
                    "random_shape_every": 1})
    net = toy_yolo(["circle", "square", "triangle"])
    loader = family.train_loader(net, with_crowd, SIZE, 4, 0, seed=5, epochs=5)
    loader.set_epoch(epoch)
    batches = list(loader)
    sizes = [b[0].shape[2] for b in batches]
    assert all(64 <= s <= 128 and s % 32 == 0 for s in sizes)
    keys = list(loader.sampler)
    for b, (ours, batch_keys) in enumerate(zip(batches, keys)):
        reference = _reference_batch(net, with_crowd, batch_keys, sizes, mixing)
        for name, mine, theirs in zip(("image", "objectness", "centers", "scales", "weights", "classes", "boxes"),
                                      ours, reference):
            np.testing.assert_array_equal(mine.asnumpy(), theirs.asnumpy(), err_msg=f"batch {b}: {name}")
    objectness = np.concatenate([b[1].asnumpy().ravel() for b in batches])
    mixed = (objectness > 0) & (objectness < 1)
    assert mixed.any() == mixing  # blended objects carry their share as objectness


def test_crowd_regions_never_become_targets(with_crowd):
    """The crowd region of image 0 is the largest box: with it, the boxes the network sees grow."""
    family = _yolo()
    net = toy_yolo(["circle", "square", "triangle"])
    loader = family.train_loader(net, with_crowd, SIZE, 1, 0, seed=0, augment="flip", indices=[0])
    loader.set_epoch(0)
    (_, *_, boxes), = list(loader)
    assert len(boxes[0]) == len(with_crowd.labels[0]) - 1


def test_label_smoothing_is_gluoncv_s_rule_in_the_class_loss(toy_voc):
    """The class loss of a step equals a numpy replay: sigmoid cross-entropy over the positive
    anchors with targets 1 - e and e, e = min(1 / classes, 1 / 40) (GluonCV's target merger with
    its label-smoothing switch, as train_yolo3.py --label-smooth sets it), or 1 and 0 without."""
    train_ds, _ = toy_voc
    classes = list(train_ds.classes)
    net = toy_yolo(classes, frozen_norm=True)
    mx.random.seed(4)
    for output in net.yolo_outputs:  # logits away from 0, where a target's value barely matters
        output.prediction.bias.set_data(mx.nd.random.uniform(-3, 3, output.prediction.bias.shape))
    loader = _yolo().train_loader(net, train_ds, SIZE, 4, 0, seed=1, augment="flip")
    loader.set_epoch(0)
    batch = next(iter(loader))
    with autograd.train_mode():
        logits = net(batch[0])[7].asnumpy()  # raw class predictions (B, anchors, classes)
    objectness, class_targets = batch[1].asnumpy(), batch[5].asnumpy()
    positive = objectness[..., 0] > 0
    assert positive.any()
    losses = {}
    for smooth in (False, True):
        step = _yolo({"label_smooth": smooth}).make_step()
        losses[smooth] = step(net, batch, ONE)["cls_loss"]
        eps = min(1.0 / len(classes), 1.0 / 40) if smooth else 0.0
        target = np.where(class_targets > 0.5, 1 - eps, eps)
        bce = np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))
        replay = (bce * positive[..., None]).sum() / len(logits)
        assert losses[smooth] == pytest.approx(replay, rel=1e-4)
    assert losses[True] != pytest.approx(losses[False], rel=1e-3)


def test_no_wd_frees_every_bias_and_batchnorm_scale_and_shift():
    net = toy_yolo(["a", "b"])
    params = _yolo({"no_wd": True}).trainable_params(net)
    exempt = set()
    for block in _blocks(net):
        if isinstance(block, gluon.nn.BatchNorm):
            exempt |= {block.gamma.name, block.beta.name}
        elif isinstance(block, gluon.nn.Conv2D) and block.bias is not None:
            exempt.add(block.bias.name)
    assert len(exempt) > 10
    for name, param in params.items():
        assert param.wd_mult == (0.0 if name in exempt else 1.0), name
    plain = _yolo().trainable_params(toy_yolo(["a", "b"]))
    assert all(p.wd_mult == 1.0 for p in plain.values())


def _blocks(block):
    yield block
    for child in block._children.values():
        yield from _blocks(child)


# ----------------------------------------------------------------------------- random shapes
def test_random_sizes_follow_seed_epoch_and_batch_only(toy_voc):
    from gluondet.data.yolo3_transforms import shape_at, shape_choices

    sizes = shape_choices(320, 608)
    assert sizes == list(range(320, 609, 32))
    drawn = {(s, e, b): shape_at(s, e, b, sizes, 10) for s in (0, 1) for e in range(4) for b in range(40)}
    assert drawn == {(s, e, b): shape_at(s, e, b, sizes, 10) for s, e, b in drawn}  # a pure function
    assert set(drawn.values()) <= set(sizes) and len(set(drawn.values())) > 5
    for (s, e, b), side in drawn.items():  # one size per 10 batches
        assert side == drawn[(s, e, b - b % 10)]
    assert len({tuple(drawn[(0, e, b)] for b in range(0, 40, 10)) for e in range(4)}) > 1  # epochs differ

    train_ds, _ = toy_voc
    family = _yolo({"random_shape": True, "random_shape_range": [64, 160], "random_shape_every": 1})
    net = toy_yolo(list(train_ds.classes))
    loader = family.train_loader(net, train_ds, SIZE, 2, 0, seed=9, augment="flip")
    loader.set_epoch(2)
    straight = [b[0].shape[2] for b in loader]
    loader.set_epoch(2, start=2)  # a run resumed at its third batch sees the same sizes
    assert [b[0].shape[2] for b in loader] == straight[2:]
    assert straight == [shape_at(9, 2, b, [64, 96, 128, 160], 1) for b in range(len(straight))]
    val = family.val_loader(net, train_ds, SIZE, 2, 0)  # validation at the data shape
    assert {b[0].shape[2:] for b in val} == {(SIZE, SIZE)}


# ----------------------------------------------------------------------------- devices
def _weights_file(classes, tmp_path):
    mx.random.seed(0)
    net = toy_yolo(classes, frozen_norm=True)
    with autograd.predict_mode():
        net(mx.nd.zeros((1, 3, SIZE, SIZE)))
    path = tmp_path / "yolo.params"
    net.save_parameters(str(path))
    return path


def _one_step(classes, weights, batch, ctx_list):
    net = toy_yolo(classes, frozen_norm=True)
    net.load_parameters(str(weights))
    family = _yolo({"no_wd": True})
    step = family.make_step()
    step.prepare(net, ctx_list)
    trainer = gluon.Trainer(family.trainable_params(net), "sgd",
                            {"learning_rate": 0.01, "momentum": 0.9, "wd": 5e-4}, kvstore="device")
    family.hybridize_for_training(net)
    losses = step(net, batch, ctx_list)
    trainer.step(step.step_batch_size(batch))
    return losses, {name: [d.asnumpy() for d in p.list_data()] for name, p in net._collect_params_with_prefix().items()}


@pytest.mark.parametrize("batch_size", [4, 3])  # even, and one device with one image more
def test_one_step_on_two_devices_updates_as_the_whole_batch_on_one(batch_size, toy_voc, tmp_path):
    train_ds, _ = toy_voc
    classes = list(train_ds.classes)
    weights = _weights_file(classes, tmp_path)
    loader = _yolo().train_loader(toy_yolo(classes), train_ds, SIZE, batch_size, 0, seed=2)
    loader.set_epoch(0)
    batch = next(iter(loader))
    start = {k: v.asnumpy() for k, v in mx.nd.load(str(weights)).items()}
    one_loss, one = _one_step(classes, weights, batch, ONE)
    two_loss, two = _one_step(classes, weights, batch, TWO)
    assert two_loss == pytest.approx(one_loss, rel=1e-5)
    moved = [name for name in start if np.abs(one[name][0] - start[name]).max() > 1e-5]
    assert len(moved) > len(start) // 3, "the step barely changed the weights: nothing compared"
    for name, (single,) in one.items():
        assert len(two[name]) == 2
        for copy in two[name]:
            np.testing.assert_allclose(copy, single, rtol=1e-4, atol=1e-6, err_msg=name)


# ----------------------------------------------------------------------------- images without objects
def test_an_image_without_objects_trains_as_background(toy_voc):
    """GluonCV's transform fails on an empty label; here it gets all-background targets, and a batch
    of such images (and one with objects among them) gives finite losses that teach 'nothing here'."""
    train_ds, _ = toy_voc
    classes = list(train_ds.classes)
    empty = Labelled(train_ds, [np.zeros((0, 6), np.float32)] * 4)
    net = toy_yolo(classes)
    for mixup in (False, True):  # mixed with another empty image too
        loader = _yolo({"mixup": mixup}).train_loader(net, empty, SIZE, 4, 0, seed=3)
        loader.set_epoch(0)
        batch = next(iter(loader))
        _, objectness, centers, scales, weights, class_targets, boxes = (x.asnumpy() for x in batch)
        assert not objectness.any() and not centers.any() and not scales.any() and not weights.any()
        assert (class_targets == -1).all() and (boxes == -1).all()
        losses = _yolo().make_step()(net, batch, ONE)
        assert all(np.isfinite(v) for v in losses.values())
        assert losses["obj_loss"] > 0 and losses["center_loss"] == losses["scale_loss"] == losses["cls_loss"] == 0

    labels = [np.zeros((0, 6), np.float32), train_ds.label(1)]
    mixed = Labelled(train_ds, labels if len(labels[1]) else [labels[0], np.array([[4, 4, 30, 30, 0, 0]], np.float32)])
    loader = _yolo().train_loader(net, mixed, SIZE, 2, 0, seed=3)
    loader.set_epoch(0)
    losses = _yolo().make_step()(net, next(iter(loader)), TWO)
    assert all(np.isfinite(v) for v in losses.values()) and losses["cls_loss"] > 0


# ----------------------------------------------------------------------------- anchors, options, configs
def test_anchor_layers_are_the_boxes_of_a_zero_prediction():
    """With every prediction zero, YOLOv3 decodes each cell's anchors at the cell's centre: the
    network's own decoding (training outputs) gives the boxes anchor_layers draws."""
    net = toy_yolo(["a", "b"])
    x = mx.nd.zeros((1, 3, 96, 96))
    net(x)  # the prediction layers' input channels are known after a forward
    for output in net.yolo_outputs:
        for param in output.prediction.collect_params().values():
            param.set_data(mx.nd.zeros(param.shape))
    with autograd.train_mode():
        decoded = net(x)[0].asnumpy().reshape(-1, 4)  # deepest layer first
    layers = get_family("yolo3").anchor_layers(net, x)
    assert [feat.shape[2:] for feat, _ in layers] == [(12, 12), (6, 6), (3, 3)]
    ours = np.concatenate([corners for _, corners in layers[::-1]])
    np.testing.assert_allclose(ours, decoded, atol=1e-4)


@pytest.mark.parametrize("options, message", [
    ({"mixup": "yes"}, "mixup: true or false"),
    ({"no_mixup_epochs": -1}, "no_mixup_epochs: a whole number of at least 0"),
    ({"random_shape_every": 0}, "random_shape_every: a whole number of at least 1"),
    ({"random_shape_range": [608, 320]}, r"random_shape_range: \[low, high\]"),
    ({"random_shapes": True}, "model option 'random_shapes' is not one of the yolo3 family's"),
])
def test_a_bad_option_is_one_line(options, message):
    with pytest.raises(GluondetError, match=message):
        family_of({"family": "yolo3", "options": options})


@pytest.mark.parametrize("name", ["yolo3_darknet53", "yolo3_mobilenet1.0", "yolo3_mobilenet0.25", "yolo3_tiny"])
def test_shipped_configs_name_a_builder_and_options_the_family_takes(name):
    from gluondet.config import resolve_model_config, resolve_train_config
    from gluondet.families import family_name
    from gluondet.models import MODELS

    cfg = resolve_model_config(name)
    assert family_name(cfg) == "yolo3" and name in MODELS
    family_of(cfg)  # its options: all known, all valid
    assert resolve_train_config(cfg, {}).lr_mode == "cosine"


def test_prefetched_targets_equal_gluoncv_s_generator_on_random_objects():
    """prefetch_targets (numpy) against GluonCV's YOLOV3PrefetchTargetGenerator (NDArrays) on 120
    random images: objects from under a pixel to the whole input, several in one cell, mixup shares,
    padding rows, three input sizes of the tiny YOLOv3's three layers."""
    from gluoncv.model_zoo.yolo.yolo_target import YOLOV3PrefetchTargetGenerator

    from gluondet.data.yolo3_transforms import prefetch_targets, target_geometry

    net = toy_yolo(["a", "b", "c", "d"])
    geometry = target_geometry(net, [64, 96, 128])
    reference = YOLOV3PrefetchTargetGenerator(num_class=4)
    rng = np.random.default_rng(0)
    for case in range(120):
        size = int(rng.choice([64, 96, 128]))
        count = int(rng.integers(1, 9))
        corners = np.sort(rng.uniform(0, size, (count, 2, 2)), axis=1)  # x, y pairs: min then max
        if case % 5 == 0:  # several objects around one spot, some under a pixel wide
            corners = np.sort(size / 2 + rng.uniform(-3, 3, (count, 2, 2)), axis=1)
        boxes = np.concatenate([corners[:, 0], corners[:, 1]], axis=1)
        bbox = np.concatenate([boxes, rng.integers(0, 4, (count, 1)), rng.uniform(0.05, 1, (count, 1))], axis=1)
        bbox = bbox.astype(np.float32)
        if case % 7 == 0:  # padding rows after the objects
            bbox = np.concatenate([bbox, np.full((2, 6), -1, np.float32)])
        mixratio = bbox[:, -1] if case % 2 else None
        ours = prefetch_targets(bbox, geometry[size], size, 4, mixratio)
        layers = geometry[size]
        theirs = reference(mx.nd.zeros((1, 3, size, size)), [mx.nd.zeros(shape) for _, _, shape in layers],
                           [mx.nd.array(a) for a, _, _ in layers], [mx.nd.array(o) for _, o, _ in layers],
                           mx.nd.array(bbox[None, :, :4]), mx.nd.array(bbox[None, :, 4:5]),
                           mx.nd.array(bbox[None, :, 5:6]) if mixratio is not None else None)
        for name, mine, ref in zip(("objectness", "centers", "scales", "weights", "classes"), ours, theirs):
            np.testing.assert_array_equal(mine, ref[0].asnumpy(), err_msg=f"case {case}: {name}")
