"""gluondet detect: draw a trained detector's boxes on images and folders, optionally as JSON."""
import sys
from pathlib import Path

import click

from ..errors import GluondetError
from ..image import DRAWABLE_SUFFIXES
from ..ranges import check_ranges
from .options import box_options, config_dir_option, dtype_option, emit_json, json_option, set_quiet, which_option

SUMMARY_ROWS = 40  # the table lists this many images; --json has them all


def _anchor_pos(value):
    try:
        fx, fy = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"'{value}': give two fractions cx,cy such as 0.5,0.5") from None
    if not (0 <= fx <= 1 and 0 <= fy <= 1):
        raise click.BadParameter(f"'{value}': cx and cy are fractions of the width/height, 0..1")
    return fx, fy


@click.command(name="detect")
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE_OR_DIR...")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False),
              help="Run folder (gluondet train) or export folder (gluondet export). "
                   "Default: the most recently trained run under runs/.")
@click.option("--params", "params_file", type=click.Path(exists=True, dir_okay=False),
              help="A .params file inside a run folder (config.yaml and classes.txt must be beside it).")
@which_option()
@box_options("Keep boxes", " (on the val split first)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Folder to write into: the drawn images (<name>.det.<ext>) [RUN/detections/].")
@json_option("every image's boxes (original pixels)")
@click.option("--coco-results", "coco_file", type=click.Path(dir_okay=False),
              help="Also write COCO results format (image_id, category_id, bbox [x,y,w,h], score; mask "
                   "models: segmentation as COCO RLE instead of bbox, COCO's segm format); "
                   "needs --dataset, the COCO dataset the images come from.")
@click.option("--dataset", "-d", metavar="NAME|JSON",
              help="COCO dataset (config name or instances .json) mapping file names to image ids, "
                   "for --coco-results.")
@click.option("--ctx", default="cpu", show_default=True, metavar="DEVICES",
              help="Devices, e.g. cpu or gpu0,gpu1: each batch is spread over them "
                   "(an INT8 export runs on cpu).")
@click.option("--batch-size", default=8, show_default=True, type=int,
              help="Images per forward pass (SSD; Faster R-CNN runs one image at a time).")
@click.option("--no-draw", is_flag=True, help="Only detect (for --json); write no images.")
@click.option("--show-anchors", is_flag=True,
              help="Also write <name>.anchors.<ext>: the network's anchor boxes (SSD default boxes of "
                   "every size and ratio, or Faster R-CNN's RPN anchors) at --anchor-pos on the "
                   "feature maps --anchor-layer, so you can see whether they fit your objects.")
@click.option("--anchor-layer", "anchor_layers", type=int, multiple=True, metavar="N",
              help="Feature map(s) to show, 0 = the first (finest: small anchors, dense grid); higher "
                   "layers are coarser with larger anchors. Repeatable; default: all. The legend "
                   "lists each layer's grid, stride and anchor sizes to help you choose.")
@click.option("--anchor-pos", "anchor_pos", multiple=True, metavar="CX,CY",
              help="Where to show anchors, as fractions of width,height: 0.5,0.5 is the centre "
                   "(default), 0.25,0.25 the upper-left quarter. Put it on an object to compare. "
                   "Repeatable.")
@click.option("--quiet", "-q", is_flag=True, callback=set_quiet,
              help="No progress bar or progress line, and no summary table.")
