"""FPN R-CNN builders: RoI pooling that never reads uninitialized memory, and the models table rows."""
import types

import mxnet as mx
import numpy as np
import pytest

from gluondet.models.rcnn_fpn import pyramid_roi_features


def test_each_roi_is_pooled_from_its_own_level_and_nothing_else():
    net = types.SimpleNamespace(_min_stage=2, _max_stage=6)
    rng = np.random.default_rng(0)
    strides = (4, 8, 16, 32, 64)
    features = [mx.nd.array(rng.normal(size=(1, 3, 256 // s, 256 // s))) for s in strides]
    # sizes chosen for levels 2, 3, 4, 5 (sqrt(area) 40, 120, 300, 500 against the canonical 224)
    rois = mx.nd.array([[0, 10, 10, 49, 49], [0, 0, 0, 119, 119], [0, 0, 0, 299, 299], [0, 0, 0, 499, 499]])
    for _ in range(3):  # memory a kernel left unwritten would show up as differing runs
        out = pyramid_roi_features(net, mx.nd, features, rois, (7, 7), strides).asnumpy()
        for row, level in enumerate((2, 3, 4, 5)):
            alone = mx.nd.contrib.ROIAlign(features[level - 2], rois[row:row + 1], (7, 7), 1.0 / strides[level - 2],
                                           sample_ratio=2).asnumpy()[0]
            np.testing.assert_allclose(out[row], alone, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["mask_rcnn_fpn_resnet18_v1b"])  # the tiny one: tests/integration
def test_mask_models_build_for_any_classes_with_zeroed_pooling(name):
    from gluondet.config import resolve_model_config
    from gluondet.models import build_model, model_family

    cfg = resolve_model_config(name)
    cfg["data_shape"] = 128
    cfg["kwargs"].update(rpn_test_pre_nms=200, rpn_test_post_nms=20, rcnn_max_dets=20)  # a quick forward
    net = build_model(cfg, ["a", "b"], pretrained_base=False)
    assert model_family(cfg) == "mask_rcnn" and net.classes == ["a", "b"] and net.short == 128
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


def test_fpn_faster_rcnn_trains_a_step_on_its_flattened_rpn_targets():
    from gluondet.config import resolve_model_config
    from gluondet.data.loader import FasterRCNNTrainTransform
    from gluondet.engine.steps import FasterRCNNStep, trainable_params
    from gluondet.models import build_model

    cfg = resolve_model_config("faster_rcnn_fpn_resnet50_v1b")
    cfg["data_shape"] = 256
    cfg["kwargs"] = {"rpn_train_pre_nms": 1000, "rpn_train_post_nms": 256, "num_sample": 64}
    net = build_model(cfg, ["a", "b"], pretrained_base=False)
    img = mx.nd.array(np.random.default_rng(0).integers(0, 255, (200, 300, 3)), dtype="uint8")
    label = np.array([[20, 30, 120, 150, 0, 0], [150, 40, 280, 190, 1, 0]], np.float32)
    data, gt, cls_targets, box_targets, box_masks = FasterRCNNTrainTransform(net)(img, label)
    assert cls_targets.shape == (box_targets.shape[0],) and box_targets.shape[1] == 4  # every level, one list
    trainer = mx.gluon.Trainer(trainable_params(net, "faster_rcnn"), "sgd", {"learning_rate": 0.001})
    batch = [[mx.nd.array(np.asarray(x))[None]] for x in (data.asnumpy(), gt, cls_targets, box_targets, box_masks)]
    losses = FasterRCNNStep()(net, batch, [mx.cpu()])
    trainer.step(1)
    assert all(np.isfinite(v) for v in losses.values()) and losses["rpn_cls_loss"] > 0


def test_groupnorm_replaces_every_batchnorm_and_trains():
    from gluondet.config import resolve_model_config
    from gluondet.engine.steps import trainable_params
    from gluondet.models import build_model

    cfg = resolve_model_config("mask_rcnn_tiny")
    assert cfg["kwargs"]["norm"] == "groupnorm"
    net = build_model(cfg, ["a", "b"], pretrained_base=False)
    names = list(net.collect_params())
    assert not [n for n in names if "batchnorm" in n or n.endswith(("running_mean", "moving_mean"))]
    gammas = [n for n in names if "groupnorm" in n and n.endswith("_gamma")]
    # ResNet-18: the stem's, 2 in each of its 8 blocks, 3 downsample shortcuts; the box head's 2 convs
    assert len(gammas) == 1 + 16 + 3 + 2
    train = trainable_params(net, "mask_rcnn")
    assert set(gammas) <= set(train)  # every GroupNorm learns (GluonCV freezes only a plain BatchNorm)


def test_an_unknown_norm_is_refused_by_name():
    from gluondet.errors import GluondetError
    from gluondet.models.rcnn_fpn import _kwargs

    with pytest.raises(GluondetError, match="norm 'groupnrom' is not one of batchnorm, groupnorm"):
        _kwargs({}, {"norm": "groupnrom"})
