"""Validation during training: switch to the predict graph, score with gluondet.eval, switch back."""
from pathlib import Path

from ..data import load_dataset
from ..data.loader import default_num_workers
from ..errors import GluondetError
from ..eval.folder import eval_dir, write_eval_folder
from ..families import get_family
from ..precision import choose_dtype, inference_block
from ..run_folder import RunFolder
from ..runtime import make_contexts


def validate(net, family, loader, ctx_list, metric_name, classes, progress=True, metric=None):
    """``gluondet.eval``'s result dict for ``net`` on ``loader``, with ``map`` a float (an undefined
    mean, no ground truth at all, counts as 0); leaves the net ready to train again. ``family``: a
    gluondet.families.Family. ``metric``: the metric object to fill (the family's ``new_metric``
    when None), for a caller that wants the matched detections afterwards."""
    family.hybridize_for_prediction(net)
    try:
        metric = metric if metric is not None else family.new_metric(metric_name, classes)
        result = family.validate(net, loader, ctx_list, metric, metric_name, classes, progress=progress)
    finally:
        family.hybridize_for_training(net)
    result["map"] = float(result["map"] or 0.0)
    return result


def evaluate_run(run, dataset=None, split="test", metric=None, ctx="cpu", which="best",
                 batch_size=None, num_workers=None, config_dir=None, skip_bad=False, progress=True,
                 coco_results=None, dtype="float32", iou=0.5, analysis=None, own_dataset=True, network=None):
    """Evaluate a run folder (or a .params inside one) on a dataset split; the result dict of
    gluondet.eval.results plus ``run``, ``params``, ``dataset``, ``split``, ``images``.

    ``network(info, ctx_list)``, if given, evaluates another network than the run's weights (an
    export folder's, see gluondet.export.evaluate_export): it returns ``(net, model file, shaped,
    dtype)``, ``shaped`` being what the family's validation loader may ask input sizes of; ``run``
    is then a folder holding the run's config.yaml and classes.txt, and its analysis folder is
    ``<run>/eval-<split>``.

    ``analysis`` (a dict of ``write_eval_folder`` options, {} for the defaults) also writes
    ``RUN/eval-<split>/`` from the same matched detections and adds ``analysis`` and
    ``analysis_dir`` to the result; ``own_dataset`` False (another dataset than the run trained
    on) names that folder ``eval-<split>-on-<dataset>`` (gluondet.eval.folder.eval_dir).

    The dataset is read with the run's classes (a class the run does not know is an error in the
    dataset check, never silently dropped). ``ctx`` is a --ctx spec: the weights are copied to every
    device and each batch is spread over them; the score equals one device's.
    """

    ctx_list = make_contexts(ctx)
    info = RunFolder.open(run)  # an export folder carries its run's config.yaml and classes.txt too
    family = get_family(info.family)
    if network is None:
        net, params = info.load_network(run if str(run).endswith(".params") else which, ctx=ctx_list)
        shaped = net
    else:
        net, params, shaped, dtype = network(info, ctx_list)
    metric = metric or info.train_config.get("metric") or "voc"
    dataset_cfg = info.dataset_config(dataset, config_dir)
    ds = load_dataset(dataset_cfg, split, classes=info.classes, skip_bad=skip_bad, masks=family.masks)
    workers = default_num_workers() if num_workers is None else num_workers
    batch_size = batch_size or family.eval_batch_size(ctx_list)
    loader = family.val_loader(shaped, ds, info.data_shape, batch_size, workers)
    family.hybridize_for_prediction(net)
    if network is None:
        dtype, _ = choose_dtype(dtype, [ctx.device_type for ctx in ctx_list])
        net = inference_block(net, dtype, ctx_list, family.example_shape(info.data_shape or 600),
                              static_shape=family.fixed_input)  # an R-CNN's graph is shape-free: any size
    scorer = family.new_metric(metric, info.classes, iou=iou)
    result = family.evaluate(net, loader, ctx_list, scorer, metric, info.classes, ds, dataset_cfg, split,
                             coco_results, progress=progress)
    result.update({"run": str(info.path), "params": str(params), "dataset": dataset_cfg.name,
                   "split": split, "images": len(ds), "dtype": dtype})
    refuse_nothing_evaluated(result)  # before any folder is written
    if analysis is not None:
        out_dir = eval_dir(info.path, split, weights="best" if network else Path(params).stem, dtype=dtype,
                           dataset=None if own_dataset else dataset_cfg.name)
        doc = write_eval_folder(out_dir, scorer, ds, result, family, info.data_shape, iou=iou, **analysis)
        result.update({"analysis_dir": str(out_dir), "analysis": doc["analysis"]})
    return result


def refuse_nothing_evaluated(result):
    """An evaluation without a single ground-truth object of the run's classes scored nothing
    (every AP undefined, mAP '-'): an error, not a result."""
    scores = result.get("box", result)  # a mask model: its box section has the same classes
    if scores.get("map") is None and all(ap is None for ap in scores.get("per_class", {}).values()):
        raise GluondetError(
            f"{result['dataset']} ({result['split']}, {result['images']} images): no object of the run's "
            f"classes ({', '.join(scores.get('per_class', {}))}) to evaluate; nothing was scored")