@dtype_option
@config_dir_option
def detect(inputs, run_dir, params_file, which, thresh, max_boxes, out_dir, json_file, coco_file,
           dataset, ctx, batch_size, no_draw, show_anchors, anchor_layers, anchor_pos, quiet, dtype, config_dir):
    """Detect objects in images and folders of images with a trained run.

    \b
    Examples:
      gluondet detect photo.jpg                      # newest run under runs/
      gluondet detect photos/ --run runs/helmet_voc-ssd_512_vgg16_atrous --json boxes.json
      gluondet detect photo.jpg --show-anchors --anchor-layer 0 --anchor-pos 0.5,0.5

    Writes <name>.det.<ext> into --out (never over the input). A file that cannot be read is
    reported by name and the others go on; the exit status is 1 if any failed.
    """
    check_ranges({"max_boxes": max_boxes, "batch_size": batch_size, "thresh": None if thresh == "best" else thresh})
    if run_dir and params_file:
        raise GluondetError("give --run or --params, not both")
    if coco_file and not dataset:
        raise GluondetError("--coco-results needs --dataset (the COCO dataset the images come from)")
    positions = [_anchor_pos(p) for p in anchor_pos] or [(0.5, 0.5)]
    source = _weights_source(run_dir, params_file)
    model_dir = source.parent if source.is_file() else source
    thresh = _resolve_thresh(thresh, source, model_dir, which)

    from ..pipeline import detect_files
    from ..predict import Detector, image_record
    from ..runtime import configure_engine, make_contexts

    configure_engine(ctx)
    contexts = make_contexts(ctx)
    images = _input_images(inputs)
    detector = Detector.load(source, ctx=contexts, which=which, max_boxes=max_boxes)
    detector.set_dtype(dtype)
    out_dir = Path(out_dir) if out_dir else model_dir / "detections"
    _note_missing_glyphs(detector.classes, no_draw)

    from .. import viz
    from ..progress import say_error

    outputs = _output_names(images, out_dir)
    records, failed, rows = [], [], []
    anchor_cache = {}
    for result in detect_files(detector, images, thresh=thresh, max_boxes=max_boxes,
                               batch_size=batch_size, progress=not quiet):
        if result.error:
            say_error(result.error)  # above the progress bar
            failed.append({"file": str(result.path), "error": result.error})
            continue
        dets = result.detections
        records.append(image_record(result.path, result.image, dets, detector.classes))
        rows.append((result.path.name, dets.counts(detector.classes), result.seconds))
        if not no_draw:
            _write_image(outputs[result.path], viz.draw_detections(result.image, dets, detector.classes))
        if show_anchors:  # asked for by name, so drawn with --no-draw too
            _write_anchors(result, detector, outputs[result.path], anchor_layers, positions, anchor_cache)

    if json_file:
        _write_json(json_file, detector, records, failed, thresh)
    if coco_file:
        _write_coco_results(coco_file, dataset, detector.classes, records, config_dir)
    if not quiet and json_file != "-":  # with --json -, stdout holds the JSON alone
        _print_summary(rows, len(failed), out_dir if not no_draw or show_anchors else None, detector)
    if failed:
        click.echo(f"{len(failed)} of {len(images)} file(s) failed", err=True)
        sys.exit(1)


def _resolve_thresh(thresh, source, model_dir, which):
    """A score, or with ``best`` the F1-best threshold that ``gluondet eval`` found for these weights."""
    if thresh != "best":
        return thresh
    from ..eval.folder import best_threshold, weights_name

    thresh, found_in = best_threshold(model_dir, weights_name(source if source.is_file() else which))
    click.echo(f"--thresh best: {thresh:.4f} (F1-best, from {found_in})", err=True)
    return thresh


def _weights_source(run_dir, params_file):
    """The run folder, export folder or .params file to load (default: the newest run under runs/)."""
    from ..run_folder import RunFolder

    if params_file:
        source = Path(params_file)
        from ..export_folder import EXPORT_META

        if not (source.parent / EXPORT_META).is_file():
            RunFolder.open(source)  # the run folder around the weights: config and classes beside them
        return source
    if run_dir:
        return Path(run_dir)
    source = RunFolder.latest("runs").path
    click.echo(f"using the most recent run: {source} (choose another with --run)", err=True)
    return source


def _input_images(inputs):
    """The image files of the inputs, leaving out (and noting) earlier drawings and non-images."""
    from ..image import list_images

    images, left_out = list_images(inputs)
    earlier = [p for p in images if p.stem.endswith((".det", ".anchors"))]
    if earlier:  # drawings of an earlier detect into the same folder are not new inputs
        images = [p for p in images if p not in earlier]
        click.echo(f"note: left out {len(earlier)} drawing(s) of an earlier gluondet detect "
                   f"(e.g. {earlier[0].name})", err=True)
    if left_out:
        examples = ", ".join(p.name for p in left_out[:3])
        click.echo(f"note: left out {len(left_out)} file(s) without an image suffix ({examples}"
                   f"{', ...' if len(left_out) > 3 else ''})", err=True)
    if not images:
        raise GluondetError(f"no images in {', '.join(inputs)}")
    return images


def _note_missing_glyphs(classes, no_draw):
    if no_draw:
        return
    from .. import viz

    missing = viz.missing_glyphs("".join(classes))
    if missing:
        click.echo(
            f"note: the label font ({viz.font_name()}) has no glyphs for {''.join(missing[:10])}; "
            f"those characters show as boxes. Install a CJK font (e.g. fonts-noto-cjk) or set "
            f"{viz.FONT_ENV}=/path/to/font.ttf", err=True)


def _output_names(images, out_dir):
    """<stem>.det.<ext> in out_dir for each input, made unique, and never an input file itself."""
    taken, inputs, outputs = set(), {p.resolve() for p in images}, {}
    for path in images:
        ext = path.suffix.lower() if path.suffix.lower() in DRAWABLE_SUFFIXES else ".png"
        stem, n = path.stem, 1
        while True:
            name = f"{stem}.det{ext}" if n == 1 else f"{stem}-{n}.det{ext}"
            candidate = out_dir / name
            if name not in taken and candidate.resolve() not in inputs:
                break
            n += 1
        taken.add(name)
        outputs[path] = candidate
    return outputs


