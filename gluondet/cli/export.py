"""gluondet export: a run folder as a deployable model (MXNet symbol + params, ONNX, or INT8)."""
from pathlib import Path

import click

from ..constants import EXPORT_FORMATS
from ..ranges import check_ranges
from .options import config_dir_option, dtype_option, which_option


@click.command(name="export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False), metavar="RUN_DIR")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Folder to write into: the export [RUN_DIR/export, RUN_DIR/export-int8 with --int8].")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="mxnet", show_default=True,
              help="mxnet: symbol JSON + params (SymbolBlock.imports, model servers); "
                   "onnx: also model.onnx (needs the onnx extra: onnx and onnxruntime).")
@which_option()
@click.option("--int8", is_flag=True,
              help="Quantize to INT8 with MXNet's oneDNN backend for fast CPU inference "
                   "(SSD models), calibrated on --calib-images images of the run's val split.")
@click.option("--calib-images", default=32, show_default=True, type=int,
              help="Images used to calibrate INT8 activation ranges.")
@click.option("--calib-data", metavar="DIR|DATASET",
              help="Calibrate on this folder of images or dataset instead of the run's val split.")
@click.option("--ctx", default="cpu", show_default=True, metavar="DEVICES",
              help="Devices to load the run on, e.g. cpu or gpu0,gpu1 (INT8 calibration runs on the CPU).")
@click.option("--verify", is_flag=True,
              help="Then evaluate the export and the run on the same --split images: mAP of both, the "
                   "difference per class, boxes and speed; exit 1 beyond the format's tolerance "
                   "(near 0 in float32, a point or two for INT8: README, Deploying). Recorded in export.json.")
@click.option("--split", default="val", show_default=True, help="Split (role or spec) --verify evaluates on.")
@dtype_option
@config_dir_option
def export(run_dir, out_dir, fmt, which, int8, calib_images, calib_data, ctx, verify, split, dtype, config_dir):
    """Export a trained run for deployment.

    \b
    The folder holds model-symbol.json + model-0000.params, classes.txt, config.yaml and
    export.json (input size, normalisation, classes). Load it with
      gluondet detect IMAGES --run EXPORT_DIR
    or in Python with
      mxnet.gluon.SymbolBlock.imports('model-symbol.json', ['data'], 'model-0000.params')
    Input: float32 NCHW RGB, resized as export.json says and normalised with its mean/std;
    outputs: class ids, scores, boxes (in input pixels). export.json's format says which model
    the folder is (mxnet, onnx or int8); gluondet eval EXPORT_DIR scores it on a dataset, and
    --verify checks it against the run right away.
    """
    check_ranges({"calib_images": calib_images})
    if verify:  # evaluation: the engine eval runs on (see runtime.configure_engine), before MXNet loads
        from ..runtime import configure_engine

        configure_engine(ctx)
    from ..export import export_run

    run_dir = Path(run_dir)
    if out_dir is None:
        out_dir = run_dir / ("export-int8" if int8 else "export")
    export_run(run_dir, Path(out_dir), fmt=fmt, which=which, int8=int8, calib_images=calib_images,
               calib_source=calib_data, config_dir=config_dir, log=lambda m: click.echo(m, err=True),
               ctx=ctx, dtype=dtype)
    click.echo(str(out_dir))
    if verify:
        _verify(run_dir, Path(out_dir), split, which, ctx, config_dir)


def _verify(run_dir, out_dir, split, which, ctx, config_dir):
    """--verify: print the comparison; a failed one is one line on stderr and exit status 1."""
    import sys

    from ..export import format_verification, verify_export

    outcome = verify_export(run_dir, out_dir, split=split, which=which, ctx=ctx, config_dir=config_dir)
    click.echo(format_verification(outcome, run_dir, out_dir))
    if not outcome["passed"]:
        click.echo(f"{out_dir}: verification failed, the {outcome['format']} export does not compute what "
                   f"its run does: {outcome['reason']}", err=True)
        sys.exit(1)
