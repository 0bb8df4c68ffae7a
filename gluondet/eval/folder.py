"""The analysis folder ``gluondet eval`` writes into a run: ``RUN/eval-<split>/``.

``analysis.json`` (every number of ``gluondet.eval.analysis``, plus the AP result and the list of
pictures), ``pr_curve.png``, ``f1_curve.png``, ``confusion_matrix.png``, ``error_breakdown.png``
and ``worst_NN.jpg``: mosaics of the images with the most errors (FN + FP at the threshold), ground
truth solid, predictions dashed. A mask model (an ``InstanceMetric``) is analysed by its boxes, its
table carries COCO box and mask AP per class, and its mosaics fill the masks as ``detect`` does.
``best_threshold`` reads the F1-best score threshold back for ``gluondet detect --thresh best``.
"""
import json
from pathlib import Path

import numpy as np

from ..data.masks import decode_masks
from ..errors import GluondetError
from ..fileio import atomic_write_text, safe_name
from ..progress import ljust, text_width
from ..viz import class_colors, draw_truth_and_predictions, mosaic, resize_for_tile, resize_masks, write_jpeg
from .analysis import analyze, matched, to_jsonable
from .instance import InstanceMetric
from .plots import save_confusion, save_errors, save_f1, save_pr

ANALYSIS_FILE = "analysis.json"
PICTURES = {"pr": "pr_curve.png", "f1": "f1_curve.png", "confusion": "confusion_matrix.png",
            "errors": "error_breakdown.png"}
MOSAIC_PATTERN = "worst_{:02d}.jpg"
MOSAIC_TILE = 320  # pixels per image in a mosaic


def eval_dir(run_dir, split, weights="best", dtype="float32", dataset=None):
    """``RUN/eval-<split>`` for the run's best weights in float32 on its own data,
    ``RUN/eval-<split>-<weights>`` for others (``last``, ``epoch_0006``), a ``-<dtype>`` suffix for
    another precision and ``-on-<dataset>`` for another dataset than the run's own, so evaluating
    other weights, precisions or data never replaces the analysis training wrote (which
    ``detect --thresh best`` and the report read)."""
    name = "eval-" + safe_name(split, "split") + ("" if weights == "best" else "-" + safe_name(weights, "split"))
    name += "" if dtype == "float32" else "-" + safe_name(dtype, "split")
    return Path(run_dir) / (name + ("" if dataset is None else "-on-" + safe_name(dataset, "split")))


def weights_name(which):
    """The weights a ``--which`` value or a .params path names: best, last, epoch_0006, ..."""
    text = str(which)
    if text.endswith(".params"):
        return Path(text).stem
    return f"epoch_{int(text):04d}" if text.isdigit() else text


def write_eval_folder(out_dir, metric, dataset, result, family, data_shape=None, score_thresh=None,
                      grid=(4, 4), pages=2, supercategories=None, iou=0.5):
    """Analyse ``metric``'s stored matches (the ones ``result`` was computed from) and write the
    folder; returns the analysis document (also written as analysis.json). ``iou``: the matching
    IoU when ``metric`` is not a VOC metric (which brings its own). ``supercategories``: the
    dataset's own (``dataset.supercategories``) when None."""

    masks = metric.segm if isinstance(metric, InstanceMetric) else None
    metric = metric.bbox if masks is not None else metric  # a mask model: its boxes are analysed
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = list(dataset.classes)
    if supercategories is None:
        supercategories = getattr(dataset, "supercategories", None)
    analysis = analyze(metric, classes, score_thresh=score_thresh, supercategories=supercategories,
                       iou=iou)
    add_instance_ap(analysis, result)
    where = f"{result.get('dataset', dataset.name)} ({result.get('split', '')})"
    save_pr(analysis["pr"], out_dir / PICTURES["pr"], f"PR at IoU {analysis['iou']:g}: {where}")
    save_f1(analysis["f1"], out_dir / PICTURES["f1"], f"F1 vs score threshold: {where}")
    save_confusion(analysis["confusion"], out_dir / PICTURES["confusion"],
                   f"confusion at IoU {analysis['iou']:g}, score >= {analysis['threshold']:.3f}: {where}")
    save_errors(analysis["errors"], out_dir / PICTURES["errors"], f"error breakdown: {where}")
    mosaics = write_worst_mosaics(out_dir, metric, dataset, analysis, family, data_shape, grid, pages,
                                  masks)
    doc = {"result": {k: v for k, v in result.items() if k != "analysis"},
           "pictures": dict(PICTURES), "mosaics": mosaics, "analysis": to_jsonable(analysis)}
    atomic_write_text(out_dir / ANALYSIS_FILE, json.dumps(doc, ensure_ascii=False) + "\n")
    return doc


def add_instance_ap(analysis, result):
    """A mask model's COCO AP per class beside each row of the table: ``bbox_ap`` and ``segm_ap``
    from ``result["box"]`` and ``result["mask"]`` (what ``gluondet eval`` and validation print)."""
    for key, section in (("bbox_ap", "box"), ("segm_ap", "mask")):
        per_class = (result.get(section) or {}).get("per_class")
        if per_class is not None:
            for row in analysis["per_class"]:
                row[key] = per_class.get(row["class"])


def worst_images(analysis, limit):
    """Indices of the images with the most errors (FN + FP) first, then by index."""
    images = analysis["images"]
    errors = np.asarray(images["fp"]) + np.asarray(images["fn"])
    order = np.lexsort((np.arange(len(errors)), -errors))
    return [int(i) for i in order[:limit]]


