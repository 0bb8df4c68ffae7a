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
    net = build_model(cfg, ["a", "b"], pretrained_base=False)
    assert model_family(cfg) == "mask_rcnn" and net.classes == ["a", "b"] and net.short == 128
    assert net._pyramid_roi_feats.__func__ is pyramid_roi_features
    with mx.autograd.predict_mode():
        ids, scores, boxes, masks = net(mx.nd.zeros((1, 3, 128, 160)))
    assert masks.shape[:2] == ids.shape[:2] and np.isfinite(masks.asnumpy()).all()
