"""The numbers behind the eval pictures: hand-made cases with known answers, random cases against
pycocotools' per-image matching (evalImgs), and agreement with the mAP to the last digit."""
import contextlib
import io

import numpy as np
import pytest

from gluondet.eval import analysis as A
from gluondet.eval.coco_metric import COCOMetric
from gluondet.eval.voc_metric import VOC07MApMetric, VOCMApMetric


def _update(metric, images):
    """images: list of (dets [(cls, score, box)], gts [(cls, box, flag)]), one update per image."""
    for dets, gts in images:
        n, k = max(len(dets), 1), max(len(gts), 1)
        pb, pl, ps = np.zeros((1, n, 4)), -np.ones((1, n)), np.zeros((1, n))
        gb, gl, gf = np.zeros((1, k, 4)), -np.ones((1, k)), np.zeros((1, k))
        for j, (c, s, b) in enumerate(dets):
            pb[0, j], pl[0, j], ps[0, j] = b, c, s
        for j, (c, b, f) in enumerate(gts):
            gb[0, j], gl[0, j], gf[0, j] = b, c, f
        metric.update(pb, pl, ps, gb, gl, gf)
    return metric


# ----------------------------------------------------------------------------- a hand-made case
A1, A2, B1, HARD = (0, 0, 9, 9), (20, 0, 29, 9), (40, 0, 49, 9), (60, 0, 69, 9)
HAND = [
    ([(0, 0.9, A1),                 # TP
      (0, 0.8, A1),                 # duplicate: FP
      (1, 0.7, A2),                 # a 'b' on an 'a': FP, confused
      (0, 0.6, HARD),               # on a difficult object: ignored
      (1, 0.5, B1),                 # TP
      (0, 0.4, (100, 100, 109, 109)),  # background: FP
      (1, 0.3, B1)],                # duplicate: FP
     [(0, A1, 0), (0, A2, 0), (1, B1, 0), (0, HARD, 1)]),
    ([], [(1, (0, 0, 9, 9), 0)]),   # an object nobody found
]


@pytest.fixture
def hand():
    metric = _update(VOCMApMetric(0.5, ["a", "b"]), HAND)
    return metric, A.analyze(metric, ["a", "b"])


