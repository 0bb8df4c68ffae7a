"""Validation during training: switch to the predict graph, score with gluondet.eval, switch back."""
from .steps import hybridize_for_prediction, hybridize_for_training

METRIC_NAMES = {"voc": "VOC mAP (area)", "voc07": "VOC07 mAP (11-point)", "coco": "COCO mAP@[.5:.95]"}


def validate(net, family, loader, ctx_list, metric_name, classes, progress=True):
    """``gluondet.eval.evaluate``'s result dict for ``net`` on ``loader``, with ``map`` a float
    (an undefined mean, no ground truth at all, counts as 0); leaves the net ready to train again."""
    from ..eval import make_metric
    from ..eval.evaluate import evaluate

    hybridize_for_prediction(net, family)
    try:
        result = evaluate(net, loader, ctx_list, make_metric(metric_name, classes), progress=progress)
    finally:
        hybridize_for_training(net, family)
    result["map"] = float(result["map"] or 0.0)
    return result


def run_dataset_config(info, dataset=None, config_dir=None):
    """The DatasetConfig to evaluate a run on: ``dataset`` if given, else the one it trained on."""
    from pathlib import Path

    from ..config import DatasetConfig, resolve_dataset
    from ..errors import GluondetError

    if dataset:
        return resolve_dataset(dataset, config_dir)
    saved = dict(info.config.get("dataset") or {})
    if not saved.get("root"):
        raise GluondetError(f"{info.run_dir / 'config.yaml'}: no dataset recorded; pass --dataset")
    saved["root"] = Path(saved["root"])
    saved["source"] = Path(saved["source"]) if saved.get("source") else None
    saved["classes"] = None  # the run's classes are passed to the reader explicitly
    known = DatasetConfig.__dataclass_fields__
    return DatasetConfig(**{k: v for k, v in saved.items() if k in known})


def evaluate_run(run, dataset=None, split="test", metric=None, ctx="cpu", which="best",
                 batch_size=None, num_workers=None, config_dir=None, skip_bad=False, progress=True):
    """Evaluate a run folder (or a .params inside one) on a dataset split; the result dict of
    gluondet.eval.report plus ``run``, ``params``, ``dataset``, ``split``, ``images``.

    The dataset is read with the run's classes (a class the run does not know is an error in the
    dataset check, never silently dropped).
    """
    from ..data import load_dataset
    from ..data.loader import default_num_workers, val_loader
    from ..eval import make_metric
    from ..eval.evaluate import evaluate
    from ..runtime import make_contexts
    from .checkpoint import load_run

    ctx_list = make_contexts(ctx)
    net, info = load_run(run, which=which, ctx=ctx_list)
    metric = metric or (info.config.get("train") or {}).get("metric") or "voc"
    dataset_cfg = run_dataset_config(info, dataset, config_dir)
    ds = load_dataset(dataset_cfg, split, classes=info.classes, skip_bad=skip_bad)
    workers = default_num_workers() if num_workers is None else num_workers
    if info.family == "faster_rcnn":
        batch_size = len(ctx_list)
    loader = val_loader(info.family, net, ds, info.data_shape, batch_size or 8, workers)
    hybridize_for_prediction(net, info.family)
    result = evaluate(net, loader, ctx_list, make_metric(metric, info.classes), progress=progress)
    result.update({"run": str(info.run_dir), "params": str(info.params), "dataset": dataset_cfg.name,
                   "split": split, "images": len(ds)})
    return result
