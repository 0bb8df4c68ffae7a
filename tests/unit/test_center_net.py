"""The CenterNet family against its references: GluonCV's own transform and target generator for
the targets, a numpy replay of GluonCV's focal loss and masked L1 for the losses, one device for
two, and boxes decoded from GluonCV's targets back to the input pixels they were made from."""
import random
import warnings

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")

from mxnet import autograd, gluon  # noqa: E402
from mxnet.gluon import nn  # noqa: E402

from gluondet.errors import GluondetError  # noqa: E402
from gluondet.families import get_family  # noqa: E402
from gluondet.families.center_net import (CenterNetStep, CenterNetTrainTransform,  # noqa: E402
                                          CenterNetValTransform, check_data_shape, heatmap_side)
from gluondet.models import initialize_missing  # noqa: E402
from gluondet.models.center_net import center_net  # noqa: E402

ONE, TWO = [mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]
SIZE = 64
CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def toy_voc(tmp_path_factory):
    from gluondet.config import resolve_dataset
    from gluondet.data import load_dataset
    from gluondet.data.synth import write_shapes_voc

    root = write_shapes_voc(tmp_path_factory.mktemp("toy") / "voc", n_train=6, n_val=2, seed=3, size=SIZE)
    return load_dataset(resolve_dataset(str(root)), "train")


def tiny(norm_kwargs=None, **kwargs):
    net = center_net("tiny", CLASSES, pretrained_base=False, norm_kwargs=norm_kwargs, **kwargs)
    initialize_missing(net)
    return net


def _seeded(seed, fn, *args):
    random.seed(seed)
    np.random.seed(seed)
    return fn(*args)


# ----------------------------------------------------------------------------- targets
def _gluoncv_targets(seed, img, label, size):
    """GluonCV's CenterNetDefaultTrainTransform on the image stretched to ``size`` (OpenCV bilinear)
    with the boxes scaled alike, its colour-jitter generator seeded by the first draw of NumPy's
    stream after ``seed`` (the order of its colour operations comes from Python's, seeded alike)."""
    import cv2
    from gluoncv.data.transforms.presets.center_net import CenterNetDefaultTrainTransform

    h, w = img.shape[:2]
    pixels = cv2.resize(img.asnumpy(), (size, size), interpolation=cv2.INTER_LINEAR)
    boxes = label.astype(np.float64).copy()
    boxes[:, [0, 2]] *= size / w
    boxes[:, [1, 3]] *= size / h
    random.seed(seed)
    np.random.seed(seed)
    reference = CenterNetDefaultTrainTransform(size, size, num_class=len(CLASSES), scale_factor=4)
    reference._data_rng = np.random.RandomState(np.random.randint(0, 2 ** 31 - 1))
    return reference(mx.nd.array(pixels, dtype=np.uint8), boxes.astype(np.float32))


@pytest.mark.parametrize("size", [SIZE, 96])  # the image's own size, and stretched
@pytest.mark.parametrize("seed", [0, 11, 12345])
def test_targets_equal_gluoncv_s_transform_for_the_same_image_and_seed(toy_voc, size, seed):
    i = next(k for k in range(len(toy_voc)) if len(toy_voc.label(k)) >= 2)
    img, label = toy_voc[i]
    crowd = np.array([[1, 1, 20, 20, 0, 2]], np.float32)  # flag 2: a crowd region, never a target
    ours = _seeded(seed, CenterNetTrainTransform(size, size, len(CLASSES)), img, np.concatenate([label, crowd]))
    theirs = _gluoncv_targets(seed, img, label, size)
    assert len(ours) == len(theirs) == 6
    assert ours[1].shape == (len(CLASSES), size // 4, size // 4)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    assert ours[1].asnumpy().max() == 1.0  # an object's centre is in the heatmap


def test_an_image_s_augmentation_depends_on_its_seed_alone(toy_voc):
    """What bit-exact resume needs: GluonCV keeps its colour-jitter generator across images; here the
    same (seed, image) gives the same sample whatever the transform read before."""
    transform = CenterNetTrainTransform(SIZE, SIZE, len(CLASSES))
    first = _seeded(5, transform, *toy_voc[0])
    for k in range(1, 4):
        _seeded(100 + k, transform, *toy_voc[k])
    again = _seeded(5, transform, *toy_voc[0])
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())


