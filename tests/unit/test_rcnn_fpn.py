"""FPN R-CNN builders: RoI pooling that never reads uninitialized memory, and the models table rows."""
import types

import mxnet as mx
import numpy as np
import pytest

from gluondet.models.rcnn_fpn import pyramid_roi_features


STRIDES = (4, 8, 16, 32, 64)
ROI_SIZE = (7, 7)


class _Pooling(mx.gluon.HybridBlock):
    """pyramid_roi_features as GluonCV's FPN networks call it (levels 2..5, P6 left out)."""

    def __init__(self):
        super().__init__()
        self._min_stage, self._max_stage = 2, 6

    def hybrid_forward(self, F, rois, *features):
        return pyramid_roi_features(self, F, features, rois, ROI_SIZE, STRIDES)


def _random_rois(rng, n, size, images):
    """RoIs over all four levels and beyond (the clips), some off the image, about 1 in 6 with batch
    index -1; none within 0.05 of a level boundary, where float32 and float64 could disagree."""
    rows = []
    while len(rows) < n:
        side, aspect = np.exp(rng.uniform(np.log(12), np.log(900))), np.exp(rng.uniform(-0.7, 0.7))
        w, h = side * aspect, side / aspect
        exact = 4 + np.log2(np.sqrt(w * h) / 224.0)
        if abs(exact - np.round(exact)) < 0.05:
            continue
        x1, y1 = rng.uniform(-20, size[1] - 10), rng.uniform(-20, size[0] - 10)
        index = -1 if rng.random() < 1 / 6 else rng.integers(0, images)
        rows.append([index, x1, y1, x1 + w - 1, y1 + h - 1])
    return np.array(rows, np.float32)


def _own_level(roi):
    _, x1, y1, x2, y2 = roi.astype(np.float64)
    return int(np.clip(np.floor(4 + np.log2(np.sqrt((x2 - x1 + 1) * (y2 - y1 + 1)) / 224.0)), 2, 5))


def _each_roi_alone(features, rois, head_grad):
    """Rows and feature gradients with each RoI pooled alone at its own level (ROIAlign of one row,
    its gradient in float64, summed over the RoIs); a RoI with batch index -1 gives zeros, no gradient."""
    rows = np.zeros((len(rois), features[0].shape[1]) + ROI_SIZE, np.float32)
    grads = [np.zeros(f.shape) for f in features]
    for r, roi in enumerate(rois):
        if roi[0] < 0:
            continue
        i = _own_level(roi) - 2
        one = mx.nd.array(roi[None])
        rows[r] = mx.nd.contrib.ROIAlign(features[i], one, ROI_SIZE, 1.0 / STRIDES[i], sample_ratio=2).asnumpy()[0]
        feature = features[i].astype("float64")
        feature.attach_grad()
        with mx.autograd.record():
            out = mx.nd.contrib.ROIAlign(feature, one.astype("float64"), ROI_SIZE, 1.0 / STRIDES[i], sample_ratio=2)
        out.backward(mx.nd.array(head_grad[r:r + 1], dtype="float64"))
        grads[i] += feature.grad.asnumpy()
    return rows, grads


def _each_level_alone(features, rois, head_grad):
    """Feature gradients of ROIAlign over each level's own RoIs only (batch index >= 0), in float32:
    the same additions in the same order (RoIs by index) as a correct pooling makes."""
    grads = []
    for i, feature in enumerate(features):
        own = [r for r, roi in enumerate(rois) if roi[0] >= 0 and _own_level(roi) == i + 2]
        alone = feature.copy()
        alone.attach_grad()
        with mx.autograd.record():
            out = mx.nd.contrib.ROIAlign(alone, mx.nd.array(rois[own]), ROI_SIZE, 1.0 / STRIDES[i], sample_ratio=2)
        out.backward(mx.nd.array(head_grad[own]))
        grads.append(alone.grad.asnumpy())
    return grads


