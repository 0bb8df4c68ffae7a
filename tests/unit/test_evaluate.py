"""evaluate() over a DataLoader with a stand-in network, against GluonCV's metric fed directly."""
import mxnet as mx
import numpy as np
import pytest
from gluoncv.data.batchify import Append, Tuple
from gluoncv.utils.metrics.voc_detection import VOC07MApMetric as GluonCVVOC07
from mxnet import gluon

from gluondet.eval import make_metric
from gluondet.eval.evaluate import evaluate

NUM_DETS = 6
CLASSES = ["a", "b"]


class ReplayNet(gluon.HybridBlock):
    """Returns the detections written into its input image: row 0 of channel 0 holds NUM_DETS
    boxes, row 1 their class ids, row 2 their scores (so a hybridized graph can replay them)."""

    def hybrid_forward(self, F, x):
        boxes = F.slice(x, begin=(None, 0, 0, 0), end=(None, 1, 1, 4 * NUM_DETS))
        ids = F.slice(x, begin=(None, 0, 1, 0), end=(None, 1, 2, NUM_DETS))
        scores = F.slice(x, begin=(None, 0, 2, 0), end=(None, 1, 3, NUM_DETS))
        return (ids.reshape((0, NUM_DETS, 1)), scores.reshape((0, NUM_DETS, 1)),
                boxes.reshape((0, NUM_DETS, 4)))


def make_image(rng, height, width, num_gts=3):
    """An input image carrying detections, its padded label (num_gts, 6), and the detections."""
    m = rng.integers(0, num_gts + 1)
    label = np.full((num_gts, 6), -1, np.float32)
    xy = rng.uniform(0, [width - 20, height - 20], (m, 2))
    label[:m, :2] = xy
    label[:m, 2:4] = np.minimum(xy + rng.uniform(10, 60, (m, 2)), [width - 1, height - 1])
    label[:m, 4] = rng.integers(0, len(CLASSES), m)
    label[:m, 5] = rng.random(m) < 0.2
    boxes = np.tile(rng.uniform(0, 20, (1, 4)), (NUM_DETS, 1)) + [0, 0, 30, 30]
    ids = rng.integers(-1, len(CLASSES), NUM_DETS).astype(np.float32)
    for k in range(min(m, NUM_DETS)):
        boxes[k] = label[k, :4] + rng.normal(0, 3, 4)
        ids[k] = label[k, 4]
    # stretch some boxes past the right and bottom edges: only clipping makes them hits
    boxes[:, 2:] += np.where(boxes[:, 2:] > [width - 12, height - 12], 40, 0)
    scores = rng.random(NUM_DETS).astype(np.float32)
    image = np.zeros((3, height, width), np.float32)
    image[0, 0, :4 * NUM_DETS] = boxes.reshape(-1)
    image[0, 1, :NUM_DETS] = ids
    image[0, 2, :NUM_DETS] = scores
    clipped = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    return image, label, (clipped, ids, scores)


def reference_result(metric, images, scales=None):
    """``metric`` fed directly with the clipped detections (and ground truth) times the scales."""
    for i, (_, label, (boxes, ids, scores)) in enumerate(images):
        s = 1.0 if scales is None else scales[i]
        metric.update(boxes[None] * s, ids[None], scores[None], label[None, :, :4] * s,
                      label[None, :, 4], label[None, :, 5])
    return metric.get()


def reference_map(images, scales=None):
    return reference_result(GluonCVVOC07(class_names=CLASSES), images, scales)


def test_stacked_batches_split_over_two_devices():
    rng = np.random.default_rng(0)
    images = [make_image(rng, 64, 96) for _ in range(11)]
    dataset = gluon.data.SimpleDataset([(mx.nd.array(im), mx.nd.array(lb)) for im, lb, _ in images])
    loader = gluon.data.DataLoader(dataset, batch_size=4, last_batch="keep")
    net = ReplayNet()
    net.hybridize()
    result = evaluate(net, loader, [mx.cpu(0), mx.cpu(1)], make_metric("voc07", CLASSES),
                      progress=False)
    names, values = reference_map(images)
    assert result["metric"] == "voc07"
    assert result["map"] == pytest.approx(values[-1], abs=1e-9) and 0 < result["map"] < 1
    assert result["per_class"] == pytest.approx(dict(zip(names[:-1], values[:-1])), abs=1e-9)


def test_faster_rcnn_style_batches_with_image_scales():
    rng = np.random.default_rng(1)
    sizes = [(64, 96), (80, 64), (64, 64), (72, 100), (64, 120), (90, 90), (100, 70)]
    images = [make_image(rng, h, w) for h, w in sizes]
    scales = [1.5, 0.5, 2.0, 1.0, 1.25, 3.0, 0.75]
    dataset = gluon.data.SimpleDataset([(mx.nd.array(im), mx.nd.array(lb), mx.nd.array([s]))
                                        for (im, lb, _), s in zip(images, scales)])
    loader = gluon.data.DataLoader(dataset, batch_size=2, last_batch="keep",
                                   batchify_fn=Tuple(Append(), Append(), Append()))
    result = evaluate(ReplayNet(), loader, [mx.cpu(0), mx.cpu(1)], make_metric("voc07", CLASSES),
                      progress=False)
    names, values = reference_map(images, scales)
    assert result["map"] == pytest.approx(values[-1], abs=1e-6) and 0 < result["map"] < 1

    # COCO's small/medium/large split depends on the absolute size, so it sees the scales
    result = evaluate(ReplayNet(), loader, [mx.cpu(0), mx.cpu(1)], make_metric("coco", CLASSES),
                      progress=False)
    names, values = reference_result(make_metric("coco", CLASSES), images, scales)
    expected = {k: None if np.isnan(v) else v for k, v in zip(names, values)}
    assert result["coco"] == pytest.approx({k: expected[k] for k in result["coco"]}, abs=1e-6)
    assert result["map"] == pytest.approx(expected["mAP"], abs=1e-6)
    names, unscaled = reference_result(make_metric("coco", CLASSES), images)
    assert not np.allclose(values, unscaled, equal_nan=True)
