"""The tiny SSD is a real GluonCV SSD: its outputs, anchors, set_nms and reset_class behave as the zoo's."""
import numpy as np
import pytest

mx = pytest.importorskip("mxnet")

from gluoncv.model_zoo.ssd import SSD  # noqa: E402

from gluondet.models.tiny_ssd import tiny_ssd  # noqa: E402

CLASSES = ["circle", "square", "triangle"]


def _anchors_and_preds(net, data_shape, batch=2):
    with mx.autograd.train_mode():
        return net(mx.nd.zeros((batch, 3, data_shape, data_shape)))


@pytest.mark.parametrize("data_shape", [128, 192])
def test_training_outputs_and_anchors_match_the_feature_maps(data_shape):
    net = tiny_ssd(CLASSES, pretrained_base=False, data_shape=data_shape)
    assert isinstance(net, SSD) and net.classes == CLASSES
    net.initialize()
    cls_preds, box_preds, anchors = _anchors_and_preds(net, data_shape)
    # 4 anchors (2 sizes + ratios 2 and 1/2) per cell of the stride 8, 16 and 32 maps
    cells = sum((data_shape // stride) ** 2 for stride in (8, 16, 32))
    assert anchors.shape == (1, 4 * cells, 4)
    assert cls_preds.shape == (2, 4 * cells, len(CLASSES) + 1)
    assert box_preds.shape == (2, 4 * cells, 4)
    centers = anchors[0, :, :2].asnumpy()
    assert centers.min() > 0 and centers.max() < data_shape  # anchors (cx, cy, w, h) lie on the image
    sides = anchors[0, :, 2:].asnumpy()
    assert 0.05 * data_shape < sides.min() and sides.max() < 0.8 * data_shape


def test_inference_output_set_nms_and_hybridize():
    net = tiny_ssd(CLASSES, data_shape=128)
    net.initialize()
    net.hybridize(static_alloc=True, static_shape=True)
    net.set_nms(nms_thresh=0.45, nms_topk=200, post_nms=20)
    ids, scores, boxes = net(mx.nd.random.uniform(shape=(2, 3, 128, 128)))
    assert ids.shape == (2, 20, 1) and scores.shape == (2, 20, 1) and boxes.shape == (2, 20, 4)
    found = ids.asnumpy()[ids.asnumpy() >= 0]
    assert set(found.tolist()) <= {0.0, 1.0, 2.0}


def test_reset_class_keeps_the_backbone_and_resizes_the_class_predictors():
    net = tiny_ssd(CLASSES, data_shape=128)
    net.initialize()
    _anchors_and_preds(net, 128)
    backbone = {k: v.data().asnumpy().copy() for k, v in net.features.collect_params().items()}
    net.reset_class(["circle", "star"], reuse_weights=["circle"])
    cls_preds, _, _ = _anchors_and_preds(net, 128)
    assert cls_preds.shape[-1] == 3
    for name, value in net.features.collect_params().items():
        np.testing.assert_array_equal(value.data().asnumpy(), backbone[name])


def test_targets_from_gluoncv_transform_and_loss_train_one_step():
    from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform
    from gluoncv.loss import SSDMultiBoxLoss

    net = tiny_ssd(CLASSES, data_shape=128)
    net.initialize()
    _, _, anchors = _anchors_and_preds(net, 128, batch=1)
    transform = SSDDefaultTrainTransform(128, 128, anchors)
    image = mx.nd.array(np.random.default_rng(0).integers(0, 255, (160, 160, 3)), dtype="uint8")
    label = np.array([[20, 30, 80, 90, 1, 0], [100, 100, 150, 140, 2, 0]], np.float32)
    x, cls_target, box_target = transform(image, label)
    assert x.shape == (3, 128, 128) and (cls_target.asnumpy() > 0).any()
    trainer = mx.gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01, "momentum": 0.9})
    with mx.autograd.record():
        cls_preds, box_preds, _ = net(x.expand_dims(0))
        total, _, _ = SSDMultiBoxLoss()(cls_preds, box_preds, cls_target.expand_dims(0), box_target.expand_dims(0))
    mx.autograd.backward(total)
    trainer.step(1)
    assert np.isfinite(total[0].asnumpy()).all() and total[0].asscalar() > 0


def test_refuses_pretrained_base():
    with pytest.raises(ValueError, match="pretrained"):
        tiny_ssd(CLASSES, pretrained_base=True)