def test_validation_stretches_as_detect_does(toy_voc):
    """Eval scores the pixels detect sees: the val transform's input equals Detector.preprocess's,
    and its boxes are the image's scaled by (sx, sy), which detect divides back out."""
    from gluondet.predict import Detector, ModelInfo

    img, label = toy_voc[0]
    detector = Detector(tiny(), ModelInfo(classes=CLASSES, family="center_net", data_shape=96), hybridize=False)
    x, (sx, sy) = detector.preprocess(img.asnumpy())
    data, val_label = CenterNetValTransform(96, 96)(img, label)
    np.testing.assert_allclose(data.asnumpy(), x, atol=1e-6)
    assert (sx, sy) == (96 / img.shape[1], 96 / img.shape[0])
    np.testing.assert_allclose(val_label[:, :4] / [sx, sy, sx, sy], label[:, :4], rtol=1e-5)


# ----------------------------------------------------------------------------- losses
class FixedHeads(nn.HybridBlock):
    """A 'network' whose training outputs are its own parameters (one per output, whole batch)."""

    def __init__(self, heatmap_logits, wh, reg):
        super().__init__()
        with self.name_scope():
            self.hm, self.wh, self.reg = (self.params.get(n, shape=v.shape, init=mx.init.Constant(mx.nd.array(v)))
                                          for n, v in (("hm", heatmap_logits), ("wh", wh), ("reg", reg)))

    def hybrid_forward(self, F, x, hm, wh, reg):
        return F.clip(F.sigmoid(hm), 1e-4, 1 - 1e-4), wh, reg  # as CenterNet's training output


def _focal_replay(pred, label):
    pos, neg = label == 1, label < 1
    pos_loss = (np.log(pred) * (1 - pred) ** 2 * pos).sum()
    neg_loss = (np.log(1 - pred) * pred ** 2 * (1 - label) ** 4 * neg).sum()
    return -(pos_loss + neg_loss) / max(1.0, pos.sum())


def _masked_l1_replay(weight, pred, target, mask):
    return weight * np.abs(target * mask - pred * mask).sum() / max(1.0, mask.sum())


@pytest.mark.parametrize("objects", [3, 0])
def test_losses_equal_a_numpy_replay_of_gluoncv_s_focal_loss_and_masked_l1(objects):
    from gluoncv.model_zoo.center_net.target_generator import CenterNetTargetGenerator

    rng = np.random.default_rng(objects)
    batch, side = 2, 16
    generator = CenterNetTargetGenerator(len(CLASSES), side, side)
    targets = []
    for _ in range(batch):
        corner = rng.uniform(0, 8, (objects, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(2, 7, (objects, 2))], axis=1).astype(np.float32)
        targets.append([t.asnumpy() for t in generator(boxes, rng.integers(0, 3, (objects, 1)))])
    heatmap, wh_target, wh_mask, reg_target, reg_mask = (np.stack(t) for t in zip(*targets))
    logits = rng.normal(-2, 1, heatmap.shape).astype(np.float32)
    wh, reg = (rng.normal(3, 2, wh_target.shape).astype(np.float32) for _ in range(2))
    net = FixedHeads(logits, wh, reg)
    net.initialize()
    step = CenterNetStep(wh_weight=0.1, center_reg_weight=1.0)
    data = mx.nd.zeros((batch, 3, side * 4, side * 4))
    losses = step(net, [data] + [mx.nd.array(a) for a in (heatmap, wh_target, wh_mask, reg_target, reg_mask)], ONE)

    pred = np.clip(1 / (1 + np.exp(-logits.astype(np.float64))), 1e-4, 1 - 1e-4)
    assert losses["heatmap_loss"] == pytest.approx(_focal_replay(pred, heatmap), rel=1e-4)
    assert losses["wh_loss"] == pytest.approx(_masked_l1_replay(0.1, wh, wh_target, wh_mask), rel=1e-5, abs=1e-7)
    assert losses["center_reg_loss"] == pytest.approx(_masked_l1_replay(1.0, reg, reg_target, reg_mask),
                                                      rel=1e-5, abs=1e-7)
    assert all(np.isfinite(v) for v in losses.values())
    if not objects:  # no positives: the negatives' focal loss alone, and no box losses
        assert losses["heatmap_loss"] > 0 and losses["wh_loss"] == losses["center_reg_loss"] == 0
    grads = [p.grad().asnumpy() for p in net.collect_params().values()]
    assert all(np.isfinite(g).all() for g in grads)


