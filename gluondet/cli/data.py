"""gluondet data: make, split, check, describe and convert datasets (no MXNet import here)."""
import sys

import click

from ..data.convert import SOURCE_FORMATS, TARGET_FORMATS
from ..errors import GluondetError
from ..ranges import check_ranges
from .options import config_dir_option, dataset_option, deprecated, emit_json, json_option

SPLIT_HELP = ("A role of the dataset config (train, val, test) or a split spec: 'trainval' for a VOC "
              "folder, '2007/trainval+2012/trainval' for a VOCdevkit. Default: every annotation.")


@click.group()
def data():
    """Make, split, check, describe and convert datasets.

    \b
    A dataset is a VOC folder (Annotations/, JPEGImages/, ImageSets/Main/), a VOCdevkit of such
    folders, a COCO instances .json, a COCO root folder (annotations/instances_*.json and the image
    folders), or a config name (configs/datasets/NAME.yaml). convert also reads YOLO and labelme.
    """


def _json_and_root(json_file, root, dataset):
    """(json_file, root), reading the old ``--json ROOT`` (when --json was a flag) as it was meant."""
    if json_file not in (None, "-") and not (root or dataset):
        deprecated(f"'--json {json_file}' (--json as a flag before ROOT)",
                   f"'{json_file} --json' (--json FILE now writes to FILE, as in eval and detect)")
        return "-", json_file
    return json_file, root


def _resolve(root, dataset, config_dir):
    """The DatasetConfig named by the positional ROOT or --dataset (exactly one of them)."""
    from ..config import resolve_dataset

    if root and dataset:
        raise GluondetError(f"give the dataset once: ROOT ({root}) or --dataset ({dataset}), not both")
    if not (root or dataset):
        raise GluondetError("no dataset: give a VOC folder, a COCO .json or a config name (ROOT or --dataset)")
    return resolve_dataset(root or dataset, config_dir)


def dataset_target(fn):
    """ROOT argument and --dataset/--config-dir options: the same dataset, named either way."""
    fn = config_dir_option(fn)
    fn = dataset_option(required=False, help_extra=" Same as ROOT.")(fn)
    return click.argument("root", required=False, metavar="[ROOT|NAME]")(fn)


@data.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--train", "n_train", default=300, show_default=True, type=int,
              help="Training images.")
@click.option("--val", "n_val", default=100, show_default=True, type=int,
              help="Validation images (also listed as test).")
@click.option("--seed", default=0, show_default=True, help="Random seed: the same seed gives the same files.")
@click.option("--size", default=256, show_default=True, type=int, help="Image side in pixels.")
@click.option("--masks", is_flag=True, help="Shapes with exact polygon masks, in both instance layouts: VOC "
              "SegmentationObject/ + SegmentationClass/ PNGs and COCO annotations/instances_{train,val}.json "
              "(with OUT/coco.yaml, a dataset config for them).")
def synth(out, n_train, n_val, seed, size, masks):
    """Write the demo dataset (coloured shapes, VOC layout) to OUT.

    The same data --dataset shapes_voc generates on first use. OUT must not exist or be empty.
    """
    from ..data.synth import SHAPES_CLASSES, write_shapes_voc

    check_ranges({"synth.train": n_train, "synth.val": n_val, "synth.size": size})
    root = write_shapes_voc(out, n_train=n_train, n_val=n_val, seed=seed, size=size, progress=True, masks=masks)
    click.echo(f"wrote {n_train} train + {n_val} val images of {', '.join(SHAPES_CLASSES)} to {root}")
    if masks:
        click.echo(f"with masks: VOC {root}/SegmentationObject, COCO --dataset {root}/coco.yaml")


@data.command()
@click.argument("root", type=click.Path(exists=True), metavar="VOC_ROOT|COCO.json")
@click.option("--val", default=0.2, show_default=True, type=float,
              help="Fraction of images for validation.")
@click.option("--test", default=0.1, show_default=True, type=float,
              help="Fraction of images for test.")
