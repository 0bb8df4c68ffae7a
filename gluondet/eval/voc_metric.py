"""Pascal VOC mean average precision, vectorised, with GluonCV's exact numbers.

Drop-in for ``gluoncv.utils.metrics.voc_detection.VOCMApMetric`` and ``VOC07MApMetric``: same
constructor, ``update``, ``get`` and ``reset``, same results to float precision. GluonCV matches
detections image by image and class by class in Python loops; here ``update`` only converts its
arguments to numpy and keeps them, and ``get`` matches every image and class at once with numpy.

Semantics copied from GluonCV (and the VOC devkit it follows):
- boxes are in pixels with the devkit's "+1" convention: width = xmax - xmin + 1;
- within an image and class, detections are matched in descending score order, each to the
  ground truth it overlaps most (first one on ties); IoU below ``iou_thresh`` -> false positive;
- a ground truth with a non-zero flag (1 = difficult, 2 = crowd, ...) is neither counted nor
  matched: a detection whose best overlap is such a box is ignored (neither TP nor FP);
- a detection whose best ground truth is already taken by a higher-scored one is a false positive;
- a class with no (non-difficult) ground truth has AP NaN and is left out of the mean;
- the mean runs over class ids 0..max id seen (in predictions or ground truth).

Ties in scores are ordered exactly as GluonCV's ``argsort()[::-1]`` orders them, since with ties
the order changes which detection is the true positive and so the AP.
"""
from collections import namedtuple

import numpy as np

# numpy (1.23) sorts arrays of up to this many elements by insertion sort, which keeps equal keys in
# their original order; longer groups with ties are re-sorted by argsort itself (_image_order).
_STABLE_ARGSORT_MAX = 16

Detections = namedtuple("Detections", "image label score box")
GroundTruths = namedtuple("GroundTruths", "image label flag box")
# One update's arrays as numpy: (B, N, 4) boxes, (B, N) labels and scores, (B, M, 4) boxes,
# (B, M) labels, (B, M) flags or None.
_Batch = namedtuple("_Batch", "pred_bboxes pred_labels pred_scores gt_bboxes gt_labels gt_flags")
# What VOCMApMetric.matching() returns: see its docstring.
Matching = namedtuple("Matching", "dets gts gt_ignore num_pos match gt ranked num_classes "
                                  "num_images iou_thresh")


def _as_numpy(value):
    """NDArray or numpy array (or a list of them, concatenated) -> numpy array."""
    if isinstance(value, (list, tuple)):
        return np.concatenate([_as_numpy(v) for v in value], axis=0)
    if hasattr(value, "asnumpy"):  # mx.nd.NDArray, without importing mxnet here
        return value.asnumpy()
    return np.array(value)  # a copy: the caller may reuse its buffers before get()


def split_batch(pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels, gt_difficults=None):
    """The arguments of ``update`` as a list of ``_Batch`` of numpy arrays, checked for shape.

    Lists (one array per device) become one ``_Batch`` per device, so devices may pad to
    different lengths. Shared by the VOC and COCO metrics.
    """
    args = [pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels]
    if all(isinstance(a, (list, tuple)) for a in args) and len({len(a) for a in args}) == 1:
        flags = (gt_difficults if isinstance(gt_difficults, (list, tuple))
                 and len(gt_difficults) == len(gt_labels) else [None] * len(gt_labels))
        return [b for part in zip(*args, flags) for b in split_batch(*part)]

    pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels = (_as_numpy(a) for a in args)
    size = len(pred_bboxes)
    if (pred_labels.shape[:1] != (size,) or pred_scores.shape[:1] != (size,)
            or gt_bboxes.shape[:1] != (size,) or gt_labels.shape[:1] != (size,)
            or pred_labels.size != pred_scores.size or 4 * pred_labels.size != pred_bboxes.size
            or 4 * gt_labels.size != gt_bboxes.size):
        raise ValueError("expected boxes (B, N, 4) with labels and scores (B, N[, 1]), and "
                         "ground truth (B, M, 4) with labels (B, M[, 1]); got %s"
                         % [a.shape for a in (pred_bboxes, pred_labels, pred_scores, gt_bboxes,
                                              gt_labels)])
    flags = None
    if gt_difficults is not None and not (isinstance(gt_difficults, (list, tuple))
                                          and any(d is None for d in gt_difficults)):
        flags = _as_numpy(gt_difficults)
        # GluonCV treats flags it cannot line up with the labels as absent; so do we.
        flags = flags if flags.size == gt_labels.size else None
    return [_Batch(pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels, flags)]