def test_images_without_objects_train_with_finite_losses(toy_voc):
    img = toy_voc[0][0]
    empty = np.zeros((0, 6), np.float32)
    transform = CenterNetTrainTransform(SIZE, SIZE, len(CLASSES))
    samples = [_seeded(k, transform, img, empty) for k in range(2)]
    assert all(s[1].asnumpy().max() < 1 and s[3].asnumpy().sum() == 0 for s in samples)
    batch = [mx.nd.stack(*parts) for parts in zip(*samples)]
    net = tiny()
    losses = CenterNetStep()(net, batch, ONE)
    assert all(np.isfinite(v) for v in losses.values()), losses
    assert losses["wh_loss"] == losses["center_reg_loss"] == 0
    assert all(np.isfinite(p.grad().asnumpy()).all() for p in net.collect_params().values()
               if p.grad_req != "null")


# ----------------------------------------------------------------------------- devices
def _one_step(weights, batch, ctx_list):
    """Weights after one Adam step on ``ctx_list`` (BatchNorm on its running statistics, so each
    image's output depends on that image alone, as over devices it must)."""
    net = tiny(norm_kwargs={"use_global_stats": True})
    net.load_parameters(str(weights))
    family = get_family("center_net")
    step = family.make_step()
    step.prepare(net, ctx_list)
    trainer = gluon.Trainer(family.trainable_params(net), "adam", {"learning_rate": 0.01, "wd": 1e-4},
                            kvstore="device")
    net.hybridize(static_alloc=True, static_shape=True)
    losses = step(net, batch, ctx_list)
    trainer.step(step.step_batch_size(batch))
    return losses, {name: [d.asnumpy() for d in p.list_data()]
                    for name, p in net._collect_params_with_prefix().items()}


@pytest.mark.parametrize("batch_size", [4, 3])  # even, and one device with one image more
def test_one_step_on_two_devices_updates_as_the_whole_batch_on_one(batch_size, toy_voc, tmp_path):
    mx.random.seed(0)
    net = tiny(norm_kwargs={"use_global_stats": True})
    with autograd.predict_mode():
        net(mx.nd.zeros((1, 3, SIZE, SIZE)))  # deferred shapes, before the weights are saved
    weights = tmp_path / "w.params"
    net.save_parameters(str(weights))
    loader = get_family("center_net").train_loader(net, toy_voc, SIZE, batch_size, 0, seed=4)
    loader.set_epoch(0)
    batch = next(iter(loader))
    one_loss, one = _one_step(weights, batch, ONE)
    two_loss, two = _one_step(weights, batch, TWO)

    assert two_loss == pytest.approx(one_loss, rel=1e-5)
    start = {k: v.asnumpy() for k, v in mx.nd.load(str(weights)).items()}
    moved = [name for name in start if np.abs(one[name][0] - start[name]).max() > 1e-4]
    assert len(moved) > len(start) // 3, "the step barely changed the weights: nothing compared"
    for name, (single,) in one.items():
        assert len(two[name]) == 2
        for copy in two[name]:
            np.testing.assert_allclose(copy, single, rtol=1e-4, atol=1e-5, err_msg=name)


# ----------------------------------------------------------------------------- boxes
class Fixed(nn.HybridBlock):
    """A head whose output is a given array, whatever the features (imperative use only)."""

    def __init__(self, value):
        super().__init__()
        self._value = value

    def hybrid_forward(self, F, y):
        return self._value


