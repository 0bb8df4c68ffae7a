"""gluondet's VOC metrics against GluonCV's (the reference they replace) and hand-computed APs."""
import math
import warnings

import mxnet as mx
import numpy as np
import pytest
from gluoncv.utils.metrics import voc_detection as gcv_voc

from gluondet.eval import METRIC_CLASSES, format_ap_table, make_metric, metric_result
from gluondet.eval.voc_metric import (VOC07MApMetric, VOCMApMetric, _descending, _first_of_each,
                                      _stable_argsort)
from gluondet.errors import GluondetError

PAIRS = [(gcv_voc.VOCMApMetric, VOCMApMetric), (gcv_voc.VOC07MApMetric, VOC07MApMetric)]


def random_batches(rng, num_images, max_dets, max_gts, num_classes, tied_scores=False, batch=4):
    """Padded batches like a validation loop feeds a metric: boxes near the ground truth (so there
    are true positives), random boxes, wrong labels, difficult/crowd flags, empty images."""
    batches = []
    for start in range(0, num_images, batch):
        size = min(batch, num_images - start)
        n_pad, m_pad = rng.integers(0, max_dets + 1), rng.integers(0, max_gts + 1)
        pb, pl, ps = (np.full((size, n_pad, k), -1, np.float32) for k in (4, 1, 1))
        gb, gl, gd = (np.full((size, m_pad, k), -1, np.float32) for k in (4, 1, 1))
        for i in range(size):
            m = rng.integers(0, m_pad + 1)
            xy, wh = rng.uniform(0, 80, (m, 2)), rng.uniform(1, 40, (m, 2))
            gb[i, :m] = np.concatenate([xy, xy + wh], 1)
            gl[i, :m, 0] = rng.integers(0, num_classes, m)
            gd[i, :m, 0] = rng.choice([0, 0, 0, 1, 2], m)
            n = rng.integers(0, n_pad + 1)
            source = rng.integers(0, max(m, 1), n)
            near = (gb[i, source] if m else np.tile([10., 10., 30., 30.], (n, 1)))
            boxes = near + rng.normal(0, 6, (n, 4))
            xy, wh = rng.uniform(0, 80, (n, 2)), rng.uniform(1, 40, (n, 2))
            far = rng.random(n) < 0.3
            boxes[far] = np.concatenate([xy, xy + wh], 1)[far]
            pb[i, :n] = boxes
            labels = gl[i, source, 0] if m else rng.integers(0, num_classes, n)
            pl[i, :n, 0] = np.where(rng.random(n) < 0.2, rng.integers(0, num_classes, n), labels)
            ps[i, :n, 0] = rng.integers(0, 5, n) / 4 if tied_scores else rng.random(n)
        batches.append((pb, pl, ps, gb, gl, gd))
    return batches


def run(metric_class, batches, class_names, with_flags=True, to_nd=False):
    metric = metric_class(iou_thresh=0.5, class_names=class_names)
    for batch in batches:
        batch = batch if with_flags else batch[:5]
        if to_nd:
            batch = [mx.nd.array(a) for a in batch]
        metric.update(*batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GluonCV's nanmean over all-NaN
        return metric.get()


def assert_same(reference, ours):
    assert ours[0] == reference[0]
    np.testing.assert_allclose(np.array(ours[1], float), np.array(reference[1], float),
                               rtol=0, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("tied_scores", [False, True])
def test_equals_gluoncv_on_random_cases(tied_scores):
    rng = np.random.default_rng(7 + tied_scores)
    names = ["c%d" % i for i in range(6)]  # class ids 6, 7 also occur: GluonCV averages them too
    compared = 0
    for case in range(60):
        batches = random_batches(rng, rng.integers(1, 12), rng.integers(0, 40), rng.integers(0, 8),
                                 rng.integers(1, 9), tied_scores)
        class_names = None if case % 3 == 0 else names
        for reference_class, our_class in PAIRS:
            for with_flags in (True, False):
                try:
                    reference = run(reference_class, batches, class_names, with_flags)
                except ValueError:  # GluonCV cannot score a run with no labels at all
                    continue
                assert_same(reference, run(our_class, batches, class_names, with_flags))
                compared += 1
    assert compared > 200


def test_equals_gluoncv_with_ties_in_large_groups():
    # Many detections of one class per image with only five distinct scores: numpy's argsort is
    # not stable past 16 elements, and the tie order decides which detection is the TP.
    rng = np.random.default_rng(3)
    for _ in range(25):
        batches = random_batches(rng, rng.integers(1, 5), rng.integers(20, 80), rng.integers(1, 10),
                                 2, tied_scores=True)
        for reference_class, our_class in PAIRS:
            assert_same(run(reference_class, batches, ["a", "b"]),
                        run(our_class, batches, ["a", "b"]))


def test_equals_gluoncv_with_float64_and_special_scores():
    # Scores as a user's numpy code may pass them: float64 that differ below float32's precision
    # (ties in float32, not in float64), NaN, infinities, -0.0 next to 0.0, float16.
    rng = np.random.default_rng(5)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40, 0.5], np.float64)
    compared = 0
    for case in range(60):
        batches = random_batches(rng, rng.integers(1, 10), rng.integers(1, 30), rng.integers(1, 8),
                                 rng.integers(1, 5), tied_scores=case % 2 == 1)
        dtype = (np.float64, np.float32, np.float16)[case % 3]
        for k, (pb, pl, ps, gb, gl, gd) in enumerate(batches):
            scores = ps.astype(np.float64)
            scores += rng.integers(0, 3, scores.shape) * 1e-12  # distinct in float64 only
            special = rng.random(scores.shape) < 0.1
            scores[special] = rng.choice(specials, int(special.sum()))
            batches[k] = (pb, pl, scores.astype(dtype), gb, gl, gd)
        for reference_class, our_class in PAIRS:
            try:
                reference = run(reference_class, batches, None)
            except ValueError:  # GluonCV cannot score a run with no labels at all
                continue
            assert_same(reference, run(our_class, batches, None))
            compared += 1
    assert compared > 100