def flatten_batches(batches):
    """All stored batches as flat arrays of their real entries (label >= 0), in input order:
    (Detections, GroundTruths), each entry with its image index (counting from 0 over batches)."""
    sizes = np.array([len(b.pred_labels) for b in batches], dtype=np.int64)
    dets = _flatten(sizes, [b.pred_labels for b in batches],
                    [b.pred_scores for b in batches], [b.pred_bboxes for b in batches])
    flags = [b.gt_flags if b.gt_flags is not None else np.zeros(b.gt_labels.size)
             for b in batches]
    gts = _flatten(sizes, [b.gt_labels for b in batches], flags, [b.gt_bboxes for b in batches])
    return Detections(*dets), GroundTruths(*gts)


def _flatten(sizes, labels, values, boxes):
    """(image, label, value, box) of the entries with label >= 0 over padded (B, N) batches."""
    if not labels:
        return np.zeros(0, np.int64), np.zeros(0, int), np.zeros(0), np.zeros((0, 4))
    slots = np.array([l.size // len(l) if len(l) else 0 for l in labels], dtype=np.int64)
    per_image = np.repeat(slots, sizes)
    image = np.repeat(np.arange(len(per_image)), per_image)
    label = np.concatenate([l.ravel() for l in labels])
    real = np.flatnonzero(label >= 0)  # take() by index: ~7x faster than a boolean mask on the boxes
    value = np.concatenate([v.ravel() for v in values])
    box = np.concatenate([b.reshape(-1, 4) for b in boxes])
    return image.take(real), label.take(real).astype(int), value.take(real), box.take(real, axis=0)


class VOCMApMetric:
    """Mean AP over classes at one IoU threshold, area under the interpolated PR curve (VOC2010+).

    ``class_names`` (list of str) makes ``get`` return the AP of each class followed by 'mAP';
    without it ``get`` returns ('VOCMeanAP', mAP).
    """

    key = "voc"  # the name gluondet's --metric flag and result dicts use

    def __init__(self, iou_thresh=0.5, class_names=None):
        if class_names is not None:
            if not isinstance(class_names, (list, tuple)) or not all(
                    isinstance(name, str) for name in class_names):
                raise TypeError("class_names must be a list of str")
            class_names = list(class_names)
        self.iou_thresh = iou_thresh
        self.class_names = class_names
        self.name = "VOCMeanAP" if class_names is None else class_names + ["mAP"]
        self.reset()

    def reset(self):
        """Forget everything seen so far."""
        self._batches = []

    def update(self, pred_bboxes, pred_labels, pred_scores, gt_bboxes, gt_labels,
               gt_difficults=None):
        """Add a batch: predictions (B, N, 4), (B, N[, 1]), (B, N[, 1]); ground truth (B, M, 4),
        (B, M[, 1]) and optional flags (B, M[, 1]). Entries with label < 0 are padding.

        Each argument may be an mx.nd.NDArray, a numpy array, or a list of them (one per device),
        concatenated along the batch axis.
        """
        # Only convert and keep: all the work happens at once in get().
        self._batches.extend(split_batch(pred_bboxes, pred_labels, pred_scores, gt_bboxes,
                                         gt_labels, gt_difficults))

    def get(self):
        """(names, values): the AP of each class then 'mAP' last; or ('VOCMeanAP', mAP)."""
        aps = self.class_aps()
        with np.errstate(all="ignore"):
            mean_ap = float(np.nanmean(aps)) if np.any(~np.isnan(aps)) else float("nan")
        if self.class_names is None:
            return self.name, mean_ap
        per_class = [float(aps[c]) if c < len(aps) else float("nan")
                     for c in range(len(self.class_names))]
        return list(self.name), per_class + [mean_ap]

    def get_name_value(self):
        """[(name, value), ...] as mx.metric.EvalMetric gives it."""
        names, values = self.get()
        if not isinstance(names, list):
            names, values = [names], [values]
        return list(zip(names, values))

    def class_aps(self):
        """AP of each class id 0..max id seen, as a float64 array (NaN: no ground truth)."""
        m = self.matching()
        aps = np.full(m.num_classes, np.nan)
        for c in range(m.num_classes):
            if m.num_pos[c] == 0:
                continue
            hits = m.match[m.ranked[c]]
            tp = np.cumsum(hits == 1)
            fp = np.cumsum(hits == 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                precision = tp / (fp + tp)
            aps[c] = self._average_precision(tp / m.num_pos[c], precision)
        return aps

    def matching(self):
        """The matched detections the AP is computed from, as a ``Matching``.

        ``match`` (per detection, input order): 1 true positive, 0 false positive, -1 ignored
        (its best ground truth is difficult/crowd); ``gt`` the index of that best ground truth with
        IoU >= ``iou_thresh`` (also for a duplicate that lost it to a higher score), else -1;
        ``ranked[c]`` the detections of class ``c`` in the order the AP integrates them.

        Computed afresh from the stored batches at each call and never kept: ``get`` pays for one
        matching, and only a caller that asks (the eval folder's analysis) pays for another.
        """
        dets, gts = flatten_batches(self._batches)
        num_images = sum(len(b.pred_labels) for b in self._batches)
        num_classes = int(max(dets.label.max(initial=-1), gts.label.max(initial=-1))) + 1
        ignore = gts.flag != 0  # difficult (1), crowd (2), any other non-zero flag
        num_pos = np.bincount(gts.label[~ignore], minlength=num_classes)

        # one group per (class, image): matching happens inside a group
        det_group = dets.label * num_images + dets.image
        gt_group = gts.label * num_images + gts.image
        by_score = _descending(dets.score)
        order = _image_order(dets.score, det_group, by_score)
        # boxes as contiguous columns: the IoU works column by column
        match, best = _match(np.ascontiguousarray(dets.box.T), det_group, order,
                             np.ascontiguousarray(gts.box.T), gt_group, ignore,
                             max(num_classes, 1) * num_images, self.iou_thresh)
        match_of, gt_of = np.empty_like(match), np.empty_like(best)
        match_of[order], gt_of[order] = match, best

        # Ranking per class: GluonCV sorts, with argsort()[::-1], the list of a class's detections
        # image after image, each image in matching order. Without ties that is the class's
        # detections by descending score (taken from the global ranking); with ties the order of
        # that very list matters, so those classes get it and argsort it as GluonCV does.
        ranked_all = by_score[_stable_argsort(dets.label[by_score])]
        bounds = np.concatenate(([0], np.cumsum(np.bincount(dets.label, minlength=num_classes))))
        ranked_labels = dets.label.take(ranked_all)
        tied_classes = set(np.unique(ranked_labels[1:][_ties(dets.score.take(ranked_all),
                                                              ranked_labels)]).tolist())
        ranked = []
        for c in range(num_classes):
            if c in tied_classes:
                in_matching_order = order[bounds[c]:bounds[c + 1]]
                ranked.append(in_matching_order[dets.score[in_matching_order].argsort()[::-1]])
            else:
                ranked.append(ranked_all[bounds[c]:bounds[c + 1]])
        return Matching(dets, gts, ignore, num_pos, match_of, gt_of, ranked, num_classes,
                        num_images, self.iou_thresh)

    @staticmethod
    def _average_precision(recall, precision):
        """Area under the PR curve with precision made monotone (VOC2010 and later)."""
        mrec = np.concatenate(([0.], recall, [1.]))
        mpre = np.concatenate(([0.], np.nan_to_num(precision), [0.]))
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        i = np.where(mrec[1:] != mrec[:-1])[0]
        return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


class VOC07MApMetric(VOCMApMetric):
    """Mean AP with the VOC2007 11-point interpolation (precision at recall 0, 0.1, ..., 1)."""

    key = "voc07"

    @staticmethod
    def _average_precision(recall, precision):
        precision = np.nan_to_num(precision)
        ap = 0.
        for t in np.arange(0., 1.1, 0.1):  # the same 11 floats GluonCV and the devkit use
            reached = recall >= t
            ap += (np.max(precision[reached]) if reached.any() else 0) / 11.
        return ap


def _descending(scores):
    """Indices by descending score, ties (and NaNs, first) in descending index order: the order
    ``argsort()[::-1]`` gives wherever numpy's argsort is stable."""
    if scores.dtype.kind == "f" and scores.dtype.itemsize <= 8:
        return _stable_argsort(_float_keys(scores))[::-1]
    return np.argsort(scores, kind="stable")[::-1]


def _float_keys(values):
    """Unsigned integers that sort as numpy sorts the floats ``values``: the IEEE bits with the
    sign bit set on positives and every bit flipped on negatives, so integer order is float order;
    -0.0 gets 0.0's key and every NaN the largest key, as numpy's sort treats them (equal; last)."""
    wide = np.float32 if values.dtype.itemsize <= 4 else np.float64  # float16 widens exactly
    values = values.astype(wide) + wide(0)  # -0.0 + 0.0 is 0.0
    uint = np.uint32 if wide is np.float32 else np.uint64
    bits = values.view(uint)
    sign = uint(1) << uint(8 * bits.itemsize - 1)
    keys = np.where(bits & sign, ~bits, bits | sign)
    keys[np.isnan(values)] = np.iinfo(uint).max
    return keys


def _ties(sorted_scores, sorted_keys):
    """Where neighbours in a sorted list share a key and an equal score (NaN equals NaN)."""
    return ((sorted_keys[1:] == sorted_keys[:-1])
            & ((sorted_scores[1:] == sorted_scores[:-1])
               | (np.isnan(sorted_scores[1:]) & np.isnan(sorted_scores[:-1]))))


def _image_order(scores, group, by_score):
    """Indices of all detections sorted by group (class, image), then as GluonCV matches them.

    GluonCV takes one image's detections of one class in input order and sorts them with
    ``scores.argsort()[::-1]``: descending score, and among equal scores the later one first when
    argsort is stable (small groups); larger groups with ties are sorted by argsort itself.
    """
    n = len(scores)
    order = by_score[_stable_argsort(group[by_score])]  # stable: keeps the score order in a group
    sorted_group = group[order]
    tie = _ties(scores[order], sorted_group)
    if tie.any():
        new_group = np.concatenate(([True], sorted_group[1:] != sorted_group[:-1]))
        starts = np.flatnonzero(new_group)
        ends = np.concatenate((starts[1:], [n]))
        group_of = np.cumsum(new_group) - 1
        for g in np.unique(group_of[1:][tie]):
            if ends[g] - starts[g] > _STABLE_ARGSORT_MAX:
                members = np.sort(order[starts[g]:ends[g]])  # input order within the image
                order[starts[g]:ends[g]] = members[scores[members].argsort()[::-1]]
    return order


def _stable_argsort(keys):
    """Stable argsort of non-negative integer keys, as a radix sort by 16-bit digits, lowest first.

    numpy's stable argsort radix-sorts 16-bit integers and timsorts anything wider: on 100,000
    keys one 16-bit pass takes ~0.7 ms, timsort on 32-bit keys ~6.5 ms, two passes ~1.6 ms.
    """
    bits = int(keys.max()).bit_length() if len(keys) else 0
    order = np.argsort(keys.astype(np.uint16), kind="stable")  # astype keeps the lowest 16 bits
    for shift in range(16, bits, 16):
        digit = (keys.take(order) >> keys.dtype.type(shift)).astype(np.uint16)
        order = order.take(np.argsort(digit, kind="stable"))
    return order


def _match(det_box, det_group, order, gt_box, gt_group, ignore, num_groups, iou_thresh):
    """For detections in ``order``: (match, gt) with match 1 true positive, 0 false positive, -1
    ignored (difficult), and gt the index of the best ground truth reached (IoU >= threshold) or -1.

    Boxes are (4, n) columns; groups are the (class, image) keys, below ``num_groups``.
    """
    n = len(order)
    match = np.zeros(n, dtype=np.int32)
    best_gt = np.full(n, -1, dtype=np.int64)
    if n == 0 or len(gt_group) == 0:
        return match, best_gt
    # ground truths sorted by group, keeping their input order within a group; for each detection
    # the range [first, first + count) of its group's ground truths in that sorted list
    gt_sorted = _stable_argsort(gt_group)
    group = det_group[order]
    if num_groups <= 4 * (n + len(gt_group)):  # a table per group is cheaper than binary search
        gt_count = np.bincount(gt_group, minlength=num_groups)
        first = (np.cumsum(gt_count) - gt_count)[group]
        count = gt_count[group]
    else:
        keys = gt_group[gt_sorted]
        first = np.searchsorted(keys, group, side="left")
        count = np.searchsorted(keys, group, side="right") - first
    has_gt = count > 0
    if not has_gt.any():
        return match, best_gt

    # one (detection, candidate ground truth) pair per row, detections in matching order
    rows = np.flatnonzero(has_gt)
    count = count[rows]
    seg_start = np.concatenate(([0], np.cumsum(count)[:-1]))
    offset = np.arange(seg_start[-1] + count[-1]) - np.repeat(seg_start, count)
    gt_idx = gt_sorted[np.repeat(first[rows], count) + offset]
    det_idx = np.repeat(order[rows], count)
    iou = _pair_iou([c.take(det_idx) for c in det_box], [c.take(gt_idx) for c in gt_box])

    # per detection: the first candidate with the largest IoU (NaN counts as largest, as argmax)
    best = np.maximum.reduceat(iou, seg_start)  # NaN if any NaN in the segment
    best_rep = np.repeat(best, count)
    is_best = (iou == best_rep) | (np.isnan(iou) & np.isnan(best_rep))
    first_best = np.minimum.reduceat(np.where(is_best, np.arange(len(iou)), len(iou)), seg_start)
    assigned = gt_idx[first_best]
    matched = ~(best < iou_thresh)  # NaN compares False, so it matches, as in GluonCV

    ignored = matched & ignore[assigned]
    match[rows[ignored]] = -1
    candidates = matched & ~ignore[assigned]
    # the first detection (in matching order) to claim a ground truth gets it; later ones are FP
    claim_rows = rows[candidates]
    match[claim_rows[_first_of_each(assigned[candidates])]] = 1
    best_gt[rows[matched]] = assigned[matched]
    return match, best_gt


def _first_of_each(values):
    """Index of the first occurrence of each distinct non-negative integer in ``values``
    (``np.unique``'s return_index, by the radix sort)."""
    by_value = _stable_argsort(values)
    ordered = values.take(by_value)
    return by_value[np.concatenate(([True], ordered[1:] != ordered[:-1]))[:len(values)]]


def _pair_iou(pred, gt):
    """IoU of paired boxes given as columns (xmin, ymin, xmax, ymax): the float operations of
    gluoncv.utils.bbox.bbox_iou on boxes whose xmax, ymax were increased by 1 in their own dtype."""
    px1, py1, px2, py2 = pred
    gx1, gy1, gx2, gy2 = gt
    px2, py2, gx2, gy2 = px2 + 1, py2 + 1, gx2 + 1, gy2 + 1
    left, top = np.maximum(px1, gx1), np.maximum(py1, gy1)
    right, bottom = np.minimum(px2, gx2), np.minimum(py2, gy2)
    area_i = ((right - left) * (bottom - top)) * ((left < right) & (top < bottom))
    area_a = (px2 - px1) * (py2 - py1)
    area_b = (gx2 - gx1) * (gy2 - gy1)
    return area_i / (area_a + area_b - area_i)
