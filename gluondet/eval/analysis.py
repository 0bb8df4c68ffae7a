"""What a detector gets wrong, in numbers: the data behind the pictures ``gluondet eval`` draws.

Everything starts from ``VOCMApMetric.matching()``: the detections matched exactly as the mAP
matches them (same IoU, same order, same difficult handling), so every number here agrees with the
mAP to the last digit:

- ``pr_curves``: per class, precision and recall after each detection in the AP's own ranking, and
  the monotone envelope whose area is the class AP (VOC area); "all" is the mean of the class
  envelopes, a step function whose area is the mAP;
- ``counts_at``: per-class TP, FP, FN, GT, precision and recall keeping detections with
  score >= t (what ``detect --thresh t`` keeps). Matching is greedy in score order, so a
  detection's TP/FP status never depends on lower-scored ones: these are the mAP's matches cut at t;
- ``f1_curve``: overall (summed over classes) precision, recall and F1 at every distinct score,
  and the threshold with the best F1 (the highest one on ties); the analysis keeps them at the
  501 thresholds of ``F1_GRID`` (what the picture draws) with that exact best;
- ``confusion_matrix``: rows are ground-truth classes then "background" (false positives that
  hit no object), columns predicted classes then "background" (missed objects). A true positive
  is on the diagonal; a false positive takes, by descending score, the free ground truth of
  another class it overlaps most (IoU >= the metric's), else lands in the background row; objects
  left over are missed. Each ground-truth row sums to that class's object count, each class
  column to its TP + FP;
- ``error_breakdown``: pycocotools' ``analyze()`` curves with this project's matching: C75, C50
  (AP at IoU .75 and .5), Loc (IoU .1: localisation errors forgiven, duplicates not), Sim and Oth
  (additionally ignoring false positives on objects of a class of the same supercategory / of any
  other class: analyze() makes those objects crowd regions of the detection's class, so a false
  positive is forgiven when at least 0.1 of its own area lies on one), BG (every false positive
  ignored) and FN (1: nothing missed). Without supercategories Sim would equal Loc, so it is left
  out (``sim_omitted`` says why).
"""
import numpy as np

from .voc_metric import VOCMApMetric, _pair_iou

BACKGROUND = "background"
ERROR_CURVES = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
LOOSE_IOU = 0.1  # pycocotools' analyze(): the IoU at which localisation errors are forgiven
SIM_OMITTED = ("no two classes share a supercategory (COCO categories' 'supercategory', or the dataset "
               "YAML's 'supercategories:'), so Sim would repeat Loc: left out")
# score thresholds at which F1 curves are drawn and kept (the exact best is searched over every score)
F1_GRID = np.linspace(0.0, 1.0, 501)


# ----------------------------------------------------------------------------- matchings
def matching_at(metric, iou_thresh):
    """``metric``'s stored detections and ground truth matched at another IoU (VOC semantics)."""
    other = VOCMApMetric(iou_thresh=iou_thresh)
    other._batches = metric._batches  # the same stored batches (VOC and COCO metrics keep them alike)
    return other.matching()


def _average_precision_fn(metric):
    """The AP formula of ``metric`` (VOC area, VOC07 11-point); VOC area for any other metric."""
    return metric._average_precision if isinstance(metric, VOCMApMetric) else \
        VOCMApMetric._average_precision


