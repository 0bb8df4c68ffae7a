"""gluondet eval: score a trained run on a dataset split and print AP per class."""
import click

from ..constants import METRICS
from .options import config_dir_option, dtype_option, emit_json, json_option, quiet_option, skip_bad_option


@click.command(name="eval")
@click.argument("run", metavar="RUN_DIR|PARAMS")
@click.option("--dataset", "-d", default=None, metavar="NAME|PATH",
              help="Dataset to evaluate on [the one the run trained on].")
@click.option("--split", default="test", show_default=True, help="Split (role or spec) to evaluate.")
@click.option("--metric", default=None, type=click.Choice(METRICS),
              help="VOC area mAP, VOC2007 11-point, or COCO [the run's validation metric]; a mask model "
                   "prints COCO box and mask AP (coco_segm or coco_bbox: which one is 'map' in --json).")
@click.option("--which", default="best", show_default=True, metavar="best|last|EPOCH",
              help="Which weights of the run folder (ignored for a .params path).")
@click.option("--ctx", default="cpu", show_default=True, metavar="DEVICES", help="Devices, e.g. cpu or gpu0,gpu1.")
@click.option("--batch-size", type=int, default=None, help="Images per batch [8; Faster R-CNN: one per device].")
@click.option("--num-workers", type=int, default=None, help="DataLoader processes [half the usable CPUs, 1 to 4].")
@json_option("the result ({\"map\": ..., \"per_class\": {...}, ...})")
@click.option("--coco-results", "coco_results", type=click.Path(dir_okay=False), default=None,
              help="Mask models: also write every scored detection in COCO's segm result format.")
@skip_bad_option
@config_dir_option
@quiet_option
@dtype_option
def eval_cmd(run, dataset, split, metric, which, ctx, batch_size, num_workers, json_file, coco_results,
             skip_bad, config_dir, quiet, dtype):
    """Evaluate a run folder (or a .params file inside one) and print AP per class and the mean.

    \b
    Examples:
      gluondet eval runs/shapes_voc-tiny_ssd
      gluondet eval runs/helmet_voc-ssd_512_vgg16_atrous --split test --metric voc07 --json ap.json
    """
    from ..engine.validation import evaluate_run
    from ..eval.report import format_ap_table

    result = evaluate_run(run, dataset=dataset, split=split, metric=metric, ctx=ctx, which=which,
                          batch_size=batch_size, num_workers=num_workers, config_dir=config_dir,
                          skip_bad=skip_bad, coco_results=coco_results, progress=not quiet, dtype=dtype)
    if json_file == "-":
        emit_json(json_file, result)
        return
    click.echo(f"{result['params']} on {result['dataset']} ({result['split']}, {result['images']} images)")
    if "mask" in result:  # a mask model: box AP, then mask AP, each per class
        click.echo("box AP:\n" + format_ap_table(result["box"]))
        click.echo("\nmask AP:\n" + format_ap_table(result["mask"]))
    else:
        click.echo(format_ap_table(result))
    if coco_results:
        click.echo(f"wrote {coco_results}")
    if json_file:
        emit_json(json_file, result)
        click.echo(f"wrote {json_file}")