@click.option("--seed", default=0, show_default=True, help="Random seed: the same seed gives the same split.")
@click.option("--force", is_flag=True, help="Overwrite existing split files.")
def split(root, val, test, seed, force):
    """Split a dataset into train/val/test, stratified by class (each class spread over all three).

    \b
    A VOC folder: writes ROOT/ImageSets/Main/{train,val,test,trainval}.txt from ROOT/Annotations.
    A COCO instances .json: writes instances_{train,val,test}.json beside it; its folder is then
    a COCO root whose train/val/test roles are those files.
    """
    from pathlib import Path

    from ..data.split import write_splits

    check_ranges({"split.val": val, "split.test": test})
    splits = write_splits(root, val=val, test=test, seed=seed, force=force)
    counts = ", ".join(f"{name} {len(ids)}" for name, ids in splits.items())
    if Path(root).is_file():
        where = Path(root).resolve().parent
        click.echo(f"wrote {where}/instances_{{train,val,test}}.json: {counts}")
    else:
        click.echo(f"wrote {root}/ImageSets/Main/{{train,val,test,trainval}}.txt: {counts}")


@data.command()
@dataset_target
@click.option("--split", "split_name", metavar="S", help=SPLIT_HELP)
@json_option("the problems (a list of {file, severity, problem, detail})")
@click.option("--full-decode", is_flag=True,
              help="Decode every pixel of every image (default: only images whose file does not end whole).")
@click.option("--verbose", "-v", is_flag=True,
              help="List every warning (default: a warning that repeats shows its first lines and a count).")
def check(root, dataset, config_dir, split_name, json_file, full_decode, verbose):
    """Report every problem in a dataset, one line each: FILE: SEVERITY: PROBLEM: DETAIL.

    Reads annotations and image headers, and checks that each image file is whole (a JPEG or PNG
    cut short is an error; files without their end marker are decoded), in parallel and through a
    cache, so it is quick to re-run. Exit status 0 when there are no errors (warnings such as
    images with no objects are fine), 1 when there are errors.
    """
    from ..data.check import check_dataset, format_report

    json_file, root = _json_and_root(json_file, root, dataset)
    cfg = _resolve(root, dataset, config_dir)
    result = check_dataset(cfg, split_name, full_decode=full_decode, progress=json_file != "-")
    if json_file:
        emit_json(json_file, [p.to_dict() for p in result.problems])
    if json_file != "-":
        source = "from the config" if (cfg.classes or cfg.format == "coco") else "discovered, sorted"
        click.echo(f"{cfg.name}: {len(result.entries)} images, classes ({source}): {', '.join(result.classes)}")
        click.echo(format_report(result.problems, verbose=verbose))
    sys.exit(0 if result.ok else 1)


@data.command()
@dataset_target
@click.option("--split", "split_name", metavar="S", help=SPLIT_HELP)
@json_option("the statistics")
@click.option("--plot", type=click.Path(dir_okay=False), metavar="FILE.png",
              help="Also draw class counts, boxes per image, box sizes, aspect ratios, box-centre and "
                   "box-size heatmaps and (without --split) a per-split comparison into a PNG.")
def stats(root, dataset, config_dir, split_name, json_file, plot):
    """Count images and boxes (per class, per image) and describe box sizes and aspect ratios.

    Files that cannot be read (an unparseable annotation, a missing image) are left out of the
    counts and listed on stderr, and the exit status is then 1.
    """
    from ..data import READERS, ensure_dataset
    from ..data.check import format_report
    from ..data.stats import dataset_stats, format_stats, plot_stats, readable_entries

    json_file, root = _json_and_root(json_file, root, dataset)
    cfg = _resolve(root, dataset, config_dir)
    ensure_dataset(cfg)
    entries, broken = readable_entries(READERS[cfg.format](cfg, split_name))
    result = dataset_stats(entries)
    if json_file:
        emit_json(json_file, dict(result, unreadable=[p.to_dict() for p in broken]))
    if json_file != "-":
        click.echo(format_stats(result))
    if plot:
        splits = None if split_name else _split_entries(cfg, READERS[cfg.format])
        plot_stats(entries, plot, title=f"{cfg.name} ({split_name or 'all'})", splits=splits)
        if json_file != "-":
            click.echo(f"plot: {plot}")
    if broken:
        click.echo(f"gluondet: not counted: {len(broken)} problem(s) in files that cannot be read:\n"
                   + format_report(broken, limit=30), err=True)
        sys.exit(1)


def _split_entries(cfg, reader):
    """{role: readable entries} of the config's distinct splits (for the comparison); a split that
    cannot be read is said on stderr and left out of the comparison."""
    from ..data.stats import readable_entries

    splits, seen = {}, []
    for role, spec in cfg.splits.items():
        if spec in seen:
            continue
        seen.append(spec)
        try:
            splits[role] = readable_entries(reader(cfg, role))[0]
        except GluondetError as e:
            click.echo(f"note: split {role} left out of the comparison: {e}", err=True)
    return splits