def class_pr(m, c):
    """(recall, precision, hits) after each detection of class ``c`` in the AP's ranking."""
    hits = m.match[m.ranked[c]] if c < len(m.ranked) else np.zeros(0, np.int32)
    tp = np.cumsum(hits == 1)
    fp = np.cumsum(hits == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / (fp + tp)
    num_pos = m.num_pos[c] if c < len(m.num_pos) else 0
    recall = tp / num_pos if num_pos else np.zeros(len(tp))
    return recall, precision, hits


def envelope(recall, precision):
    """The monotone PR envelope the VOC area AP integrates, as a polyline (x, y): one horizontal
    segment per recall step joined by vertical ones, so its trapezoid area is exactly the AP."""
    mrec = np.concatenate(([0.], recall, [1.]))
    mpre = np.concatenate(([0.], np.nan_to_num(precision), [0.]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return _steps(mrec[i], mrec[i + 1], mpre[i + 1])


def _steps(starts, ends, heights):
    """Contiguous segments as a step polyline (x, y), neighbours of equal height merged (the area
    stays the same; the drawing gets lighter)."""
    keep = np.concatenate(([True], heights[1:] != heights[:-1])) if len(heights) else np.zeros(0, bool)
    last = np.concatenate((np.flatnonzero(keep)[1:] - 1, [len(heights) - 1])) if len(heights) else []
    starts, ends, heights = starts[keep], ends[last], heights[keep]
    return np.stack([starts, ends], axis=1).ravel(), np.repeat(heights, 2)


def _step_area(x, y):
    return float(np.sum((x[1::2] - x[0::2]) * y[0::2]))


def mean_envelope(envelopes):
    """The mean of step envelopes (x, y) as one step polyline; its area is the mean of the areas."""
    if not envelopes:
        return np.zeros(0), np.zeros(0)
    edges = np.unique(np.concatenate([x for x, _ in envelopes] + [np.array([0., 1.])]))
    mids = (edges[:-1] + edges[1:]) / 2
    heights = np.zeros(len(mids))
    for x, y in envelopes:
        ends, h = x[1::2], y[0::2]
        k = np.minimum(np.searchsorted(ends, mids), len(h) - 1)
        heights += h[k]
    heights /= len(envelopes)
    return _steps(edges[:-1], edges[1:], heights)


def pr_curves(metric, m, class_names):
    """Per class: AP (``metric``'s formula), raw PR points and the envelope; plus 'all'."""
    ap_of = _average_precision_fn(metric)
    classes, envelopes = {}, []
    for c, name in enumerate(class_names):
        recall, precision, _ = class_pr(m, c)
        num_pos = int(m.num_pos[c]) if c < len(m.num_pos) else 0
        x, y = envelope(recall, precision)
        ap = float(ap_of(recall, precision)) if num_pos else None
        if num_pos:
            envelopes.append((x, y))
        classes[name] = {"ap": ap, "gt": num_pos, "recall": recall, "precision": np.nan_to_num(precision),
                         "envelope": {"recall": x, "precision": y}}
    x, y = mean_envelope(envelopes)
    aps = [v["ap"] for v in classes.values() if v["ap"] is not None]
    return {"classes": classes,
            "all": {"map": float(np.mean(aps)) if aps else None, "envelope": {"recall": x, "precision": y}}}


# ----------------------------------------------------------------------------- thresholds
def counts_at(m, thresh, num_classes):
    """Per-class dict of arrays tp, fp, fn, gt, precision, recall for detections with score >= thresh."""
    kept = m.dets.score >= thresh
    label = m.dets.label
    tp = np.bincount(label[kept & (m.match == 1)], minlength=num_classes)[:num_classes]
    fp = np.bincount(label[kept & (m.match == 0)], minlength=num_classes)[:num_classes]
    gt = np.zeros(num_classes, np.int64)
    gt[:min(num_classes, len(m.num_pos))] = m.num_pos[:num_classes]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), np.nan)
        recall = np.where(gt > 0, tp / np.maximum(gt, 1), np.nan)
    return {"tp": tp, "fp": fp, "fn": gt - tp, "gt": gt, "precision": precision, "recall": recall}


def f1_curve(m, classes=None):
    """Precision, recall and F1 of the detections of ``classes`` (all when None) over every
    distinct score as threshold (descending), and the best: {"threshold", "f1", ...} or None."""
    keep = m.match >= 0
    if classes is not None:
        keep &= np.isin(m.dets.label, classes)
    num_pos = int(np.sum(m.num_pos if classes is None else
                         [m.num_pos[c] for c in classes if c < len(m.num_pos)]))
    score = m.dets.score[keep]
    hits = m.match[keep]
    order = np.argsort(-score, kind="stable")
    score, hits = score[order], hits[order]
    tp, fp = np.cumsum(hits == 1), np.cumsum(hits == 0)
    last = np.flatnonzero(np.concatenate((score[1:] != score[:-1], [True]))) if len(score) else []
    thresholds, tp, fp = score[last], tp[last], fp[last]
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / num_pos if num_pos else np.zeros(len(tp))
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    best = None
    if len(f1):
        k = int(np.argmax(f1))
        best = {"threshold": float(thresholds[k]), "f1": float(f1[k]), "precision": float(precision[k]),
                "recall": float(recall[k])}
    return {"thresholds": thresholds, "precision": precision, "recall": recall, "f1": f1, "best": best}


def curve_at(curve, thresholds, keys=("precision", "recall", "f1")):
    """An ``f1_curve`` (step functions of the threshold) evaluated at ``thresholds``: the value
    keeping the detections with score >= each; 0 above the highest score."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    t = curve["thresholds"]  # descending
    # the number of distinct scores >= a threshold; the curve holds its value down to the next score
    k = np.searchsorted(-t, -thresholds, side="right") - 1 if len(t) else np.full(len(thresholds), -1)
    return {key: np.where(k >= 0, curve[key][np.maximum(k, 0)] if len(t) else 0.0, 0.0) for key in keys}


def f1_on_grid(curve, grid=F1_GRID):
    """What the F1 picture draws and analysis.json keeps: precision, recall and F1 at ``grid``
    thresholds, with the exact best of every distinct score."""
    return {"thresholds": grid, **curve_at(curve, grid), "best": curve["best"]}


def image_errors(m, thresh):
    """Per image (tp, fp, fn) at score >= ``thresh``: what ranks the worst images first."""
    kept = (m.dets.score >= thresh) & (m.match >= 0)
    tp = np.bincount(m.dets.image[kept & (m.match == 1)], minlength=m.num_images)
    fp = np.bincount(m.dets.image[kept & (m.match == 0)], minlength=m.num_images)
    found = np.zeros(len(m.gts.label), bool)
    found[m.gt[kept & (m.match == 1)]] = True
    missed = ~found & ~m.gt_ignore
    fn = np.bincount(m.gts.image[missed], minlength=m.num_images)
    return tp, fp, fn


# ----------------------------------------------------------------------------- confusion matrix
def confusion_matrix(m, thresh, num_classes):
    """(num_classes + 1) square counts: rows ground truth + background, columns prediction +
    background (see the module docstring), for detections with score >= ``thresh``."""
    bg = num_classes
    counts = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    kept = (m.dets.score >= thresh) & (m.match >= 0) & (m.dets.label < num_classes)
    tp = kept & (m.match == 1)
    np.add.at(counts, (m.dets.label[tp], m.dets.label[tp]), 1)
    free = ~m.gt_ignore & (m.gts.label < num_classes)
    free[m.gt[tp]] = False
    fp = np.flatnonzero(kept & (m.match == 0))
    fp = fp[np.argsort(-m.dets.score[fp], kind="stable")]
    for image in np.unique(m.dets.image[fp]):
        dets = fp[m.dets.image[fp] == image]
        gts = np.flatnonzero(free & (m.gts.image == image))
        taken = _assign_confusions(m, dets, gts)
        for d, g in zip(dets, taken):
            if g < 0:
                counts[bg, m.dets.label[d]] += 1
            else:
                counts[m.gts.label[g], m.dets.label[d]] += 1
                free[g] = False
    missed = free
    np.add.at(counts, (m.gts.label[missed], bg), 1)
    return counts


def _iou_matrix(det_boxes, gt_boxes):
    """(n, k) IoU with the metric's formula (VOC +1 convention)."""
    return _pair_iou([det_boxes[:, None, j] for j in range(4)], [gt_boxes[None, :, j] for j in range(4)])


def _assign_confusions(m, dets, gts):
    """For false positives ``dets`` (descending score) of one image: the free ground truth of
    another class each takes (highest IoU >= the metric's threshold), or -1."""
    taken = np.full(len(dets), -1)
    if not len(gts):
        return taken
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = _iou_matrix(m.dets.box[dets], m.gts.box[gts])
    other = m.dets.label[dets][:, None] != m.gts.label[gts][None, :]
    iou = np.where(other & ~np.isnan(iou), iou, -1.0)
    available = np.ones(len(gts), bool)
    for i in range(len(dets)):
        row = np.where(available, iou[i], -1.0)
        j = int(np.argmax(row))
        if row[j] >= m.iou_thresh:
            taken[i] = gts[j]
            available[j] = False
    return taken


def normalize_rows(counts):
    """Each row divided by its sum (rows with no entries stay 0)."""
    sums = counts.sum(axis=1, keepdims=True)
    return np.where(sums > 0, counts / np.maximum(sums, 1), 0.0)


# ----------------------------------------------------------------------------- error breakdown
def _crowd_overlap(det_boxes, gt_boxes):
    """(n, k) overlap of detections with regions treated as crowd, as pycocotools measures it for
    ``iscrowd`` ground truth: intersection over the detection's own area (metric's +1 convention)."""
    d = [det_boxes[:, None, j] for j in range(4)]
    g = [gt_boxes[None, :, j] for j in range(4)]
    width = np.minimum(d[2], g[2]) - np.maximum(d[0], g[0]) + 1
    height = np.minimum(d[3], g[3]) - np.maximum(d[1], g[1]) + 1
    inter = np.maximum(width, 0) * np.maximum(height, 0)
    return inter / ((d[2] - d[0] + 1) * (d[3] - d[1] + 1))


def _other_class_hits(m, supercategory_of=None):
    """Per detection: is it a false positive that pycocotools' analyze() forgives, because it
    overlaps (>= LOOSE_IOU of its own area, see ``_crowd_overlap``) an object of another class
    (of the same supercategory when ``supercategory_of`` maps class id -> group id)? analyze()
    turns those objects into crowd regions of the detection's class, difficult ones included."""
    hit = np.zeros(len(m.dets.label), bool)
    candidates = np.flatnonzero(m.match == 0)
    for image in np.unique(m.dets.image[candidates]):
        dets = candidates[m.dets.image[candidates] == image]
        gts = np.flatnonzero(m.gts.image == image)
        if not len(gts):
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            overlap = _crowd_overlap(m.dets.box[dets], m.gts.box[gts])
        dl, gl = m.dets.label[dets][:, None], m.gts.label[gts][None, :]
        related = dl != gl
        if supercategory_of is not None:
            group = np.vectorize(lambda c: supercategory_of.get(int(c), -1 - int(c)), otypes=[int])
            related &= group(dl) == group(gl)
        hit[dets] = np.any(related & (overlap >= LOOSE_IOU), axis=1)
    return hit


def error_breakdown(metric, class_names, supercategories=None):
    """pycocotools-style error analysis: per class and for all, the AP and envelope of each of
    ``ERROR_CURVES``. ``supercategories``: optional {class name: group name}. Without any (or
    with no two classes sharing one) Sim would repeat Loc: it is left out, and ``sim_omitted``
    says why."""
    ap_of = _average_precision_fn(metric)
    m75, m50, loose = (matching_at(metric, t) for t in (0.75, 0.5, LOOSE_IOU))
    group_ids = _group_ids(class_names, supercategories)
    curves_kept = [c for c in ERROR_CURVES if group_ids or c != "Sim"]
    forgiving = {"C75": (m75, None), "C50": (m50, None), "Loc": (loose, None),
                 "Oth": (loose, _other_class_hits(loose)), "BG": (loose, loose.match == 0)}
    if group_ids:
        forgiving["Sim"] = (loose, _other_class_hits(loose, group_ids))
    per_class, envelopes = {}, {name: [] for name in curves_kept}
    for c, name in enumerate(class_names):
        if c >= len(loose.num_pos) or loose.num_pos[c] == 0:
            continue
        curves = {}
        for label in curves_kept[:-1]:
            mm, forgiven = forgiving[label]
            recall, precision = _pr_forgiving(mm, c, forgiven)
            x, y = envelope(recall, precision)
            curves[label] = {"ap": float(ap_of(recall, precision)), "recall": x, "precision": y}
        curves["FN"] = {"ap": 1.0, "recall": np.array([0., 1.]), "precision": np.array([1., 1.])}
        for label in curves_kept:
            envelopes[label].append((curves[label]["recall"], curves[label]["precision"]))
        per_class[name] = curves
    overall = {}
    for label in curves_kept:
        x, y = mean_envelope(envelopes[label])
        aps = [per_class[n][label]["ap"] for n in per_class]
        overall[label] = {"ap": float(np.mean(aps)) if aps else None, "recall": x, "precision": y}
    return {"curves": curves_kept, "supercategories": bool(group_ids),
            "sim_omitted": None if group_ids else SIM_OMITTED, "classes": per_class, "all": overall}


def _group_ids(class_names, supercategories):
    """{class id: supercategory id} when at least two classes share a supercategory, else None."""
    if not supercategories:
        return None
    names = sorted(set(supercategories.values()))
    groups = {c: names.index(supercategories[n]) for c, n in enumerate(class_names) if n in supercategories}
    shared = np.bincount(list(groups.values()), minlength=1) if groups else np.zeros(1)
    return groups if shared.max() >= 2 else None


def _pr_forgiving(m, c, forgiven):
    """PR points of class ``c`` with the false positives marked in ``forgiven`` ignored."""
    idx = m.ranked[c] if c < len(m.ranked) else np.zeros(0, np.int64)
    hits = m.match[idx].copy()
    if forgiven is not None:
        hits[(hits == 0) & forgiven[idx]] = -1
    tp, fp = np.cumsum(hits == 1), np.cumsum(hits == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / (fp + tp)
    return tp / m.num_pos[c], precision


# ----------------------------------------------------------------------------- all of it
def matched(metric, iou=0.5):
    """The metric's own matching (VOC metrics), or the VOC matching at ``iou`` of the detections
    another metric (COCO) stored."""
    return metric.matching() if isinstance(metric, VOCMApMetric) else matching_at(metric, iou)


def analyze(metric, class_names, score_thresh=None, supercategories=None, iou=0.5):
    """Every number of the analysis folder as a dict of numpy arrays and floats (``to_jsonable``
    makes it JSON). ``score_thresh`` for the per-class table and the confusion matrix: the
    F1-best threshold when None. ``iou`` only matters for a metric that is not VOC's (COCO)."""
    class_names = list(class_names)
    num_classes = len(class_names)
    m = matched(metric, iou)
    f1 = f1_curve(m)
    per_class_f1 = [f1_curve(m, [c]) for c in range(num_classes)]
    best = f1["best"]
    thresh = score_thresh if score_thresh is not None else (best["threshold"] if best else 0.0)
    counts = counts_at(m, thresh, num_classes)
    table = []
    pr = pr_curves(metric, m, class_names)
    for c, name in enumerate(class_names):
        row = {"class": name, "ap": pr["classes"][name]["ap"]}
        row.update({k: counts[k][c] for k in ("gt", "tp", "fp", "fn", "precision", "recall")})
        cb = per_class_f1[c]["best"]
        row["best_threshold"] = cb["threshold"] if cb else None
        row["best_f1"] = cb["f1"] if cb else None
        table.append(row)
    cm = confusion_matrix(m, thresh, num_classes)
    tp, fp, fn = image_errors(m, thresh)
    return {
        "iou": float(m.iou_thresh), "metric": getattr(metric, "key", type(metric).__name__),
        "classes": class_names, "threshold": float(thresh),
        "threshold_source": "F1-best" if score_thresh is None else "given",
        "map": pr["all"]["map"], "per_class": table, "pr": pr,
        "f1": {**f1_on_grid(f1),
               "per_class": {name: f1_on_grid(per_class_f1[c]) for c, name in enumerate(class_names)}},
        "confusion": {"labels": class_names + [BACKGROUND], "iou": float(m.iou_thresh),
                      "score": float(thresh), "counts": cm, "normalized": normalize_rows(cm)},
        "errors": error_breakdown(metric, class_names, supercategories),
        "images": {"tp": tp, "fp": fp, "fn": fn},
    }


def to_jsonable(value):
    """numpy arrays and scalars -> lists and Python numbers; NaN -> None (valid JSON)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    return value