def test_hand_made_ap_and_pr_points(hand):
    metric, result = hand
    assert metric.get()[1] == pytest.approx([0.5, 0.25, 0.375])
    a, b = result["pr"]["classes"]["a"], result["pr"]["classes"]["b"]
    assert (a["ap"], b["ap"], result["map"]) == pytest.approx((0.5, 0.25, 0.375))
    # the ignored detection repeats the previous point; everything else as counted by hand
    np.testing.assert_allclose(a["recall"], [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(a["precision"], [1, 0.5, 0.5, 1 / 3])
    np.testing.assert_allclose(b["recall"], [0, 0.5, 0.5])
    np.testing.assert_allclose(b["precision"], [0, 0.5, 1 / 3])


def test_hand_made_f1_best_threshold_and_table(hand):
    metric, result = hand
    f1 = A.f1_curve(metric.matching())
    np.testing.assert_allclose(f1["thresholds"], [0.9, 0.8, 0.7, 0.5, 0.4, 0.3])
    np.testing.assert_allclose(f1["f1"], [0.4, 1 / 3, 2 / 7, 0.5, 4 / 9, 0.4])
    assert f1["best"] == pytest.approx({"threshold": 0.5, "f1": 0.5, "precision": 0.5, "recall": 0.5})
    # kept and drawn at the grid: the value of the detections with score >= each threshold
    grid = result["f1"]
    assert grid["best"] == f1["best"]
    at = dict(zip(np.round(grid["thresholds"], 3), grid["f1"]))
    assert (at[0.3], at[0.4], at[0.45], at[0.5], at[0.502], at[0.9], at[0.902]) == pytest.approx(
        (0.4, 4 / 9, 0.5, 0.5, 2 / 7, 0.4, 0.0))
    assert result["threshold"] == 0.5
    rows = {r["class"]: r for r in result["per_class"]}
    assert {k: rows["a"][k] for k in ("gt", "tp", "fp", "fn")} == {"gt": 2, "tp": 1, "fp": 1, "fn": 1}
    assert {k: rows["b"][k] for k in ("gt", "tp", "fp", "fn")} == {"gt": 2, "tp": 1, "fp": 1, "fn": 1}
    assert rows["a"]["best_threshold"] == 0.9 and rows["a"]["best_f1"] == pytest.approx(2 / 3)


def test_hand_made_confusion_matrix(hand):
    _, result = hand
    # rows: ground truth a, b, background; columns: predicted a, b, background (missed)
    np.testing.assert_array_equal(result["confusion"]["counts"], [[1, 1, 0], [0, 1, 1], [1, 0, 0]])
    np.testing.assert_allclose(result["confusion"]["normalized"], [[.5, .5, 0], [0, .5, .5], [1, 0, 0]])
    assert result["confusion"]["labels"] == ["a", "b", "background"]
    images = result["images"]
    assert (list(images["tp"]), list(images["fp"]), list(images["fn"])) == ([2, 0], [2, 0], [1, 1])


def test_hand_made_error_breakdown(hand):
    _, result = hand
    errors = result["errors"]
    a, b = errors["classes"]["a"], errors["classes"]["b"]
    # no supercategories: Sim would repeat Loc, so it is left out, and the document says why
    assert errors["curves"] == ["C75", "C50", "Loc", "Oth", "BG", "FN"]
    assert "Sim" not in a and "Sim" not in errors["all"] and "supercategor" in errors["sim_omitted"]
    # exact boxes: C75 = C50 = Loc; b's confused detection is forgiven from Oth on
    assert [a[k]["ap"] for k in errors["curves"]] == pytest.approx([.5, .5, .5, .5, .5, 1])
    assert [b[k]["ap"] for k in errors["curves"]] == pytest.approx([.25, .25, .25, .5, .5, 1])
    assert errors["all"]["Oth"]["ap"] == pytest.approx(0.5)


def test_supercategories_make_sim_differ_from_loc(hand):
    metric, _ = hand
    errors = A.error_breakdown(metric, ["a", "b"], supercategories={"a": "thing", "b": "thing"})
    assert errors["supercategories"] and errors["sim_omitted"] is None and "Sim" in errors["curves"]
    assert errors["classes"]["b"]["Sim"]["ap"] == pytest.approx(0.5)
    assert errors["classes"]["b"]["Loc"]["ap"] == pytest.approx(0.25)


# ----------------------------------------------------------------------------- random cases
def _random_case(rng, num_classes=3, num_images=12, iou=0.5, difficult=False):
    """Objects in separate 100-px cells, detections jittered inside their cell (plus empty-cell
    false positives), never within 0.02 of the IoU threshold under either box convention: there
    VOC and pycocotools matching must agree detection by detection."""
    images = []
    for _ in range(num_images):
        dets, gts = [], []
        cells = rng.permutation(16)[:rng.integers(1, 9)]
        for n, cell in enumerate(cells):
            ox, oy = (cell % 4) * 100.0, (cell // 4) * 100.0
            w, h = rng.uniform(20, 60, 2)
            box = np.array([ox + 10, oy + 10, ox + 10 + w, oy + 10 + h]).round(1)
            empty = n % 4 == 3
            if not empty:
                flag = int(difficult and rng.random() < 0.15)
                gts.append((int(rng.integers(num_classes)), tuple(box), flag))
            for _ in range(rng.integers(0, 4)):
                det = _jitter(rng, box, iou)
                cls = gts[-1][0] if (not empty and rng.random() < 0.8) else int(rng.integers(num_classes))
                dets.append((cls, float(rng.uniform(0.01, 1)), tuple(det)))
        images.append((dets, gts))
    return images


def _jitter(rng, box, iou):
    for _ in range(100):
        det = (box + rng.normal(0, 6, 4)).round(1)
        det[2:] = np.maximum(det[2:], det[:2] + 2)
        if abs(_iou(det, box, 1) - iou) > 0.02 and abs(_iou(det, box, 0) - iou) > 0.02:
            return det
    raise AssertionError("no jitter away from the threshold")


def _iou(a, b, plus):
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]) + plus)
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]) + plus)
    area = lambda r: (r[2] - r[0] + plus) * (r[3] - r[1] + plus)  # noqa: E731
    return iw * ih / (area(a) + area(b) - iw * ih)


