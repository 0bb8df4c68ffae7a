"""``gluondet data show``: mosaics of labelled images, to look at the labels before training.

Each tile is an image as the dataset reader decodes it (the pixels training sees) with its boxes,
class names (and instance masks where the dataset item carries them), and a caption naming the
image, its size, its box count and what the image reader decided about it (EXIF orientation
applied or not). A rotated or mislabelled set is obvious here and invisible in a table.
"""
from pathlib import Path

import numpy as np

from ..errors import GluondetError

TILE = 320
MOSAIC_PATTERN = "show_{:02d}.jpg"


def read_for_show(entry):
    """(HxWx3 uint8 RGB image, note) for a reader entry: decoded by gluondet.image as training
    decodes it (its EXIF orientation applied or not, as ``choose_orientation`` decided from the
    annotation's size), and a note saying which, when the file has an orientation at all."""
    from ..image import read_image

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
    """(tile image, caption) for one reader entry: its boxes and class names drawn on it."""
    from ..viz import draw_truth_and_predictions, resize_for_tile

    raw, note = read_for_show(entry)
    image, fit = resize_for_tile(raw, tile)
    index = {name: i for i, name in enumerate(classes)}
    boxes = np.array([o[1:5] for o in entry.objects], np.float64).reshape(-1, 4) * fit
    ids = np.array([index[o[0]] for o in entry.objects], np.int64)
    polygons, undrawn = _polygons(entry, fit)
    panel = draw_truth_and_predictions(image, (boxes, ids, None), None, classes, colors=colors,
                                       polygons=polygons)
    h, w = raw.shape[:2]
    caption = f"{entry.image_id} ({w}x{h}, {len(entry.objects)} boxes)\n{note or 'no EXIF orientation to apply'}"
    if undrawn:
        caption += f"; {undrawn} RLE/PNG masks not drawn"
    return panel, caption


def _polygons(entry, fit):
    """(per object its polygon outlines scaled by ``fit``, or None; how many masks are not polygons).

    Seam: instance masks arrive with the masks work as ``Entry.masks`` (parallel to ``objects``; a
    COCO polygon list, an RLE or a VOC PNG spec each). Polygons are drawn here; RLE and PNG masks
    are counted in the caption until they are drawn through that work's decoder.
    """
    specs = getattr(entry, "masks", None)
    if not specs:
        return None, 0
    polygons = [[np.asarray(p, np.float64) * fit for p in spec] if isinstance(spec, list) else None
                for spec in specs]
    return polygons, sum(1 for spec in specs if spec is not None and not isinstance(spec, list))


def show_dataset(entries, out_dir, grid=(4, 4), pages=1, seed=0, classes=None, progress=False):
    """Write ``pages`` mosaics (show_01.jpg, ...) of randomly picked entries to ``out_dir``;
    returns their paths."""
    from ..progress import Progress
    from ..viz import class_colors, mosaic, write_jpeg

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