def test_equals_gluoncv_with_more_groups_than_one_radix_pass():
    # 1,100 images x 60 class ids: the (class, image) keys pass 2**16, so they sort in two passes.
    rng = np.random.default_rng(9)
    batches = random_batches(rng, 1100, 6, 4, 60, batch=50)
    batches[-1][1][0, :1, 0] = 59  # the highest class id occurs, whatever the draw
    for reference_class, our_class in PAIRS:
        assert_same(run(reference_class, batches, None), run(our_class, batches, None))


def test_radix_sorts_equal_numpys_stable_sort():
    # the sorts the matching rests on, against numpy's own stable (timsort/radix) argsort
    rng = np.random.default_rng(2)
    for bits in (1, 8, 16, 17, 31, 32, 47, 63):
        for dtype in (np.int64, np.uint64, np.uint32):
            if bits >= 8 * np.dtype(dtype).itemsize - (dtype is np.int64):
                continue
            for n in (0, 1, 2, 17, 5000):
                keys = rng.integers(0, 2 ** bits, n, dtype=np.uint64).astype(dtype)
                keys[rng.random(n) < 0.3] = keys[0] if n else 0  # many equal keys
                np.testing.assert_array_equal(_stable_argsort(keys), np.argsort(keys, kind="stable"))
                np.testing.assert_array_equal(keys[_first_of_each(keys)],
                                              np.unique(keys, return_index=True)[0])
                np.testing.assert_array_equal(_first_of_each(keys),
                                              np.unique(keys, return_index=True)[1])
    specials = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40, 1e-300, 3.0, -3.0]
    for dtype in (np.float16, np.float32, np.float64):
        for n in (0, 1, 3, 30, 3000):
            scores = np.concatenate([rng.choice(specials, n // 3),
                                     rng.integers(-4, 5, n // 3) / 4, rng.normal(0, 1e3, n - 2 * (n // 3))])
            scores = rng.permutation(scores).astype(dtype)
            np.testing.assert_array_equal(_descending(scores), np.argsort(scores, kind="stable")[::-1])


def test_accepts_ndarrays_and_per_device_lists():
    rng = np.random.default_rng(11)
    batches = random_batches(rng, 8, 20, 6, 3, batch=4)
    reference = run(gcv_voc.VOCMApMetric, batches, ["a", "b", "c"])
    assert_same(reference, run(VOCMApMetric, batches, ["a", "b", "c"], to_nd=True))
    # the way a multi-device loop passes one batch: lists of per-device halves
    metric = VOCMApMetric(class_names=["a", "b", "c"])
    for batch in batches:
        metric.update(*[[mx.nd.array(a[:2]), mx.nd.array(a[2:])] for a in batch])
    assert_same(reference, metric.get())
    # one image per device, each padded only to its own length (as Faster R-CNN validation has it)
    metric = VOCMApMetric(class_names=["a", "b", "c"])
    for pb, pl, ps, gb, gl, gd in batches:
        parts = []
        for i in range(len(pb)):
            n = int((pl[i, :, 0] >= 0).sum()) + i % 2  # some keep one padding entry
            m = int((gl[i, :, 0] >= 0).sum())
            parts.append([pb[i:i + 1, :n], pl[i:i + 1, :n], ps[i:i + 1, :n],
                          gb[i:i + 1, :m], gl[i:i + 1, :m], gd[i:i + 1, :m]])
        metric.update(*[[mx.nd.array(p[k]) for p in parts] for k in range(6)])
    assert_same(reference, metric.get())


def test_small_argsort_keeps_ties_in_order():
    # _image_order relies on numpy sorting up to 16 elements stably; guard it against upgrades.
    rng = np.random.default_rng(0)
    for n in range(1, 17):
        for _ in range(20):
            scores = rng.integers(0, 3, n).astype(np.float32)
            np.testing.assert_array_equal(scores.argsort(), np.argsort(scores, kind="stable"))


def one_image(dets, gts):
    """Arrays for one image: dets [(box, label, score)], gts [(box, label, flag)]."""
    pb = np.array([[d[0] for d in dets]], np.float32).reshape(1, -1, 4)
    pl = np.array([[d[1] for d in dets]], np.float32).reshape(1, -1)
    ps = np.array([[d[2] for d in dets]], np.float32).reshape(1, -1)
    gb = np.array([[g[0] for g in gts]], np.float32).reshape(1, -1, 4)
    gl = np.array([[g[1] for g in gts]], np.float32).reshape(1, -1)
    gd = np.array([[g[2] for g in gts]], np.float32).reshape(1, -1)
    return pb, pl, ps, gb, gl, gd


def test_hand_made_pr_curve():
    # two objects; detections ranked TP, FP (a duplicate of the first), TP:
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    a, b = [0, 0, 9, 9], [50, 50, 69, 69]
    batch = one_image([(a, 0, 0.9), (a, 0, 0.8), (b, 0, 0.7)], [(a, 0, 0), (b, 0, 0)])
    area, voc07 = VOCMApMetric(class_names=["obj"]), VOC07MApMetric(class_names=["obj"])
    for metric in (area, voc07):
        metric.update(*batch)
    assert area.get()[1][0] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # 11 points: recall >= 0, .1, ..., .5 reach precision 1; .6 ... 1 reach 2/3
    assert voc07.get()[1][0] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    assert area.get()[0] == ["obj", "mAP"]


def test_difficult_and_crowd_are_neither_tp_nor_fp():
    a, b, c = [0, 0, 9, 9], [50, 50, 69, 69], [100, 100, 119, 119]
    for flag in (1, 2):
        # the top detection hits the ignored box: without the rule it would be an FP at rank 1
        batch = one_image([(b, 0, 0.9), (a, 0, 0.8)], [(a, 0, 0), (b, 0, flag)])
        metric = VOCMApMetric(class_names=["obj"])
        metric.update(*batch)
        assert metric.get()[1] == [1.0, 1.0]
    # the +1 pixel convention: boxes one pixel apart overlap by 1/3 (2x1 boxes share a column)
    metric = VOCMApMetric(iou_thresh=0.33, class_names=["obj"])
    metric.update(*one_image([([0, 0, 1, 0], 0, 0.5)], [([1, 0, 2, 0], 0, 0), (c, 0, 0)]))
    assert metric.get()[1][0] == pytest.approx(0.5)


def test_classes_without_ground_truth_are_nan_and_left_out_of_the_mean():
    a = [0, 0, 9, 9]
    metric = VOCMApMetric(class_names=["x", "y", "z"])
    metric.update(*one_image([(a, 0, 0.9), (a, 1, 0.8)], [(a, 0, 0), (a, 2, 1)]))
    names, values = metric.get()
    assert names == ["x", "y", "z", "mAP"]
    assert values[0] == 1.0 and math.isnan(values[1]) and math.isnan(values[2])
    assert values[3] == 1.0


def test_empty_metric_and_reset():
    metric = VOCMApMetric(class_names=["x"])
    assert all(math.isnan(v) for v in metric.get()[1])
    metric.update(*one_image([([0, 0, 9, 9], 0, 0.9)], [([0, 0, 9, 9], 0, 0)]))
    assert metric.get()[1] == [1.0, 1.0]
    metric.reset()
    assert math.isnan(metric.get()[1][-1])
    assert math.isnan(VOCMApMetric().get()[1])


def test_make_metric():
    assert set(METRIC_CLASSES) == {"voc", "voc07", "coco"}
    metric = make_metric("voc07", ("a", "b"), iou_thresh=0.7)
    assert isinstance(metric, VOC07MApMetric) and metric.iou_thresh == 0.7
    assert metric.get()[0] == ["a", "b", "mAP"]
    with pytest.raises(GluondetError, match="unknown metric 'map'"):
        make_metric("map", ["a"])


def test_result_dict_and_table():
    a = [0, 0, 9, 9]
    ours = VOC07MApMetric(class_names=["helmet", "head", "person"])
    reference = gcv_voc.VOC07MApMetric(class_names=["helmet", "head", "person"])
    batch = one_image([(a, 0, 0.9), ([20, 20, 29, 29], 1, 0.8)], [(a, 0, 0), (a, 1, 0)])
    for metric in (ours, reference):
        metric.update(*batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = metric_result(ours)
        assert metric_result(reference)["map"] == result["map"]  # GluonCV's metric fits too
    assert result["metric"] == "voc07" and result["map"] == pytest.approx(0.5)
    assert list(result["per_class"]) == ["helmet", "head", "person"]
    assert result["per_class"]["helmet"] == pytest.approx(1.0)
    assert result["per_class"]["head"] == 0.0 and result["per_class"]["person"] is None
    table = format_ap_table(result).splitlines()
    assert table[2].split() == ["helmet", "1.0000"]
    assert table[4].split() == ["person", "-", "(no", "ground", "truth)"]
    assert table[-1].split() == ["mAP", "0.5000", "(voc07)"]