def _evaluate_at(gt_dataset, dt_dataset, iou, cat_ids=None):
    """pycocotools' COCOeval (bbox) of two COCO dicts at one IoU, all areas, 100 detections: evaluated."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset, coco_dt.dataset = gt_dataset, dt_dataset
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.iouThrs = np.array([iou])
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.params.areaRng, ev.params.areaRngLbl, ev.params.maxDets = [[0, 1e10]], ["all"], [100]
        ev.evaluate()
    return ev


def _pycocotools_matches(metric, classes, iou):
    """Per detection (gluondet's flat order): True where pycocotools' evalImgs match it at ``iou``."""
    coco = COCOMetric(classes)
    coco._batches = metric._batches
    gt_dataset, dt_dataset = coco.coco_datasets()
    ev = _evaluate_at(gt_dataset, dt_dataset, iou)
    matched = np.zeros(len(dt_dataset["annotations"]), bool)
    for e in ev.evalImgs:
        if e is not None:
            for dt_id, gt_id in zip(e["dtIds"], e["dtMatches"][0]):
                matched[dt_id - 1] = gt_id > 0
    return matched


@pytest.mark.parametrize("seed", range(6))
def test_matches_and_counts_equal_pycocotools_per_image_matching(seed):
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c"]
    iou = [0.5, 0.75, 0.3][seed % 3]
    metric = _update(VOCMApMetric(iou, classes), _random_case(rng, iou=iou))
    m = metric.matching()
    reference = _pycocotools_matches(metric, classes, iou)
    np.testing.assert_array_equal(m.match == 1, reference)
    gt_count = np.bincount(m.gts.label, minlength=3)
    for thresh in (0.0, 0.3, 0.6, 0.9):
        counts = A.counts_at(m, thresh, 3)
        kept = m.dets.score >= thresh
        tp = np.bincount(m.dets.label[kept & reference], minlength=3)
        fp = np.bincount(m.dets.label[kept & ~reference], minlength=3)
        np.testing.assert_array_equal(counts["tp"], tp)
        np.testing.assert_array_equal(counts["fp"], fp)
        np.testing.assert_array_equal(counts["fn"], gt_count - tp)
    # PR points: cumulative counts over the reference's matches in descending score order
    pr = A.pr_curves(metric, m, classes)
    for c, name in enumerate(classes):
        mine = m.dets.label == c
        order = np.argsort(-m.dets.score[mine])
        hits = reference[mine][order]
        tp, fp = np.cumsum(hits), np.cumsum(~hits)
        np.testing.assert_allclose(pr["classes"][name]["recall"], tp / gt_count[c])
        np.testing.assert_allclose(pr["classes"][name]["precision"], tp / (tp + fp))


@pytest.mark.parametrize("seed", range(8))
def test_confusion_rows_sum_to_objects_and_columns_to_detections(seed):
    rng = np.random.default_rng(100 + seed)
    metric = _update(VOCMApMetric(0.5, ["a", "b", "c"]), _random_case(rng, difficult=True))
    m = metric.matching()
    thresh = float(rng.uniform(0, 0.8))
    cm = A.confusion_matrix(m, thresh, 3)
    counts = A.counts_at(m, thresh, 3)
    np.testing.assert_array_equal(cm[:3].sum(axis=1), counts["gt"])
    np.testing.assert_array_equal(counts["gt"], np.bincount(m.gts.label[m.gts.flag == 0], minlength=3))
    np.testing.assert_array_equal(cm[:, :3].sum(axis=0), counts["tp"] + counts["fp"])
    np.testing.assert_array_equal(np.diag(cm)[:3], counts["tp"])
    assert cm[3, 3] == 0
    norm = A.normalize_rows(cm)
    np.testing.assert_allclose(norm[cm.sum(axis=1) > 0].sum(axis=1), 1)


@pytest.mark.parametrize("seed", range(8))
def test_area_under_the_drawn_pr_curve_is_the_reported_ap(seed):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gluondet.eval.plots import draw_pr

    rng = np.random.default_rng(200 + seed)
    classes = ["a", "b", "c"]
    metric = _update(VOCMApMetric(0.5, classes), _random_case(rng, difficult=True))
    if seed % 2:  # ties in scores: the AP's own ranking must be the one drawn
        for b in metric._batches:
            b.pred_scores[:] = np.round(b.pred_scores, 1)
    names, values = metric.get()
    pr = A.pr_curves(metric, metric.matching(), classes)
    fig, ax = plt.subplots()
    draw_pr(ax, pr)
    drawn = [line.get_xydata().T for line in ax.lines]
    plt.close(fig)
    assert len(drawn) == len(classes) + 1
    for (x, y), expected in zip(drawn, values):
        assert np.trapz(y, x) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert pr["all"]["map"] == values[-1]
    assert [pr["classes"][n]["ap"] for n in classes] == values[:3]


def test_voc07_ap_is_the_metrics_own():
    rng = np.random.default_rng(7)
    metric = _update(VOC07MApMetric(0.5, ["a", "b", "c"]), _random_case(rng))
    result = A.analyze(metric, ["a", "b", "c"])
    assert [r["ap"] for r in result["per_class"]] == metric.get()[1][:3]
    assert result["map"] == metric.get()[1][-1]


@pytest.mark.parametrize("seed", range(4))
def test_best_f1_threshold_is_the_best_over_every_score(seed):
    rng = np.random.default_rng(300 + seed)
    metric = _update(VOCMApMetric(0.5, ["a", "b", "c"]), _random_case(rng, difficult=True))
    m = metric.matching()
    best = A.f1_curve(m)["best"]
    brute = []
    for t in np.unique(m.dets.score):
        c = A.counts_at(m, t, 3)
        tp, fp, fn = c["tp"].sum(), c["fp"].sum(), c["fn"].sum()
        brute.append((2 * tp / (2 * tp + fp + fn), t))
    top = max(f for f, _ in brute)
    assert best["f1"] == pytest.approx(top)
    assert best["threshold"] == max(t for f, t in brute if f == pytest.approx(top))


def test_error_breakdown_c50_is_the_class_ap_and_bg_the_loose_recall():
    rng = np.random.default_rng(11)
    classes = ["a", "b", "c"]
    metric = _update(VOCMApMetric(0.5, classes), _random_case(rng))
    errors = A.error_breakdown(metric, classes)
    loose = A.matching_at(metric, A.LOOSE_IOU)
    for c, name in enumerate(classes):
        curves = errors["classes"][name]
        assert curves["C50"]["ap"] == metric.get()[1][c]
        found = np.sum(loose.match[loose.dets.label == c] == 1)
        assert curves["BG"]["ap"] == pytest.approx(found / loose.num_pos[c])
        assert curves["FN"]["ap"] == 1.0
        for name_ in errors["curves"]:
            x, y = curves[name_]["recall"], curves[name_]["precision"]
            assert np.trapz(y, x) == pytest.approx(curves[name_]["ap"], abs=1e-12)


def test_empty_and_json():
    import json

    metric = _update(VOCMApMetric(0.5, ["a"]), [([], [])])
    result = A.analyze(metric, ["a"])
    assert result["f1"]["best"] is None and result["threshold"] == 0.0
    text = json.dumps(A.to_jsonable(result), allow_nan=False)
    assert json.loads(text)["per_class"][0]["gt"] == 0


def test_a_coco_metric_is_analysed_with_the_voc_matching_of_its_detections():
    voc = _update(VOCMApMetric(0.5, ["a", "b"]), HAND)
    coco = _update(COCOMetric(["a", "b"]), HAND)
    ours, theirs = A.analyze(voc, ["a", "b"]), A.analyze(coco, ["a", "b"], iou=0.5)
    assert theirs["map"] == ours["map"] and theirs["per_class"] == ours["per_class"]
    np.testing.assert_array_equal(theirs["confusion"]["counts"], ours["confusion"]["counts"])
    assert A.analyze(coco, ["a", "b"], iou=0.75)["iou"] == 0.75


# ----------------------------------------------------------------------------- Sim, as analyze() says
GROUPS = {"a": "headwear", "b": "headwear", "c": "other"}


def _confusion_case(rng, num_images=15):
    """One object per 100-px cell (classes a, b, c); detections near it of its own class, of the
    other headwear class (a <-> b: similar-class confusions), of any class, small ones inside it
    (IoU < 0.09 but wholly on it: pycocotools measures a crowd region's overlap by the detection's
    own area), or on empty cells; far from every threshold, nothing across cells."""
    images = []
    for _ in range(num_images):
        dets, gts = [], []
        for cell in rng.permutation(16)[:rng.integers(2, 7)]:
            ox, oy = (cell % 4) * 100.0, (cell // 4) * 100.0
            box = np.array([ox + 20, oy + 20, ox + 20 + rng.uniform(30, 50), oy + 20 + rng.uniform(30, 50)])
            cls = int(rng.integers(3))
            if rng.random() < 0.15:  # an empty cell: background detections only
                dets.append((int(rng.integers(3)), float(rng.random()), tuple(box.round(1))))
                continue
            gts.append((cls, tuple(box.round(1)), 0))
            for _ in range(rng.integers(1, 4)):
                kind = rng.random()
                label = cls if kind < 0.5 else ({0: 1, 1: 0}.get(cls, 2) if kind < 0.8 else int(rng.integers(3)))
                dets.append((label, float(rng.random()), tuple((box + rng.uniform(-3, 3, 4)).round(1))))
            if rng.random() < 0.3:  # a small part of the object: IoU < 0.1, all of it on the object
                corner = box[:2] + rng.uniform(2, 15, 2)
                dets.append(({0: 1, 1: 0}.get(cls, 0), float(rng.random()), tuple(np.concatenate([corner, corner + 8]))))
        images.append((dets, gts))
    return images


def _analyze_reference(metric, classes, c, related):
    """Recall and precision of class ``c`` as pycocotools' analyze() (MMDetection's
    coco_error_analysis) computes its Sim / Oth curves: the objects of the ``related`` classes
    become ignored crowd regions of class ``c``, COCOeval matches at IoU 0.1."""
    import copy

    coco = COCOMetric(classes)
    coco._batches = metric._batches
    gt_dataset, dt_dataset = coco.coco_datasets()
    gt_dataset = copy.deepcopy(gt_dataset)
    for ann in gt_dataset["annotations"]:
        if classes[ann["category_id"] - 1] in related:
            ann.update(ignore=1, iscrowd=1, category_id=c + 1)
    dt_dataset = dict(dt_dataset, annotations=[a for a in dt_dataset["annotations"] if a["category_id"] == c + 1])
    ev = _evaluate_at(gt_dataset, dt_dataset, A.LOOSE_IOU, cat_ids=[c + 1])
    found = [e for e in ev.evalImgs if e is not None]
    scores = np.concatenate([e["dtScores"] for e in found])
    matched = np.concatenate([e["dtMatches"][0] for e in found]) > 0
    ignored = np.concatenate([e["dtIgnore"][0] for e in found]).astype(bool)
    num_pos = sum(int(np.sum(e["gtIgnore"] == 0)) for e in found)
    order = np.argsort(-scores, kind="mergesort")
    hits = matched[order][~ignored[order]]
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    return tp / num_pos, tp / (tp + fp)


def _voc_area(recall, precision):
    """VOC area AP, written out: the precision envelope integrated over the recall steps."""
    r = np.concatenate(([0.0], recall, [1.0]))
    p = np.concatenate(([0.0], precision, [0.0]))
    for i in range(len(p) - 2, -1, -1):
        p[i] = max(p[i], p[i + 1])
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


@pytest.mark.parametrize("seed", range(3))
def test_sim_forgives_confusions_within_a_supercategory_as_pycocotools_analyze(seed):
    classes = ["a", "b", "c"]
    metric = _update(VOCMApMetric(0.5, classes), _confusion_case(np.random.default_rng(seed)))
    errors = A.error_breakdown(metric, classes, supercategories=GROUPS)
    assert errors["curves"] == list(A.ERROR_CURVES)
    for c, name in enumerate(classes):
        curves = errors["classes"][name]
        similar = {n for n in classes if n != name and GROUPS[n] == GROUPS[name]}
        for label, related in (("Sim", similar), ("Oth", set(classes) - {name})):
            want = _voc_area(*_analyze_reference(metric, classes, c, related))
            assert curves[label]["ap"] == pytest.approx(want, abs=1e-12), (name, label)
        if similar:  # a and b: the a <-> b confusions are forgiven, so Sim rises above Loc
            assert curves["Sim"]["ap"] > curves["Loc"]["ap"] + 0.02, name
        else:  # c shares its supercategory with nobody
            assert curves["Sim"]["ap"] == curves["Loc"]["ap"]
        assert curves["Loc"]["ap"] <= curves["Sim"]["ap"] <= curves["Oth"]["ap"] <= curves["BG"]["ap"]


@pytest.mark.parametrize("groups", [None, {"a": "thing", "b": "thing"}])
def test_the_error_picture_draws_sim_only_with_supercategories_and_says_why(hand, groups):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gluondet.eval.plots import SIM_OMITTED_LEGEND, draw_errors

    metric, _ = hand
    errors = A.error_breakdown(metric, ["a", "b"], supercategories=groups)
    fig, ax = plt.subplots()
    draw_errors(ax, errors["all"], "all", note=SIM_OMITTED_LEGEND if errors["sim_omitted"] else None)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)
    names = [t.split("] ")[-1] for t in legend if t.startswith("[")]
    assert names == (["C75", "C50", "Loc", "Sim", "Oth", "BG", "FN"] if groups else
                     ["C75", "C50", "Loc", "Oth", "BG", "FN"])
    assert (SIM_OMITTED_LEGEND in legend) == (groups is None)
