"""Validation during training: switch to the predict graph, score with gluondet.eval, switch back."""
from pathlib import Path

from ..errors import GluondetError

from .steps import hybridize_for_prediction, hybridize_for_training

DEFAULT_EVAL_BATCH = 8  # SSD images per eval batch, split over the devices


def validate(net, family, loader, ctx_list, metric_name, classes, progress=True, metric=None):
    """``gluondet.eval.evaluate``'s result dict for ``net`` on ``loader``, with ``map`` a float
    (an undefined mean, no ground truth at all, counts as 0); leaves the net ready to train again.
    ``metric``: the metric object to fill (a fresh one of ``metric_name`` when None; the mask
    family's: an ``InstanceMetric``), for a caller that wants the matched detections afterwards."""
    from ..eval import make_metric
    from ..eval.evaluate import evaluate

    hybridize_for_prediction(net, family)
    try:
        if family == "mask_rcnn":
            from ..eval.instance import validate_instances

            result = validate_instances(net, loader, ctx_list, metric_name, classes, progress=progress,
                                        metric=metric)
        else:
            metric = metric if metric is not None else make_metric(metric_name, classes)
            result = evaluate(net, loader, ctx_list, metric, progress=progress)
    finally:
        hybridize_for_training(net, family)
    result["map"] = float(result["map"] or 0.0)
    return result


def evaluate_run(run, dataset=None, split="test", metric=None, ctx="cpu", which="best",
                 batch_size=None, num_workers=None, config_dir=None, skip_bad=False, progress=True,
                 coco_results=None, dtype="float32", iou=0.5, analysis=None, own_dataset=True):
    """Evaluate a run folder (or a .params inside one) on a dataset split; the result dict of
    gluondet.eval.report plus ``run``, ``params``, ``dataset``, ``split``, ``images``.

    ``analysis`` (a dict of ``write_eval_folder`` options, {} for the defaults) also writes
    ``RUN/eval-<split>/`` from the same matched detections and adds ``analysis`` and
    ``analysis_dir`` to the result; ``own_dataset`` False (another dataset than the run trained
    on) names that folder ``eval-<split>-on-<dataset>`` (gluondet.eval.folder.eval_dir).

    The dataset is read with the run's classes (a class the run does not know is an error in the
    dataset check, never silently dropped). ``ctx`` is a --ctx spec: the weights are copied to every
    device and each batch is spread over them; the score equals one device's.
    """
    from ..data import load_dataset
    from ..data.loader import default_num_workers, val_loader
    from ..eval import make_metric
    from ..eval.evaluate import evaluate
    from ..run_folder import RunFolder
    from ..runtime import make_contexts

    ctx_list = make_contexts(ctx)
    info = RunFolder.open(run)
    net, params = info.load_network(run if str(run).endswith(".params") else which, ctx=ctx_list)
    metric = metric or info.train_config.get("metric") or "voc"
    dataset_cfg = info.dataset_config(dataset, config_dir)
    masks = info.family == "mask_rcnn"
    ds = load_dataset(dataset_cfg, split, classes=info.classes, skip_bad=skip_bad, masks=masks)
    workers = default_num_workers() if num_workers is None else num_workers
    if batch_size is None:  # Faster R-CNN: one image per device, as GluonCV evaluates it
        batch_size = len(ctx_list) if info.family in ("faster_rcnn", "mask_rcnn") else DEFAULT_EVAL_BATCH
    loader = val_loader(info.family, net, ds, info.data_shape, batch_size, workers)
    hybridize_for_prediction(net, info.family)
    net = _in_dtype(net, info, ctx_list, dtype)
    if info.family == "mask_rcnn":
        from ..eval.instance import InstanceMetric, evaluate_run_instances

        scorer = InstanceMetric(info.classes)  # the analysis reads its boxes, the mosaics its masks
        result = evaluate_run_instances(net, loader, ctx_list, metric, info.classes, ds, dataset_cfg, split,
                                        coco_results, progress=progress, metric=scorer)
    else:
        scorer = make_metric(metric, info.classes, iou_thresh=iou)
        result = evaluate(net, loader, ctx_list, scorer, progress=progress)
    result.update({"run": str(info.path), "params": str(params), "dataset": dataset_cfg.name,
                   "split": split, "images": len(ds), "dtype": dtype})
    refuse_nothing_evaluated(result)  # before any folder is written
    if analysis is not None:
        from ..eval.folder import eval_dir, write_eval_folder

        out_dir = eval_dir(info.path, split, weights=Path(params).stem, dtype=dtype,
                           dataset=None if own_dataset else dataset_cfg.name)
        doc = write_eval_folder(out_dir, scorer, ds, result, info.family, info.data_shape, iou=iou,
                                **analysis)
        result.update({"analysis_dir": str(out_dir), "analysis": doc["analysis"]})
    return result


def _in_dtype(net, info, ctx_list, dtype):
    """``net`` converted to compute in ``dtype`` on every context of ``ctx_list`` (float32: itself)."""
    import mxnet as mx

    from .amp import FLOAT32, choose_dtype, low_precision_block

    dtype, _ = choose_dtype(dtype, [ctx.device_type for ctx in ctx_list])
    if dtype == FLOAT32:
        return net
    side = info.data_shape or 600  # Faster R-CNN: any size builds its (shape-free) graph
    converted = low_precision_block(net, dtype, ctx_list[0], mx.nd.zeros((1, 3, side, side), ctx=ctx_list[0]))
    converted.collect_params().reset_ctx(ctx_list)
    converted.hybridize(static_alloc=True, static_shape=info.family == "ssd")
    return converted


def refuse_nothing_evaluated(result):
    """An evaluation without a single ground-truth object of the run's classes scored nothing
    (every AP undefined, mAP '-'): an error, not a result."""
    scores = result.get("box", result)  # a mask model: its box section has the same classes
    if scores.get("map") is None and all(ap is None for ap in scores.get("per_class", {}).values()):
        raise GluondetError(
            f"{result['dataset']} ({result['split']}, {result['images']} images): no object of the run's "
            f"classes ({', '.join(scores.get('per_class', {}))}) to evaluate; nothing was scored")
