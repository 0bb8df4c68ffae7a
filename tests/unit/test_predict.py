"""The Detector: listing images, preprocessing as in training, boxes in original pixels, batching."""
import os
import time

import cv2
import numpy as np
import pytest

from gluondet.errors import GluondetError
from gluondet.image import list_images
from gluondet.pipeline import detect_files
from gluondet.predict import Detector, ModelInfo, _postprocess
from gluondet.run_folder import RunFolder

CLASSES = ["circle", "square", "triangle"]
DATA_SHAPE = 64


@pytest.fixture(scope="module")
def detector():
    import mxnet as mx

    from gluondet.models.tiny_ssd import tiny_ssd

    mx.random.seed(0)
    net = tiny_ssd(CLASSES, data_shape=DATA_SHAPE)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, DATA_SHAPE, DATA_SHAPE)))
    return Detector(net, ModelInfo(classes=CLASSES, family="ssd", data_shape=DATA_SHAPE))


# ----------------------------------------------------------------------------- listing images
def test_list_images_keeps_images_and_reports_the_rest(tmp_path):
    for name in ("b.jpg", "a.PNG", "notes.txt", ".hidden.jpg.swp"):
        (tmp_path / name).write_bytes(b"x")
    images, left_out = list_images([tmp_path])
    assert [p.name for p in images] == ["a.PNG", "b.jpg"]
    assert [p.name for p in left_out] == ["notes.txt"]
    with pytest.raises(GluondetError, match="nothere"):
        list_images([tmp_path / "nothere.jpg"])


# ----------------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("size", [(200, 150), (40, 30), (100, 50)])  # shrink, enlarge, mixed
def test_preprocessing_matches_gluoncv_ssd_val_transform(detector, size):
    import mxnet as mx
    from gluoncv.data.transforms.presets.ssd import SSDDefaultValTransform

    w, h = size
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    x, scale = detector.preprocess(image)
    ref, _ = SSDDefaultValTransform(DATA_SHAPE, DATA_SHAPE)(mx.nd.array(image, dtype=np.uint8),
                                                            np.zeros((0, 5), np.float32))
    assert scale == (DATA_SHAPE / w, DATA_SHAPE / h)
    # same interpolation; 1/255 of a step divided by std is ~0.017 (rounding differences)
    np.testing.assert_allclose(x, ref.asnumpy(), atol=0.02)


def test_boxes_are_mapped_back_to_original_pixels():
    # one image 256 wide x 512 tall, seen by the network at 128 x 128
    ids = np.array([[[1], [0], [-1]]], np.float32)
    scores = np.array([[[0.9], [0.3], [0.99]]], np.float32)
    boxes = np.array([[[10, 20, 50, 60], [0, 0, 5, 5], [1, 1, 2, 2]]], np.float32)
    dets = _postprocess((ids, scores, boxes), 0, (128 / 256, 128 / 512), (512, 256, 3),
                        thresh=0.5, max_boxes=10)
    np.testing.assert_allclose(dets.boxes, [[20, 80, 100, 240]])  # x * 2, y * 4
    assert dets.class_ids.tolist() == [1]  # the -1 (no detection) is dropped, 0.3 < thresh


def test_batched_detection_equals_one_by_one(detector):
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for w, h in [(80, 60), (64, 64), (50, 90)]]
    batched = detector.detect(images, thresh=0.0, max_boxes=20, batch_size=2)
    for image, got in zip(images, batched):
        alone = detector.detect([image], thresh=0.0, max_boxes=20, batch_size=1)[0]
        np.testing.assert_allclose(got.boxes, alone.boxes, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(got.scores, alone.scores, rtol=1e-4, atol=1e-5)
        assert len(got) == 20
        h, w = image.shape[:2]
        assert (got.boxes[:, [0, 2]] <= w).all() and (got.boxes[:, [1, 3]] <= h).all()


def test_detect_files_goes_on_after_a_bad_file(detector, tmp_path):
    cv2.imwrite(str(tmp_path / "ok1.png"), np.full((30, 40, 3), 90, np.uint8))
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    cv2.imwrite(str(tmp_path / "ok2.png"), np.full((30, 40, 3), 20, np.uint8))
    paths = [tmp_path / n for n in ("ok1.png", "bad.jpg", "ok2.png")]
    results = list(detect_files(detector, paths, thresh=0.0, batch_size=2, progress=False))
    assert [r.path.name for r in results] == ["ok1.png", "bad.jpg", "ok2.png"]
    assert results[1].error and "bad.jpg" in results[1].error and results[1].detections is None
    assert results[0].detections is not None and results[2].detections is not None


# ----------------------------------------------------------------------------- anchors
def test_anchor_layers_are_the_networks_own_anchors():
    import mxnet as mx
    from mxnet import autograd

    from gluondet.models.tiny_ssd import tiny_ssd

    net = tiny_ssd(CLASSES, data_shape=DATA_SHAPE)
    net.initialize()
    detector = Detector(net, ModelInfo(classes=CLASSES, family="ssd", data_shape=DATA_SHAPE),
                        hybridize=False)
    # independent reference: SSD returns all its anchors (centre x, y, w, h) in training mode
    with autograd.train_mode():
        _, _, anchors = net(mx.nd.zeros((1, 3, DATA_SHAPE, DATA_SHAPE)))
    ref = anchors.asnumpy().reshape(-1, 4)
    ref = np.stack([ref[:, 0] - ref[:, 2] / 2, ref[:, 1] - ref[:, 3] / 2,
                    ref[:, 0] + ref[:, 2] / 2, ref[:, 1] + ref[:, 3] / 2], axis=1)
    # an image twice the input size: anchors scale by 2
    layers = detector.anchor_layers(2 * DATA_SHAPE, 2 * DATA_SHAPE)
    ours = np.concatenate([layer.boxes.reshape(-1, 4) for layer in layers])
    np.testing.assert_allclose(ours, ref * 2, rtol=1e-5, atol=1e-3)
    # the anchors "at" the centre are centred near the image centre
    centre = layers[-1].at(0.5, 0.5)
    cx = (centre[:, 0] + centre[:, 2]) / 2
    assert np.all(np.abs(cx - DATA_SHAPE) <= layers[-1].stride[0])


# ----------------------------------------------------------------------------- choosing the run
def test_latest_run_is_the_newest_weights(tmp_path):
    for name, age in (("old", 100), ("new", 10), ("empty", 0)):
        run = RunFolder.create(tmp_path / name)
        run.write_info({"model": {"name": "m"}}, ["a"])
        run.unlock()
    for name, age in (("old", 100), ("new", 10)):
        p = tmp_path / name / "best.params"
        p.write_bytes(b"x")
        os.utime(p, (time.time() - age, time.time() - age))
    assert RunFolder.latest(tmp_path).path.name == "new"
    with pytest.raises(GluondetError, match="no trained run"):
        RunFolder.latest(tmp_path / "empty")