def test_targets_decode_to_the_input_pixel_boxes_they_were_made_from():
    """GluonCV's targets of two boxes (made at stride 4, as training makes them), put in place of the
    heads' outputs, come out of the predict path as those boxes in input pixels, with their class."""
    from gluoncv.model_zoo.center_net.target_generator import CenterNetTargetGenerator

    side = 128
    boxes = np.array([[20.0, 30.0, 70.0, 94.0], [81.0, 6.0, 123.0, 40.0]], np.float32)
    ids = np.array([[1], [2]], np.float32)
    heatmap, wh, _, reg, _ = CenterNetTargetGenerator(len(CLASSES), side // 4, side // 4)(boxes / 4, ids)
    logits = mx.nd.log(mx.nd.clip(heatmap, 1e-6, 1 - 1e-6) / mx.nd.clip(1 - heatmap, 1e-6, 1))
    net = tiny()
    net.heads = nn.HybridSequential()
    for value in (logits, wh, reg):
        net.heads.add(Fixed(value.expand_dims(0)))
    with autograd.predict_mode():
        out_ids, scores, out_boxes = net(mx.nd.zeros((1, 3, side, side)))
    assert out_ids.shape == scores.shape == (1, 100, 1) and out_boxes.shape == (1, 100, 4)
    top = np.argsort(-scores.asnumpy().reshape(-1))[:2]
    found = sorted(zip(out_ids.asnumpy().reshape(-1)[top], out_boxes.asnumpy()[0][top].tolist()))
    assert [c for c, _ in found] == [1, 2]
    np.testing.assert_allclose([b for _, b in found], boxes, atol=1e-3)


@pytest.mark.parametrize("base", ["tiny", "resnet18_v1b"])
def test_the_heatmap_is_at_the_stride_the_decoder_scales_by(base):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = center_net(base, CLASSES, pretrained_base=False)
    for side in (128, 256):
        assert heatmap_side(net, side) * net.scale == side
        check_data_shape(net, side)
    with pytest.raises(GluondetError, match="--data-shape 200: .* use a multiple of 32, such as 224"):
        check_data_shape(net, 200)


# ----------------------------------------------------------------------------- models and optimizer
def test_offline_a_pretrained_base_is_one_line_naming_the_file_to_place():
    from gluondet.config import resolve_model_config
    from gluondet.models import build_model

    with pytest.raises(GluondetError, match=r"cannot fetch the pretrained backbone 'resnet18_v1b'.*place the file"):
        build_model(resolve_model_config("center_net_resnet18_v1b"), CLASSES, pretrained_base=True)


def test_the_tiny_base_refuses_a_pretrained_base_file(tmp_path):
    from gluondet.config import resolve_model_config
    from gluondet.models import build_model

    weights = tmp_path / "w.params"
    weights.write_bytes(b"")
    with pytest.raises(GluondetError, match="no pretrained backbone"):
        build_model(resolve_model_config("center_net_tiny"), CLASSES, pretrained_base=weights)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_the_optimizer_is_the_configured_one(name):
    from gluondet.config import resolve_model_config, resolve_train_config
    from gluondet.engine.train import make_optimizer

    config = resolve_train_config(resolve_model_config("center_net_resnet18_v1b"), {"optimizer": name})
    assert resolve_train_config(resolve_model_config("center_net_resnet18_v1b"), {}).optimizer == "adam"
    net = tiny()
    trainer = make_optimizer(net, get_family("center_net"), config, "device")
    optimizer = trainer._optimizer
    assert type(optimizer).__name__.lower() == name
    assert optimizer.lr == config.lr and optimizer.wd == config.wd
    biases = [p for n, p in net.collect_params().items() if n.endswith("bias")]
    assert biases and all(p.wd_mult == 0 for p in biases)
    with pytest.raises(GluondetError, match="--optimizer must be one of sgd, adam"):
        resolve_train_config(resolve_model_config("center_net_tiny"), {"optimizer": "lamb"})