def image_panel(m, i, dataset, thresh, scale, tile, colors=None, masks=None):
    """Image ``i`` as the dataset reads it (the pixels the network saw, the ones its boxes refer
    to) fitted to a tile, with its ground truth and its detections with score >= ``thresh`` drawn
    at their places; (panel, caption). ``masks``: (detections' RLEs, objects' RLEs) at the image's
    own size, indexed as ``m``'s detections and objects (``COCOSegmMetric.rles``), filled in."""

    raw = dataset[i][0].asnumpy()
    image, fit = resize_for_tile(raw, tile)
    to_tile = np.array([scale[0], scale[1]] * 2) * fit
    g = np.flatnonzero(m.gts.image == i)
    d = np.flatnonzero((m.dets.image == i) & (m.dets.score >= thresh))
    found = set(m.gt[d[m.match[d] == 1]].tolist())
    missed = np.array([(k not in found) and not m.gt_ignore[k] for k in g], bool)
    truth = (m.gts.box[g] * to_tile, m.gts.label[g], missed)
    preds = (m.dets.box[d] * to_tile, m.dets.label[d], m.dets.score[d], m.match[d] == 0)
    truth_masks = pred_masks = None
    if masks is not None:
        truth_masks, pred_masks = _tile_masks(masks, g, d, raw.shape[:2], image.shape[:2])
    panel = draw_truth_and_predictions(image, truth, preds, dataset.classes, colors=colors,
                                       truth_masks=truth_masks, pred_masks=pred_masks)
    caption = (f"{dataset.image_id(i)}\n{int(missed.sum())} missed, {int((m.match[d] == 0).sum())} FP, "
               f"{int((m.match[d] == 1).sum())} TP")
    return panel, caption


def _tile_masks(masks, gts, dets, image_shape, tile_shape):
    """(ground truth masks, detection masks) of objects ``gts`` and detections ``dets`` of one
    image, decoded from their RLEs (pycocotools) and fitted to the tile."""

    pred_rles, gt_rles = masks
    size = (tile_shape[1], tile_shape[0])
    return tuple(resize_masks(decode_masks([rles[k] for k in index], *image_shape), size)
                 for rles, index in ((gt_rles, gts), (pred_rles, dets)))


def write_worst_mosaics(out_dir, metric, dataset, analysis, family, data_shape, grid, pages, masks=None):
    """worst_01.jpg, ... ``pages`` mosaics of grid (cols, rows) images; returns their names.
    ``masks``: a ``COCOSegmMetric`` whose masks are drawn (see ``image_panel``)."""

    m = matched(metric, analysis["iou"])
    if m.num_images != len(dataset):
        raise GluondetError(f"the metric saw {m.num_images} images, the dataset has {len(dataset)}")
    per_page = grid[0] * grid[1]
    chosen = worst_images(analysis, per_page * pages)
    colors = class_colors(len(dataset.classes))
    rles = masks.rles() if masks is not None else None
    names = []
    for page in range(0, len(chosen), per_page):
        panels = [image_panel(m, i, dataset, analysis["threshold"],
                              family.original_scale(data_shape, dataset.image_size(i)), MOSAIC_TILE,
                              colors, rles) for i in chosen[page:page + per_page]]
        sheet = mosaic([p for p, _ in panels], [c for _, c in panels], grid, MOSAIC_TILE)
        name = MOSAIC_PATTERN.format(len(names) + 1)
        write_jpeg(sheet, out_dir / name)
        names.append(name)
    return names


def best_threshold(run_dir, weights="best"):
    """(threshold, analysis.json path): the F1-best score threshold ``gluondet eval`` found for
    these weights of the run (best, last, epoch_0006): on the val split if it was evaluated there,
    else the newest evaluation of them."""
    run_dir = Path(run_dir)
    found = []
    for path in sorted(run_dir.glob(f"eval-*/{ANALYSIS_FILE}"), key=lambda p: p.stat().st_mtime,
                       reverse=True):
        doc = _read_analysis(path)
        result = doc.get("result") or {}
        if Path(str(result.get("params", ""))).stem == weights:
            found.append((result.get("split") != "val", len(found), path, doc))
    if not found:
        raise GluondetError(f"{run_dir}: no evaluation of its {weights} weights yet; run gluondet eval "
                            f"{run_dir} --split val first (it finds the F1-best threshold)")
    _, _, path, doc = min(found)
    best = ((doc.get("analysis") or {}).get("f1") or {}).get("best")
    if not best:
        raise GluondetError(f"{path}: that evaluation had no detections, so no best threshold")
    return float(best["threshold"]), path


def _read_analysis(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GluondetError(f"{path}: cannot read ({e})") from None


def format_threshold_table(analysis):
    """Per-class precision, recall, TP, FP, FN and GT at the analysis threshold, as one string."""
    rows = analysis["per_class"]
    width = max([text_width(r["class"]) for r in rows] + [len("class")])
    head = f"at score >= {analysis['threshold']:.3f} ({analysis['threshold_source']}), IoU {analysis['iou']:g}:"
    lines = [head, "%s  %9s  %6s  %6s  %6s  %6s  %6s" % (ljust("class", width), "precision", "recall",
                                                         "TP", "FP", "FN", "GT")]
    for r in rows:
        lines.append("%s  %9s  %6s  %6d  %6d  %6d  %6d" % (
            ljust(r["class"], width), _cell(r["precision"]), _cell(r["recall"]), r["tp"], r["fp"], r["fn"], r["gt"]))
    return "\n".join(lines)


def _cell(value):
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else "%.4f" % value