@data.command()
@dataset_target
@click.option("--split", "split_name", metavar="S", help=SPLIT_HELP)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Folder to write into: the mosaics show_01.jpg, ... [show-<dataset>/].")
@click.option("--grid", default="4x4", show_default=True, metavar="COLSxROWS", help="Images per mosaic.")
@click.option("--pages", default=1, show_default=True, type=int, help="Mosaics to write (1-100).")
@click.option("--seed", default=0, show_default=True, help="Which images: the same seed picks the same ones.")
def show(root, dataset, config_dir, split_name, out_dir, grid, pages, seed):
    """Draw labelled images with their boxes and class names into mosaics, to look at the labels.

    Images are read as training reads them; a caption says whether the file's EXIF orientation
    was applied (the annotation describes the turned picture) or not (the stored pixels).
    """
    from ..data import READERS, ensure_dataset
    from ..data.show import show_dataset
    from ..data.stats import readable_entries
    from ..viz import parse_grid

    check_ranges({"show.pages": pages})
    cfg = _resolve(root, dataset, config_dir)
    cols_rows = parse_grid(grid)
    ensure_dataset(cfg)
    entries, broken = readable_entries(READERS[cfg.format](cfg, split_name))
    if broken:
        click.echo(f"note: {len(broken)} file(s) that cannot be read are not shown (see: gluondet data check)",
                   err=True)
    out_dir = out_dir or f"show-{cfg.name}"
    paths = show_dataset(entries, out_dir, cols_rows, pages, seed, classes=cfg.classes, progress=True)
    click.echo(f"wrote {len(paths)} mosaic(s) of {cfg.name} ({split_name or 'all'}) to {out_dir}/: "
               + ", ".join(p.name for p in paths))


@data.command()
@click.argument("source_format", metavar="FORMAT", type=click.Choice(SOURCE_FORMATS))
@click.argument("src", type=click.Path(exists=True))
@click.argument("dst", type=click.Path())
@click.option("--to", "to_format", type=click.Choice(TARGET_FORMATS), default="voc", show_default=True,
              help="The format to write.")
@click.option("--copy", is_flag=True, help="Copy the images (default: symbolic links to the source images).")
@click.option("--voc-integer", is_flag=True,
              help="With --to voc: widen boxes to whole pixels (counted), for tools that read VOC "
                   "coordinates as integers. Default: the coordinates the boxes have (up to 3 decimals).")
def convert(source_format, src, dst, to_format, copy, voc_integer):
    """Convert a dataset between formats: FORMAT (voc, coco, yolo, labelme) at SRC to --to at DST.

    \b
    voc      a VOC folder: Annotations/*.xml, JPEGImages/, ImageSets/Main/*.txt (splits);
             1-based inclusive pixels, read as GluonCV reads them
    coco     an instances .json, or a COCO root: annotations/instances_*.json + image folders;
             bbox [x, y, w, h] in 0-based continuous pixels
    yolo     a folder with data.yaml (or classes.txt): images/, labels/*.txt of
             'class cx cy w h' normalized to the image size
    labelme  a folder of labelme .json files (source only)

    \b
    Boxes are carried exactly (VOC: whole pixels stay whole, fractional ones keep up to 3 decimals;
    --voc-integer widens them to whole pixels, counted); class names and their order
    are kept; splits, negatives, difficult/crowd flags and polygons are carried where the target has
    them, and what it cannot hold is reported. Everything is read and checked before anything is
    written; DST must be new or empty and appears whole at the end.
    """
    from ..data.convert import convert_dataset

    summary = convert_dataset(source_format, src, dst, to_format, copy=copy, voc_integer=voc_integer)
    for line in summary["warnings"]:
        click.echo(f"warning: {line}", err=True)
    for line in summary["notes"]:
        click.echo(f"note: {line}", err=True)
    splits = ", ".join(f"{name} {n}" for name, n in summary["splits"].items())
    click.echo(f"converted {summary['images']} images, {summary['boxes']} boxes "
               f"({', '.join(summary['classes'])}){f'; splits: {splits}' if splits else ''} to {summary['output']}")
    if to_format == "voc" and not summary["splits"]:
        click.echo(f"next: gluondet data split {dst}")
