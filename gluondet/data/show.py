"""``gluondet data show``: mosaics of labelled images, to look at the labels before training.

Each tile is an image as the dataset reader decodes it (the pixels training sees) with its boxes,
class names (and instance masks where the dataset item carries them), and a caption naming the
image, its size, its box count and what the image reader decided about it (EXIF orientation
applied or not). A rotated or mislabelled set is obvious here and invisible in a table.
"""
from pathlib import Path

import numpy as np

from ..errors import GluondetError
from ..image import read_image
from ..progress import Progress
from ..viz import class_colors, draw_truth_and_predictions, mosaic, resize_for_tile, resize_masks, write_jpeg
from .masks import decode_masks

TILE = 320
MOSAIC_PATTERN = "show_{:02d}.jpg"


def read_for_show(entry):
    """(HxWx3 uint8 RGB image, note) for a reader entry: decoded by gluondet.image as training
    decodes it (its EXIF orientation applied or not, as ``choose_orientation`` decided from the
    annotation's size), and a note saying which, when the file has an orientation at all."""

    image = read_image(entry.image_path, apply_orientation=entry.apply_orientation)
    if entry.orientation in (None, 1):
        return image, ""
    if entry.apply_orientation:
        return image, f"EXIF orientation {entry.orientation} applied (boxes on the turned picture)"
    return image, f"EXIF orientation {entry.orientation} not applied (boxes on the stored pixels)"


def pick_entries(entries, count, seed=0):
    """Up to ``count`` entries with an image, in a random order fixed by ``seed``."""
    usable = [e for e in entries if e.image_path]
    order = np.random.default_rng(seed).permutation(len(usable))
    return [usable[i] for i in order[:count]]


def entry_tile(entry, classes, tile=TILE, colors=None):
    """(tile image, caption) for one reader entry: its boxes, masks and class names drawn on it."""

    raw, note = read_for_show(entry)
    image, fit = resize_for_tile(raw, tile)
    index = {name: i for i, name in enumerate(classes)}
    boxes = np.array([o[1:5] for o in entry.objects], np.float64).reshape(-1, 4) * fit
    ids = np.array([index[o[0]] for o in entry.objects], np.int64)
    masks, undrawn = entry_masks(entry, raw.shape[0], raw.shape[1])
    if masks is not None:
        masks = resize_masks(masks, (image.shape[1], image.shape[0]))
    panel = draw_truth_and_predictions(image, (boxes, ids, None), None, classes, colors=colors,
                                       truth_masks=masks)
    h, w = raw.shape[:2]
    caption = f"{entry.image_id} ({w}x{h}, {len(entry.objects)} boxes)\n{note or 'no EXIF orientation to apply'}"
    if undrawn:
        caption += f"; {undrawn} bad masks not drawn (see data check)"
    return panel, caption


def entry_masks(entry, height, width):
    """((N, height, width) uint8 masks of an entry's objects, or None when it has none; how many
    could not be drawn). Every kind the readers give (COCO polygons and RLE, VOC SegmentationObject
    PNGs) is rasterized by ``data.masks.decode_masks`` (pycocotools); an object without a mask, or
    whose mask does not decode to the image's size (see ``data check``), gets an empty one."""

    specs = getattr(entry, "masks", None)
    if not specs:
        return None, 0
    masks = np.zeros((len(entry.objects), height, width), np.uint8)
    undrawn = 0
    for k, spec in enumerate(specs[:len(masks)]):
        if spec is None:
            continue
        try:
            mask = decode_masks([spec], height, width)[0]
        except (GluondetError, ValueError, TypeError, KeyError):  # unreadable PNG, invalid RLE
            undrawn += 1
            continue
        if mask.shape != (height, width):
            undrawn += 1
            continue
        masks[k] = mask
    return masks, undrawn


def show_dataset(entries, out_dir, grid=(4, 4), pages=1, seed=0, classes=None, progress=False):
    """Write ``pages`` mosaics (show_01.jpg, ...) of randomly picked entries to ``out_dir``;
    returns their paths."""

    # the config's classes first (their colours match training's), then any name it does not list:
    # this is where a typo or a stray class shows up, so it is drawn, not refused
    classes = list(classes or [])
    classes += sorted({o[0] for e in entries for o in e.objects} - set(classes))
    per_page = grid[0] * grid[1]
    chosen = pick_entries(entries, per_page * pages, seed)
    if not chosen:
        raise GluondetError("no images to show (the split lists none, or none has an image file)")
    colors = class_colors(len(classes))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    bar = Progress(total=len(chosen), desc="show", unit="img", enabled=progress, summary=False)
    try:
        for start in range(0, len(chosen), per_page):
            tiles = []
            for entry in chosen[start:start + per_page]:
                tiles.append(entry_tile(entry, classes, colors=colors))
                bar.update(1)
            sheet = mosaic([t for t, _ in tiles], [c for _, c in tiles], grid, TILE)
            path = out_dir / MOSAIC_PATTERN.format(len(paths) + 1)
            write_jpeg(sheet, path)
            paths.append(path)
    finally:
        bar.close()
    return paths