def _write_image(path, image_rgb):
    import cv2

    from ..fileio import atomic_write_bytes

    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(path.suffix, image_rgb[:, :, ::-1], params)
    if not ok:
        raise GluondetError(f"{path}: OpenCV cannot encode this format")
    atomic_write_bytes(path, encoded.tobytes())


def _write_anchors(result, detector, out_path, anchor_layers, positions, cache):
    from .. import viz

    h, w = result.image.shape[:2]
    if (w, h) not in cache:
        layers = detector.anchor_layers(w, h)
        if anchor_layers:
            bad = [n for n in anchor_layers if not 0 <= n < len(layers)]
            if bad:
                raise GluondetError(f"--anchor-layer {bad[0]}: this network has layers 0..{len(layers) - 1}")
            layers = [layers[n] for n in anchor_layers]
        cache[(w, h)] = layers
        for layer in layers:
            click.echo(viz.anchor_legend(layer), err=True)
    anchors_path = out_path.with_name(out_path.name.replace(".det", ".anchors", 1))
    _write_image(anchors_path, viz.draw_anchors(result.image, cache[(w, h)], positions))


def _write_json(json_file, detector, records, failed, thresh):
    doc = {"model": detector.info.source, "classes": detector.classes, "thresh": thresh,
           "images": records, "failed": failed}
    emit_json(json_file, doc)


def _write_coco_results(coco_file, dataset, classes, records, config_dir=None):
    """COCO results list for the images that belong to the COCO dataset ``dataset``."""
    import json

    from ..config import resolve_dataset
    from ..data.coco import coco_paths, load_coco_api
    from ..fileio import atomic_write_text

    cfg = resolve_dataset(dataset, config_dir)
    if cfg.format != "coco":
        raise GluondetError(f"--dataset {dataset}: --coco-results needs a COCO dataset, this is {cfg.format}")
    image_ids, category_ids = {}, {}
    for spec in {str(s): s for s in cfg.splits.values()}.values():
        ann_path, _ = coco_paths(cfg.root, spec)  # a relative path is taken from the dataset root
        ann = load_coco_api(ann_path).dataset
        for img in ann.get("images", []):
            image_ids[Path(img["file_name"]).name] = img["id"]
        for cat in ann.get("categories", []):
            category_ids[cat["name"]] = cat["id"]
    missing_classes = [c for c in classes if c not in category_ids]
    if missing_classes:
        raise GluondetError(f"--dataset {dataset}: class '{missing_classes[0]}' is not a category there")
    results, unknown = [], []
    for rec in records:
        image_id = image_ids.get(Path(rec["file"]).name)
        if image_id is None:
            unknown.append(Path(rec["file"]).name)
            continue
        for box in rec["boxes"]:
            x0, y0, x1, y1 = box["bbox"]
            results.append({"image_id": image_id, "category_id": category_ids[box["class"]],
                            # continuous coordinates, as gluondet's COCO reader gives
                            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                            "score": box["score"]})
            if "segmentation" in box:  # a mask model: COCO's segm result format (RLE, no bbox: see
                results[-1]["segmentation"] = box["segmentation"]  # gluondet.eval.instance.coco_results)
                del results[-1]["bbox"]
    if unknown:
        click.echo(f"note: {len(unknown)} image(s) are not in {dataset} and are not in the COCO results "
                   f"(e.g. {unknown[0]})", err=True)
    atomic_write_text(coco_file, json.dumps(results) + "\n")


def _print_summary(rows, n_failed, out_dir, detector):
    if not rows:
        return
    from ..progress import clip, ljust, text_width

    width = min(40, max(len("image"), *(text_width(name) for name, _, _ in rows)))
    click.echo(f"{'image':<{width}}  {'boxes':>5}  {'time':>8}  per class")
    for name, counts, seconds in rows[:SUMMARY_ROWS]:
        per_class = ", ".join(f"{c} {n}" for c, n in counts.items()) or "-"
        click.echo(f"{ljust(clip(name, width), width)}  {sum(counts.values()):>5}  {seconds * 1000:>6.0f}ms  {per_class}")
    if len(rows) > SUMMARY_ROWS:
        click.echo(f"... and {len(rows) - SUMMARY_ROWS} more images (all of them are in --json)")
    total = sum(s for _, _, s in rows)
    boxes = sum(sum(c.values()) for _, c, _ in rows)
    line = f"{len(rows)} image(s), {boxes} box(es), {len(rows) / total if total else 0:.1f} images/s"
    if n_failed:
        line += f", {n_failed} failed"
    if out_dir:
        line += f"; drawn images in {out_dir}"
    click.echo(line)