@pytest.mark.parametrize("hybridize", [False, True])
def test_each_roi_is_pooled_at_its_own_level_alone_forward_and_backward(hybridize):
    rng = np.random.default_rng(0)
    size, channels, images, n = (200, 260), 6, 2, 90
    block = _Pooling()
    if hybridize:  # as training runs it: static memory, where a row left unwritten keeps old values
        block.hybridize(static_alloc=True, static_shape=True)
    features = [mx.nd.array(rng.normal(size=(images, channels, -(-size[0] // s), -(-size[1] // s))), dtype="float32")
                for s in STRIDES[:4]]
    for f in features:
        f.attach_grad()
    for _ in range(3):  # new RoIs each call, same shapes: stale rows of an earlier call would show
        rois = _random_rois(rng, n, size, images)
        assert {_own_level(r) for r in rois} == {2, 3, 4, 5} and (rois[:, 0] < 0).any()
        head_grad = rng.normal(size=(n, channels) + ROI_SIZE).astype(np.float32)
        with mx.autograd.record():
            out = block(mx.nd.array(rois), *features)
        out.backward(mx.nd.array(head_grad))
        rows, grads = _each_roi_alone(features, rois, head_grad)
        # a row is the same arithmetic as ROIAlign of that RoI alone: equal to the bit
        np.testing.assert_array_equal(out.asnumpy(), rows)
        # the gradient: the same float32 additions in the same order as each level's RoIs alone ...
        for feature, exact in zip(features, _each_level_alone(features, rois, head_grad)):
            np.testing.assert_array_equal(feature.grad.asnumpy(), exact)
        # ... and, to float32 rounding, the sum of every RoI's own gradient (float64 here): float32
        # sample positions (up to ~70 feature pixels, ~4e-6 of rounding in each bilinear weight) times
        # head gradients of up to ~5 gave differences of at most 1.5e-5 over 5 seeds; a RoI lost or
        # counted twice moves elements by whole terms (0.1-1)
        for feature, grad in zip(features, grads):
            np.testing.assert_allclose(feature.grad.asnumpy(), grad, rtol=1e-4, atol=5e-5)


@pytest.mark.parametrize("name", ["mask_rcnn_fpn_resnet18_v1b"])  # the tiny one: tests/integration
def test_mask_models_build_for_any_classes_with_zeroed_pooling(name):
    from gluondet.config import resolve_model_config
    from gluondet.families import family_name
    from gluondet.models import build_model

    cfg = resolve_model_config(name)
    cfg["data_shape"] = 128
    cfg["kwargs"].update(rpn_test_pre_nms=200, rpn_test_post_nms=20, rcnn_max_dets=20)  # a quick forward
    net = build_model(cfg, ["a", "b"], pretrained_base=False)
    assert family_name(cfg) == "mask_rcnn" and net.classes == ["a", "b"] and net.short == 128
    assert net._pyramid_roi_feats.__func__ is pyramid_roi_features
    with mx.autograd.predict_mode():
        ids, scores, boxes, masks = net(mx.nd.zeros((1, 3, 128, 160)))
    assert masks.shape[:2] == ids.shape[:2] and np.isfinite(masks.asnumpy()).all()


def test_init_from_a_mask_run_keeps_the_weights_of_shared_classes(tmp_path):
    from gluondet.config import resolve_model_config
    from gluondet.models import build_model
    from gluondet.models.pretrained import init_from

    cfg = resolve_model_config("mask_rcnn_tiny")
    source = build_model(cfg, ["circle", "square", "triangle"], pretrained_base=False)
    with mx.autograd.predict_mode():
        source(mx.nd.zeros((1, 3, 128, 128)))  # finish deferred initialization
    source.save_parameters(str(tmp_path / "best.params"))
    net = init_from(str(tmp_path / "best.params"), cfg, ["hexagon", "square"],
                    source_classes=["circle", "square", "triangle"])
    assert net.classes == ["hexagon", "square"]
    assert net._pyramid_roi_feats.__func__ is pyramid_roi_features
    old = source.mask.mask.weight.data().asnumpy()  # one output channel per class
    new = net.mask.mask.weight.data().asnumpy()
    np.testing.assert_array_equal(new[1], old[1])  # square kept its mask predictor
    old_cls = source.class_predictor.weight.data().asnumpy()  # row 0: background
    np.testing.assert_array_equal(net.class_predictor.weight.data().asnumpy()[2], old_cls[2])


def test_init_from_the_coco_mask_detector_offline_is_one_clear_error(tmp_path, monkeypatch):
    from gluondet.config import resolve_model_config
    from gluondet.errors import GluondetError
    from gluondet.models.pretrained import init_from

    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    with pytest.raises(GluondetError, match=r"cannot fetch the pretrained detector "
                                            r"'mask_rcnn_fpn_resnet50_v1b_coco'.*place the file"):
        init_from("mask_rcnn_fpn_resnet50_v1b_coco", resolve_model_config("mask_rcnn_fpn_resnet50_v1b"), ["a"])


def _anchors(net):
    from mxnet.gluon.parameter import Constant

    return {n: p.data().shape for n, p in net._collect_params_with_prefix().items()
            if isinstance(p, Constant) and "anchor" in n}


def test_init_from_a_run_of_another_size_keeps_its_weights_and_the_new_sizes_anchors(tmp_path):
    """A mask run at 128 px (GluonCV's anchor grid) into the same model at 1000 px, whose grid
    grows: every learned weight comes over, the anchors are the 1000 px network's own, and the
    network predicts."""
    from gluondet.config import resolve_model_config
    from gluondet.models import build_model
    from gluondet.models.pretrained import init_from

    small = resolve_model_config("mask_rcnn_tiny")
    source = build_model(small, ["circle", "square"], pretrained_base=False)
    with mx.autograd.predict_mode():
        source(mx.nd.zeros((1, 3, 128, 128)))  # finish deferred initialization
    source.save_parameters(str(tmp_path / "best.params"))
    large = {**small, "data_shape": 1000}  # its longer side reaches 1667 px: past the 1536 px GluonCV's grid covers
    fresh = build_model(large, ["circle", "square"], pretrained_base=False)
    assert _anchors(fresh) != _anchors(source)  # the grid grew: the file's anchors cannot load as they are
    net = init_from(str(tmp_path / "best.params"), large, ["circle", "square"])
    assert net.short == 1000 and _anchors(net) == _anchors(fresh)
    for name, param in source._collect_params_with_prefix().items():
        if name not in _anchors(source):
            np.testing.assert_array_equal(net._collect_params_with_prefix()[name].data().asnumpy(),
                                          param.data().asnumpy(), err_msg=name)
    with mx.autograd.predict_mode():
        ids = net(mx.nd.zeros((1, 3, 1000, 1000)))[0]
    assert ids.shape[0] == 1


def _zoo_stand_in(monkeypatch, seed=0):
    """gluoncv.model_zoo.get_model as the zoo's, its pretrained detectors' weights random (no download
    here); returns the detectors it made. Every other call (gluondet's builders) is GluonCV's own."""
    import gluoncv.model_zoo

    made, original = [], gluoncv.model_zoo.get_model

    def get_model(name, **kwargs):
        if kwargs.get("pretrained") is not True:
            return original(name, **kwargs)
        net = original(name, pretrained=False, pretrained_base=False)
        mx.random.seed(seed)
        net.initialize(mx.init.Normal(0.05))
        with mx.autograd.predict_mode():
            net(mx.nd.zeros((1, 3, 96, 96)))
        made.append(net)
        return net

    monkeypatch.setattr(gluoncv.model_zoo, "get_model", get_model)
    return made


def test_init_from_a_zoo_detector_builds_the_runs_model_at_its_size_with_the_zoos_weights(monkeypatch):
    """``--init-from mask_rcnn_fpn_resnet50_v1b_coco`` (README's) with ``--data-shape 600``: the network is
    the model's, built for 600 px (the zoo's for 800), with every weight of the zoo's, the classes the
    two share kept: what eval, detect and --resume rebuild from the run's config."""
    from gluondet.config import resolve_model_config
    from gluondet.models.pretrained import init_from

    made = _zoo_stand_in(monkeypatch)
    cfg = {**resolve_model_config("mask_rcnn_fpn_resnet50_v1b"), "data_shape": 600}
    net = init_from("mask_rcnn_fpn_resnet50_v1b_coco", cfg, ["person", "helmet"])
    zoo = made[0]
    assert zoo.short == 800 and net.short == 600 and net.classes == ["person", "helmet"]
    zoo_params = zoo._collect_params_with_prefix()
    compared = 0
    for name, param in net._collect_params_with_prefix().items():
        if name in _anchors(net) or any(k in name for k in ("class_predictor", "box_predictor", "mask.mask")):
            continue
        np.testing.assert_array_equal(param.data().asnumpy(), zoo_params[name].data().asnumpy(), err_msg=name)
        compared += 1
    assert compared > 250
    person = zoo.classes.index("person") + 1  # row 0: background
    np.testing.assert_array_equal(net.class_predictor.weight.data().asnumpy()[1],
                                  zoo.class_predictor.weight.data().asnumpy()[person])


def test_a_zoo_detector_of_another_architecture_than_the_model_is_one_line(monkeypatch):
    """GluonCV's VOC Faster R-CNN has 15 anchors per position, its custom one (the model) 9: training
    the zoo's network would leave a run that eval and --resume (which build the model) cannot load."""
    from gluondet.config import resolve_model_config
    from gluondet.errors import GluondetError
    from gluondet.models.pretrained import init_from

    _zoo_stand_in(monkeypatch)
    with pytest.raises(GluondetError, match=r"^--init-from faster_rcnn_resnet50_v1b_voc \(GluonCV's detector\): does "
                                            r"not fit model 'faster_rcnn_resnet50_v1b' \(.*\(15, ") as error:
        init_from("faster_rcnn_resnet50_v1b_voc", resolve_model_config("faster_rcnn_resnet50_v1b"), ["a"])
    assert "\n" not in str(error.value) and "gluondet-init-from-" not in str(error.value)


def test_fpn_faster_rcnn_trains_a_step_on_its_flattened_rpn_targets():
    from gluondet.config import resolve_model_config
    from gluondet.families.rcnn_data import FasterRCNNTrainTransform
    from gluondet.families import get_family
    from gluondet.families.rcnn import FasterRCNNStep
    from gluondet.models import build_model

    cfg = resolve_model_config("faster_rcnn_fpn_resnet50_v1b")
    cfg["data_shape"] = 256
    cfg["kwargs"] = {"rpn_train_pre_nms": 1000, "rpn_train_post_nms": 256, "num_sample": 64}
    net = build_model(cfg, ["a", "b"], pretrained_base=False)
    img = mx.nd.array(np.random.default_rng(0).integers(0, 255, (200, 300, 3)), dtype="uint8")
    label = np.array([[20, 30, 120, 150, 0, 0], [150, 40, 280, 190, 1, 0]], np.float32)
    data, gt, cls_targets, box_targets, box_masks = FasterRCNNTrainTransform(net)(img, label)
    assert cls_targets.shape == (box_targets.shape[0],) and box_targets.shape[1] == 4  # every level, one list
    trainer = mx.gluon.Trainer(get_family("faster_rcnn").trainable_params(net), "sgd", {"learning_rate": 0.001})
    batch = [[mx.nd.array(np.asarray(x))[None]] for x in (data.asnumpy(), gt, cls_targets, box_targets, box_masks)]
    losses = FasterRCNNStep()(net, batch, [mx.cpu()])
    trainer.step(1)
    assert all(np.isfinite(v) for v in losses.values()) and losses["rpn_cls_loss"] > 0


def test_groupnorm_replaces_every_batchnorm_and_trains():
    from gluondet.config import resolve_model_config
    from gluondet.families import get_family
    from gluondet.models import build_model

    cfg = resolve_model_config("mask_rcnn_tiny")
    assert cfg["kwargs"]["norm"] == "groupnorm"
    net = build_model(cfg, ["a", "b"], pretrained_base=False)
    names = list(net.collect_params())
    assert not [n for n in names if "batchnorm" in n or n.endswith(("running_mean", "moving_mean"))]
    gammas = [n for n in names if "groupnorm" in n and n.endswith("_gamma")]
    # ResNet-18: the stem's, 2 in each of its 8 blocks, 3 downsample shortcuts; the box head's 2 convs
    assert len(gammas) == 1 + 16 + 3 + 2
    train = get_family("mask_rcnn").trainable_params(net)
    assert set(gammas) <= set(train)  # every GroupNorm learns (GluonCV freezes only a plain BatchNorm)


def test_an_unknown_norm_is_refused_by_name():
    from gluondet.errors import GluondetError
    from gluondet.models.rcnn_fpn import _kwargs

    with pytest.raises(GluondetError, match="norm 'groupnrom' is not one of batchnorm, groupnorm"):
        _kwargs({}, {"norm": "groupnrom"})


# ----------------------------------------------------------------------------- every input size
# Images as users have them: tiny, large, portrait, landscape (5:3 and beyond: the longer side stops
# at max_size and the shorter one gets less than the data shape).
MIXED_SIZES = [(64, 64), (1600, 1200), (1200, 1600), (1600, 500), (500, 1600)]


def _rcnn(name, data_shape, classes=("a", "b")):
    from gluondet.config import resolve_model_config
    from gluondet.models import build_model

    cfg = resolve_model_config(name)
    cfg["data_shape"] = data_shape
    return build_model(cfg, list(classes), pretrained_base=False)


def _levels(net):
    """(stride, anchor generator) of each RPN level: the strides GluonCV's configs give them."""
    generator = net.rpn.anchor_generator
    if net.num_stages > 1:
        return list(zip(STRIDES, generator))
    return [(16, generator)]  # GluonCV's single-level Faster R-CNN: ResNet's stage 3, stride 16


def _network_anchors(net, height, width):
    """Anchors the network's own RPN anchor generators output for a ``height`` x ``width`` input.

    ResNet's stem and each stride-2 stage round up (7x7/2 with padding 3, 3x3/2 max-pooling with
    padding 1, 3x3/2 or 1x1/2 convolutions), as does P6's 1x1/2 pooling: a level of stride s has
    ceil(H/s) x ceil(W/s) cells (checked against the real backbone below). A generator fed such a
    map cuts its anchors from the grid built into the network, or fails when it is too small."""
    count = 0
    for stride, generator in _levels(net):
        cells = mx.nd.zeros((1, 1, -(-height // stride), -(-width // stride)))
        count += generator(cells).shape[1]
    return count


def _sample(width, height, masks=False):
    """A random image with two objects (and their masks) at its own size."""
    rng = np.random.default_rng(width * 7 + height)
    img = mx.nd.array(rng.integers(0, 255, (height, width, 3)), dtype="uint8")
    label = np.array([[0.1 * width, 0.1 * height, 0.5 * width, 0.6 * height, 0, 0],
                      [0.4 * width, 0.5 * height, 0.9 * width, 0.9 * height, 1, 0]], np.float32)
    if not masks:
        return img, label
    pixels = np.zeros((2, height, width), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(label[:, :4].astype(int)):
        pixels[k, y0:y1, x0:x1] = 1
    return img, label, pixels


def _targets(out):
    """(input image, RPN class targets as one flat array) of a train transform's output."""
    cls_targets = out[3] if len(out) == 6 else out[2]  # Mask R-CNN's carry the masks before them
    if isinstance(cls_targets, (list, tuple)):  # GluonCV's single-level output: [(H, W, anchors)]
        cls_targets = np.concatenate([np.asarray(x).ravel() for x in cls_targets])
    return out[0], np.asarray(cls_targets).ravel()


@pytest.mark.parametrize("name, data_shape", [
    ("faster_rcnn_fpn_resnet50_v1b", 600), ("faster_rcnn_fpn_resnet50_v1b", 800),
    ("faster_rcnn_fpn_resnet50_v1b", 1000),  # past GluonCV's grid (1536 px at stride 4): grown
    ("mask_rcnn_fpn_resnet18_v1b", 800), ("mask_rcnn_fpn_resnet18_v1b", 1000),
    ("faster_rcnn_resnet50_v1b", 600), ("faster_rcnn_resnet50_v1b", 1300),  # past its 2048 px: grown
])
def test_train_transforms_target_every_anchor_the_network_has(name, data_shape):
    """A target per anchor, for images of every size: GluonCV's transforms made targets for a
    128 x 128 grid of anchors (512 px at an FPN's stride 4), and the first step at --data-shape 608
    or more failed in MXNet's reshape ("65787 vs. 159882")."""
    from gluondet.families.rcnn_data import FasterRCNNTrainTransform, MaskRCNNTrainTransform

    net = _rcnn(name, data_shape)
    masks = name.startswith("mask")
    transform = (MaskRCNNTrainTransform if masks else FasterRCNNTrainTransform)(net)
    for width, height in MIXED_SIZES:
        data, cls_targets = _targets(transform(*_sample(width, height, masks)))
        _, h, w = data.shape
        # the resize GluonCV documents: shorter side to data_shape, the longer at most 5/3 of it
        assert max(h, w) <= round(data_shape * 5 / 3) and (min(h, w) == data_shape or max(h, w) == round(data_shape * 5 / 3))
        assert cls_targets.size == _network_anchors(net, h, w), (width, height)
        assert (cls_targets == 1).sum() > 0  # the objects got positive anchors


@pytest.mark.parametrize("name, size", [("faster_rcnn_fpn_resnet50_v1b", (200, 333)),
                                        ("faster_rcnn_resnet50_v1b", (237, 395))])
def test_the_anchor_arithmetic_is_the_backbones(name, size):
    """The cells the tests count (ceil(H/s) x ceil(W/s)) are those of the real feature maps: the RPN
    of the whole network, run on an odd-sized input, outputs as many anchors."""
    net = _rcnn(name, 256)
    data = mx.nd.zeros((1, 3) + size)
    with mx.autograd.train_mode():
        features = net.features(data)
        features = features if isinstance(features, (list, tuple)) else [features]
        anchors = net.rpn(data, *features)[-1]
    anchors = anchors if isinstance(anchors, (list, tuple)) else [anchors]
    assert sum(a.shape[1] for a in anchors) == _network_anchors(net, *size)


def test_gluoncvs_anchor_grid_is_kept_where_it_covers_and_grown_where_it_does_not():
    """The zoo's grid (its COCO weights hold the anchors) up to 921 px (max_size 1535 < 384 x 4);
    past it, a grid with a cell for every position of the largest input at every level."""
    for data_shape, grown in ((800, False), (921, False), (922, True), (1300, True)):
        net = _rcnn("faster_rcnn_fpn_resnet50_v1b", data_shape)
        max_size = round(data_shape * 5 / 3)
        grids = [generator.anchors.shape[2:4] for _, generator in _levels(net)]
        if not grown:
            assert grids == [(384 >> i,) * 2 for i in range(4)] + [(24, 24)]
        for (stride, _), grid in zip(_levels(net), grids):
            assert min(grid) >= -(-max_size // stride), (data_shape, stride, grid)
        assert (grids[0][0] > 384) == grown


def _smallest_square(net, proposals):
    """The smallest side of a square input with at least ``proposals`` anchors, by counting up."""
    side = 32
    while _network_anchors(net, side, side) < proposals:
        side += 1
    return side


@pytest.mark.parametrize("name, data_shape, proposals", [
    ("mask_rcnn_fpn_resnet18_v1b", 64, 2000), ("faster_rcnn_fpn_resnet50_v1b", 64, 2000),
    ("faster_rcnn_resnet50_v1b", 200, 2000),
])
def test_a_data_shape_with_fewer_anchors_than_proposals_is_one_line_naming_the_smallest(name, data_shape, proposals):
    from gluondet.errors import GluondetError

    smallest = _smallest_square(_rcnn(name, 400), proposals)
    assert data_shape < smallest
    with pytest.raises(GluondetError) as caught:
        _rcnn(name, data_shape)
    message = str(caught.value)
    assert "\n" not in message and f"model '{name}'" in message and f"data_shape {data_shape} " in message
    assert f"{proposals} proposals" in message and message.endswith(f"use --data-shape {smallest} or more")
    _rcnn(name, smallest)  # is taken


def _write_mixed_voc(root, sizes):
    from data_helpers import write_voc

    images = {f"img{i}": {"size": (w, h), "objects": [("a", w // 10 + 1, h // 10 + 1, w // 2, h // 2),
                                                     ("b", w // 2, h // 2, w - w // 10, h - h // 10)]}
              for i, (w, h) in enumerate(sizes)}
    return write_voc(root, images)


def _dataset(root):
    from gluondet.config import resolve_dataset
    from gluondet.data import load_dataset

    return load_dataset(resolve_dataset(str(root)), "train")


def test_an_image_too_elongated_for_the_data_shape_is_one_line_naming_it(tmp_path):
    """At data_shape 256 the shorter side of a 1:5.3 image gets 80 px: fewer anchors than the RPN
    keeps in training (MXNet's "Invalid end for end=2000" at its step); at 600 the same image is
    taken, and so it is for validation, which keeps fewer."""
    from gluondet.families import get_family
    from gluondet.errors import GluondetError

    ds = _dataset(_write_mixed_voc(tmp_path / "voc", [(640, 480), (300, 1600), (1600, 500)]))
    net = _rcnn("faster_rcnn_resnet50_v1b", 256, ds.classes)
    assert _network_anchors(net, 427, 80) < 2000 <= _network_anchors(net, 133, 427)  # only img1 has too few
    with pytest.raises(GluondetError) as caught:
        get_family("faster_rcnn").train_loader(net, ds, 256, 1, 0)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "voc" / "JPEGImages" / "img1.jpg"))
    assert "300x1600 px" in message and "80x427" in message and "2000 proposals" in message
    get_family("faster_rcnn").train_loader(_rcnn("faster_rcnn_resnet50_v1b", 600, ds.classes), ds, 600, 1, 0)
    # validation keeps fewer proposals (300): only a far thinner image (427x11: 27 x 1 cells) has too few
    get_family("faster_rcnn").val_loader(net, ds, 256, 1, 0)
    thin = _dataset(_write_mixed_voc(tmp_path / "thin", [(640, 480), (40, 1600)]))
    assert _network_anchors(net, 427, 11) < 300
    with pytest.raises(GluondetError, match=r"^\S+img1\.jpg: 40x1600 px .* 300 proposals the RPN keeps per image"):
        get_family("faster_rcnn").val_loader(net, thin, 256, 1, 0)


@pytest.mark.parametrize("batch_size, devices, sizes", [  # one step each: a batch of these images
    (2, 1, [(1600, 500), (500, 1600)]),
    (2, 2, [(64, 64), (1600, 500)]),
    (3, 2, [(1600, 1200), (1200, 1600), (500, 1600)]),  # two images on cpu(0), one on cpu(1)
])
def test_the_fpn_model_steps_on_mixed_sizes_on_its_devices(batch_size, devices, sizes, tmp_path):
    """faster_rcnn_fpn_resnet50_v1b from scratch through the real loader and step, on images of
    mixed sizes: at data_shape 320 the longer side of each batch's 5:3-or-longer image reaches
    533 px, past the 512 px of GluonCV's default target grid at stride 4."""
    from gluondet.families import get_family

    ds = _dataset(_write_mixed_voc(tmp_path / "voc", sizes))
    ctx_list = [mx.cpu(i) for i in range(devices)]
    net = _rcnn("faster_rcnn_fpn_resnet50_v1b", 320, ds.classes)
    loader = get_family("faster_rcnn").train_loader(net, ds, 320, batch_size, 0, seed=1)
    with mx.autograd.predict_mode():
        net(mx.nd.zeros((1, 3, 320, 320)))  # finish deferred initialization: the weights before
    step = get_family("faster_rcnn").make_step()
    step.prepare(net, ctx_list)
    params = get_family("faster_rcnn").trainable_params(net)
    trainer = mx.gluon.Trainer(params, "sgd", {"learning_rate": 0.01}, kvstore="device")
    before = {name: p.data(ctx_list[-1]).asnumpy() for name, p in params.items() if p.grad_req != "null"}
    net.hybridize(static_alloc=True)
    seen = []
    for batch in loader:
        losses = step(net, batch, ctx_list)
        trainer.step(step.step_batch_size(batch))
        assert all(np.isfinite(v) for v in losses.values()) and losses["rpn_cls_loss"] > 0, losses
        seen += [tuple(image.shape[2:]) for image in batch[0]]
    assert len(seen) == len(sizes) and max(max(s) for s in seen) == 533  # every image, 5:3 and beyond
    moved = [n for n, value in before.items() if np.abs(params[n].data(ctx_list[-1]).asnumpy() - value).max() > 0]
    assert len(moved) > len(before) // 2
