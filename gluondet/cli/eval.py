"""gluondet eval: score a trained run on a dataset split, print AP per class, write RUN/eval-<split>/."""
import click

from ..constants import METRICS
from .options import (
    NUM_WORKERS_HELP,
    config_dir_option,
    dtype_option,
    emit_json,
    json_option,
    quiet_option,
    skip_bad_option,
    which_option,
)


@click.command(name="eval")
@click.argument("run", metavar="RUN_DIR|EXPORT_DIR|PARAMS")
@click.option("--dataset", "-d", default=None, metavar="NAME|PATH",
              help="Dataset to evaluate on [the one the run trained on].")
@click.option("--split", default="test", show_default=True, help="Split (role or spec) to evaluate.")
@click.option("--metric", default=None, type=click.Choice(METRICS),
              help="VOC area mAP, VOC2007 11-point, or COCO [the run's validation metric]; a mask model "
                   "prints COCO box and mask AP (coco_segm or coco_bbox: which one is 'map' in --json).")
@which_option(" (ignored for a .params path or an export folder)")
@click.option("--ctx", default="cpu", show_default=True, metavar="DEVICES", help="Devices, e.g. cpu or gpu0,gpu1.")
@click.option("--batch-size", type=int, default=None, help="Images per batch [8; Faster R-CNN: one per device].")
@click.option("--num-workers", type=int, default=None, help=NUM_WORKERS_HELP)
@json_option("the result ({\"map\": ..., \"per_class\": {...}, \"analysis\": {...}, ...})")
@click.option("--coco-results", "coco_results", type=click.Path(dir_okay=False), default=None,
              help="Mask models: also write every scored detection in COCO's segm result format.")
@click.option("--iou", default=0.5, show_default=True, type=float,
              help="IoU a detection needs to count (VOC metrics, PR/F1 curves, confusion matrix), 0.05 to 0.95.")
@click.option("--score", "score_thresh", default=None, type=float,
              help="Score threshold (0 to 1) of the per-class table, confusion matrix and mosaics [the F1-best].")
@click.option("--grid", default="4x4", show_default=True, metavar="COLSxROWS",
              help="Images per mosaic of the worst images.")
@click.option("--mosaics", default=2, show_default=True, type=int,
              help="Mosaics of the worst images (most missed + false positives) to write.")
@click.option("--no-analysis", is_flag=True, help="Only print AP; write no RUN/eval-<split>/ folder.")
@skip_bad_option
@config_dir_option
@quiet_option
@dtype_option
def eval_cmd(run, dataset, split, metric, which, ctx, batch_size, num_workers, json_file, coco_results,
             iou, score_thresh, grid, mosaics, no_analysis, skip_bad, config_dir, quiet, dtype):
    """Evaluate a run folder (or a .params file inside one) and print AP per class and the mean.

    An export folder (gluondet export) is evaluated the same way, with the model its export.json
    names (MXNet symbol, INT8, or ONNX through onnxruntime), into EXPORT_DIR/eval-<split>/.

    Also writes RUN/eval-<split>/ (for other weights than best: RUN/eval-<split>-last/, ...):
    per-class precision, recall, TP, FP, FN at the F1-best score threshold, PR and F1 curves, the
    confusion matrix, a COCO-style error breakdown and mosaics of the worst images (ground truth
    solid, predictions dashed), all in analysis.json too. Mask models get the same analysis of
    their boxes, COCO box and mask AP per class in its table, and their masks in the mosaics.
    `gluondet detect --thresh best` uses the F1-best threshold; `gluondet report RUN` shows it all.
    On another --dataset than the run's own, only AP is printed: the folder stays the run's own.
    An evaluation with no object of the run's classes is an error.

    \b
    Examples:
      gluondet eval runs/shapes_voc-tiny_ssd
      gluondet eval runs/helmet_voc-ssd_512_vgg16_atrous --split test --metric voc07 --json ap.json
    """
    from ..ranges import check_ranges
    from ..runtime import configure_engine

    check_ranges({"batch_size": batch_size, "num_workers": num_workers, "iou": iou, "score": score_thresh,
                  "mosaics": mosaics})
    configure_engine(ctx, num_workers=num_workers)  # before anything imports MXNet
    from ..engine.validation import evaluate_run
    from ..eval.folder import format_threshold_table
    from ..eval.results import format_ap_table
    from ..export import evaluate_export, is_export
    from ..viz import parse_grid

    analysis = None if no_analysis else {"score_thresh": score_thresh, "grid": parse_grid(grid), "pages": mosaics}
    evaluate = evaluate_export if is_export(run) else evaluate_run
    result = evaluate(run, dataset=dataset, split=split, metric=metric, ctx=ctx, which=which,
                      batch_size=batch_size, num_workers=num_workers, config_dir=config_dir,
                      skip_bad=skip_bad, coco_results=coco_results, progress=not quiet, dtype=dtype,
                      iou=iou, analysis=analysis, own_dataset=_runs_own_dataset(run, dataset, config_dir))
    if json_file == "-":
        emit_json(json_file, result)
        return
    click.echo(f"{result['params']} on {result['dataset']} ({result['split']}, {result['images']} images)")
    if "mask" in result:  # a mask model: box AP, then mask AP, each per class
        click.echo("box AP:\n" + format_ap_table(result["box"]))
        click.echo("\nmask AP:\n" + format_ap_table(result["mask"]))
    else:
        click.echo(format_ap_table({k: v for k, v in result.items() if k != "analysis"}))
    if "analysis" in result:
        click.echo("")
        click.echo(format_threshold_table(result["analysis"]))
        click.echo(f"pictures, mosaics and every number: {result['analysis_dir']}/")
    if coco_results:
        click.echo(f"wrote {coco_results}")
    if json_file:
        emit_json(json_file, result)
        click.echo(f"wrote {json_file}")


def _runs_own_dataset(run, dataset, config_dir):
    """Whether --dataset (None: the run's own) is the data the run trained on, as its config.yaml
    recorded it: the same name and root."""
    from pathlib import Path

    from ..config import resolve_dataset
    from ..run_folder import RunFolder, RunFolderError

    if not dataset:
        return True
    try:
        own = RunFolder.open(run).dataset_config()
    except RunFolderError:  # no dataset recorded (or no run: evaluate_run says so): nothing to match
        return False
    other = resolve_dataset(dataset, config_dir)
    return other.name == own.name and Path(other.root).resolve() == Path(own.root).resolve()
