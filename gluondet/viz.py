"""Drawing detections and anchor boxes on images.

Text is drawn with PIL and a TrueType font, not OpenCV's ``putText`` (which only knows ASCII), so
class names such as ``安全帽`` or ``Straße`` come out as written when the font has their glyphs.
The font is, in order: ``$GLUONDET_FONT``; Noto Sans CJK from the pinned ``noto-cjk-sans-otc``
package (a runtime dependency, so pip alone brings CJK glyphs); a system font with CJK glyphs (found
with ``fc-list`` or in the usual places); DejaVu Sans (system or matplotlib's copy); PIL's built-in
font. ``use_font_in_matplotlib`` makes matplotlib's pictures (eval plots, stats) use the same font.
``missing_glyphs`` tells which characters the chosen font cannot draw, so the caller can say so once.

Each label sits on a filled box of its class colour with black or white text, whichever contrasts
with that colour, so it reads on any image; labels are moved inside the image, never clipped.
"""
import colorsys
import functools
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from .errors import GluondetError
from .fileio import atomic_path

FONT_ENV = "GLUONDET_FONT"
# Fonts with CJK glyphs where Linux, macOS and Windows usually keep them.
CJK_FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/Hiragino Sans GB.ttc",
    "/Library/Fonts/Arial Unicode.ttf",
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/simhei.ttf",
    "C:/Windows/Fonts/malgun.ttf",
)
DEJAVU_CANDIDATES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",)
MASK_ALPHA = 0.45  # opacity of a mask's fill over the image
MASK_DASH = 6  # contour pixels per dash of a predicted mask's outline (ground truth: solid)


# ----------------------------------------------------------------------------- fonts
@functools.lru_cache(maxsize=None)
def font_path():
    """Path of the TrueType font labels are drawn with, or None for PIL's built-in font."""
    chosen = os.environ.get(FONT_ENV)
    if chosen and Path(chosen).is_file():
        return chosen
    for path in _packaged_cjk_font() + _fc_list_cjk() + list(CJK_FONT_CANDIDATES) + list(DEJAVU_CANDIDATES):
        if Path(path).is_file():
            return str(path)
    try:
        import matplotlib

        bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        if bundled.is_file():
            return str(bundled)
    except ImportError:
        pass
    return None


def _packaged_cjk_font():
    """Noto Sans CJK from the noto-cjk-sans-otc wheel (a dependency), if it is installed."""
    try:
        import noto_cjk_sans_otc
    except ImportError:
        return []
    path = Path(str(noto_cjk_sans_otc.FONT_PATH))
    return [str(path)] if path.is_file() else []


def _fc_list_cjk():
    """Fonts fontconfig says cover Chinese (they also cover Japanese kana and Latin)."""
    if not shutil.which("fc-list"):
        return []
    try:
        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True,
                             timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    files = [line.split(":")[0].strip() for line in out.splitlines() if line.strip()]
    # Sans-serif regular faces first: they read best at small sizes.
    return sorted(files, key=lambda f: ("Sans" not in f, "Bold" in f, f))


@functools.lru_cache(maxsize=64)
def load_font(size):
    """The label font at ``size`` pixels."""
    from PIL import ImageFont

    path = font_path()
    if path:
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            pass
    return ImageFont.load_default(size=size)


def missing_glyphs(text, font=None):
    """Characters of ``text`` the font has no glyph for (drawn as empty boxes)."""
    font = font or load_font(16)
    notdef = _glyph_mask(font, "\U0010fffd")  # a private-use code point no font draws
    return sorted({ch for ch in text if not ch.isspace() and ord(ch) > 127
                   and _glyph_mask(font, ch) == notdef})


def _glyph_mask(font, ch):
    try:
        mask = font.getmask(ch)
    except (UnicodeEncodeError, OSError):
        return None
    return mask.size, bytes(mask)


@functools.lru_cache(maxsize=None)
def use_font_in_matplotlib():
    """Register the label font with matplotlib and put it first in ``font.family`` (DejaVu Sans
    after it, for glyphs it lacks), so plots draw class names such as 安全帽; returns its name."""
    import matplotlib
    from matplotlib import font_manager

    path = font_path()
    if not path:
        return None
    try:
        font_manager.fontManager.addfont(path)
        name = font_manager.FontProperties(fname=path).get_name()
    except (OSError, RuntimeError):
        return None
    matplotlib.rcParams["font.family"] = [name, "DejaVu Sans"]
    return name


def font_name():
    path = font_path()
    return Path(path).name if path else "PIL's built-in font"


# ----------------------------------------------------------------------------- colours
def class_colors(n):
    """``n`` distinct saturated RGB colours, the same for the same class id across images."""
    colors = []
    for i in range(max(n, 1)):
        hue = (i * 0.618033988749895) % 1.0  # golden-ratio steps spread hues for any n
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def text_color_for(fill):
    """Black or white, whichever reads better on ``fill`` (relative luminance, WCAG weights)."""
    r, g, b = (c / 255.0 for c in fill)
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return (0, 0, 0) if luminance > 0.5 else (255, 255, 255)


# ----------------------------------------------------------------------------- drawing
def _sizes(width, height):
    side = min(width, height)
    line = max(2, int(round(side / 250)))
    font_size = max(11, int(round(side / 32)))
    return line, font_size


def place_label(box, text_size, image_size, line=2):
    """Top-left corner of a label of ``text_size`` (w, h) for ``box``, fully inside the image.

    Above the box when there is room, else just inside its top edge; shifted left or down as
    needed so no part leaves the image.
    """
    x0, y0 = box[0], box[1]
    tw, th = text_size
    width, height = image_size
    y = y0 - th if y0 - th >= 0 else y0 + line
    x = min(max(0, x0), max(0, width - tw))
    y = min(max(0, y), max(0, height - th))
    return int(round(x)), int(round(y))


def draw_detections(image, detections, classes, colors=None):
    """A copy of ``image`` (HxWx3 uint8 RGB) with each box, its class name and its score drawn.

    Detections with masks are drawn as a translucent fill in the class colour with its contour
    (and the label), instead of the box."""
    from PIL import Image, ImageDraw

    colors = colors or class_colors(len(classes))
    masks = getattr(detections, "masks", None)
    if masks is not None:
        image = fill_masks(image, masks, detections.class_ids, colors,
                           order=np.argsort(detections.scores, kind="stable"))
    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    line, font_size = _sizes(canvas.width, canvas.height)
    font = load_font(font_size)
    pad = max(1, font_size // 6)
    # Lowest score first, so the most confident boxes and labels end up on top.
    for k in np.argsort(detections.scores, kind="stable"):
        # whole pixels, inside the image: a box reaching the border keeps its outline visible
        box = [min(max(int(round(float(v))), 0), lim - 1)
               for v, lim in zip(detections.boxes[k], (canvas.width, canvas.height) * 2)]
        cid = int(detections.class_ids[k])
        color = colors[cid % len(colors)]
        if masks is None:
            draw.rectangle(box, outline=color, width=line)
        text = f"{classes[cid]} {float(detections.scores[k]):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 2 * pad, bottom - top + 2 * pad
        x, y = place_label(box, (tw, th), canvas.size, line)
        draw.rectangle([x, y, x + tw - 1, y + th - 1], fill=color)
        draw.text((x + pad - left, y + pad - top), text, fill=text_color_for(color), font=font)
    return np.asarray(canvas)


def fill_masks(image, masks, class_ids, colors, order=None, dash=0):
    """``image`` (HxWx3 uint8) with each of ``masks`` ((N, H, W) 0/1) blended in its class colour
    (MASK_ALPHA) and outlined, in ``order`` (the last on top); ``dash`` > 0 draws the outlines in
    dashes of that many contour pixels (predictions beside solid ground truth). The one function
    every picture draws masks with: detect, eval's mosaics, data show."""
    import cv2

    out = np.array(image, dtype=np.float32)
    line = max(1, _sizes(image.shape[1], image.shape[0])[0] // 2)
    contours = []
    for k in (range(len(masks)) if order is None else order):
        mask = np.asarray(masks[k]).astype(bool)
        color = np.array(colors[int(class_ids[k]) % len(colors)], np.float32)
        out[mask] = out[mask] * (1 - MASK_ALPHA) + color * MASK_ALPHA
        found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        contours.append((_dashes(found, dash) if dash else found, tuple(int(v) for v in color)))
    out = np.round(out).astype(np.uint8)
    for found, color in contours:
        cv2.polylines(out, found, not dash, color, line)
    return out


def _dashes(contours, dash):
    """Every other run of ``dash`` consecutive points of each contour, as open polylines."""
    return [c[start:start + dash] for c in contours for start in range(0, len(c), 2 * dash)
            if len(c[start:start + dash]) > 1]


def resize_masks(masks, size):
    """(N, h, w) 0/1 masks resized to ``size`` (w, h) as ``resize_for_tile`` resizes the image
    (area averaging when shrinking), kept where at least half a pixel is covered."""
    import cv2

    width, height = size
    out = np.zeros((len(masks), height, width), np.uint8)
    for k, mask in enumerate(masks):
        shrink = width < mask.shape[1]
        scaled = cv2.resize(np.asarray(mask, np.float32), (width, height),
                            interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        out[k] = scaled >= 0.5
    return out


def draw_anchors(image, layers, positions, colors=None):
    """A copy of ``image`` with the anchors of ``layers`` at ``positions`` ((fx, fy) fractions).

    Each layer gets one colour and a legend line: its grid, stride and anchor sizes in pixels.
    """
    from PIL import Image, ImageDraw

    colors = colors or class_colors(len(layers))
    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    line, font_size = _sizes(canvas.width, canvas.height)
    line = max(1, line // 2)
    legend = []
    for n, layer in enumerate(layers):
        color = colors[n % len(colors)]
        for fx, fy in positions:
            anchors = layer.at(fx, fy)
            for box in anchors:
                draw.rectangle([float(v) for v in box], outline=color, width=line)
            cx = float(anchors[:, [0, 2]].mean())
            cy = float(anchors[:, [1, 3]].mean())
            r = line + 1
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
        legend.append((color, anchor_legend(layer)))
    # The legend's font shrinks (down to 8 px) until its longest line fits the image's width.
    size = max(10, font_size * 3 // 4)
    font = load_font(size)
    while size > 8 and max((draw.textlength(t, font=font) for _, t in legend), default=0) > canvas.width - 8:
        size -= 1
        font = load_font(size)
    y = 2
    for color, text in legend:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        draw.rectangle([2, y, 2 + right - left + 6, y + bottom - top + 4], fill=color)
        draw.text((5 - left, y + 2 - top), text, fill=text_color_for(color), font=font)
        y += bottom - top + 6
    return np.asarray(canvas)


def anchor_legend(layer):
    """One line about a layer's anchors: grid, stride, count and sizes (w x h) in image pixels."""
    boxes = layer.boxes[layer.grid[0] // 2, layer.grid[1] // 2]
    sizes = ", ".join(f"{b[2] - b[0]:.0f}x{b[3] - b[1]:.0f}" for b in boxes)
    return (f"layer {layer.index}: {layer.grid[0]}x{layer.grid[1]} grid, stride "
            f"{layer.stride[0]:.0f}px, anchors {sizes}")


# ----------------------------------------------------------------------------- ground truth vs predictions
GT_LINE = "solid"  # how the two kinds of box differ, for captions and legends
PRED_LINE = "dashed"
ERROR_LABEL_COLOR = (16, 16, 16)  # the label of a missed object and of a false positive: black, no class has it


def dashed_rectangle(draw, box, color, width, dash=6):
    """An outline of ``box`` (x0, y0, x1, y1) in dashes of ``dash`` pixels (PIL has none)."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    for a, b, fixed, horizontal in ((x0, x1, y0, True), (x0, x1, y1, True),
                                    (y0, y1, x0, False), (y0, y1, x1, False)):
        for start in range(a, b + 1, 2 * dash):
            end = min(start + dash - 1, b)
            if horizontal:
                draw.line([(start, fixed), (end, fixed)], fill=color, width=width)
            else:
                draw.line([(fixed, start), (fixed, end)], fill=color, width=width)


def _label(draw, box, text, color, font, image_size, line, below=False):
    pad = max(1, font.size // 6)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left + 2 * pad, bottom - top + 2 * pad
    if below:  # predictions label under their box, so they do not hide the ground truth's label
        x = min(max(0, int(box[0])), max(0, image_size[0] - tw))
        y = min(max(0, int(box[3]) + line), max(0, image_size[1] - th))
    else:
        x, y = place_label(box, (tw, th), image_size, line)
    draw.rectangle([x, y, x + tw - 1, y + th - 1], fill=color)
    draw.text((x + pad - left, y + pad - top), text, fill=text_color_for(color), font=font)


def draw_truth_and_predictions(image, truth, predictions, classes, colors=None, truth_masks=None,
                               pred_masks=None):
    """A copy of ``image`` (HxWx3 uint8 RGB) with ground truth as solid boxes (name above) and
    predictions as dashed boxes (name and score below), each in its class colour.

    ``truth``: (boxes (N, 4), class ids (N,), missed (N,) bool or None): missed ones are labelled
    "missed". ``predictions``: (boxes (M, 4), class ids, scores, false_positive (M,) bool or None)
    or None: false positives are labelled "FP". ``truth_masks`` / ``pred_masks``: (N, H, W) /
    (M, H, W) 0/1 instance masks at the image's size (or None), filled translucently by
    ``fill_masks``, ground truth outlined solid, predictions dashed (an all-zero mask: no mask).
    """
    from PIL import Image, ImageDraw

    colors = colors or class_colors(len(classes))
    image = np.ascontiguousarray(image)
    if truth_masks is not None and len(truth_masks):
        image = fill_masks(image, truth_masks, truth[1], colors)
    if pred_masks is not None and len(pred_masks):
        image = fill_masks(image, pred_masks, predictions[1], colors,
                           order=np.argsort(predictions[2], kind="stable"), dash=MASK_DASH)
    canvas = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    line, font_size = _sizes(canvas.width, canvas.height)
    font = load_font(max(10, font_size * 3 // 4))
    boxes, ids, missed = truth
    for k in range(len(boxes)):
        color = colors[int(ids[k]) % len(colors)]
        draw.rectangle([float(v) for v in boxes[k]], outline=color, width=line)
        is_missed = missed is not None and missed[k]
        _label(draw, boxes[k], ("missed " if is_missed else "") + classes[int(ids[k])],
               ERROR_LABEL_COLOR if is_missed else color, font, canvas.size, line)
    if predictions is not None:
        pboxes, pids, scores, false_pos = predictions
        for k in np.argsort(scores, kind="stable"):
            color = colors[int(pids[k]) % len(colors)]
            dashed_rectangle(draw, pboxes[k], color, line)
            is_fp = false_pos is not None and false_pos[k]
            text = f"{'FP ' if is_fp else ''}{classes[int(pids[k])]} {float(scores[k]):.2f}"
            _label(draw, pboxes[k], text, ERROR_LABEL_COLOR if is_fp else color, font, canvas.size,
                   line, below=True)
    return np.asarray(canvas)


# ----------------------------------------------------------------------------- mosaics
def fit_scale(width, height, tile):
    """The scale that fits a width x height image into a tile x tile square (never enlarging twice)."""
    return min(tile / width, tile / height)


def resize_for_tile(image, tile):
    """(image scaled to fit a tile x tile square, the scale used)."""
    import cv2

    h, w = image.shape[:2]
    scale = fit_scale(w, h, tile)
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp), scale


def mosaic(tiles, captions, grid, tile, caption_lines=2):
    """Tiles (HxWx3 uint8, each at most tile x tile) in a grid (cols, rows), each placed at the
    top-left of its cell with its caption below; returns the mosaic (white background)."""
    from PIL import Image, ImageDraw

    cols, rows = grid
    font = load_font(max(11, tile // 24))
    line_height = font.size + 4
    cell_h = tile + caption_lines * line_height + 6
    sheet = Image.new("RGB", (cols * (tile + 6), rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (image, caption) in enumerate(zip(tiles, captions)):
        x, y = cell_origin(k, cols, tile, caption_lines, font.size)
        sheet.paste(Image.fromarray(np.ascontiguousarray(image)), (x, y))
        for n, text in enumerate(caption.split("\n")[:caption_lines]):
            draw.text((x, y + tile + 2 + n * line_height), _fit_text(draw, text, font, tile),
                      fill=(0, 0, 0), font=font)
    return np.asarray(sheet)


def cell_origin(k, cols, tile, caption_lines=2, font_size=None):
    """Top-left pixel of cell ``k`` of a ``mosaic`` (row-major)."""
    font_size = font_size or load_font(max(11, tile // 24)).size
    cell_h = tile + caption_lines * (font_size + 4) + 6
    return (k % cols) * (tile + 6), (k // cols) * cell_h


def _fit_text(draw, text, font, width):
    while text and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text


def write_jpeg(image, path, quality=88):
    """An HxWx3 uint8 RGB array as a JPEG, written atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="JPEG", quality=quality)


def parse_grid(text):
    """'4x4' -> (4, 4) columns x rows; a GluondetError for anything else."""

    try:
        cols, rows = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise GluondetError(f"--grid {text!r}: expected COLSxROWS, e.g. 4x4") from None
    if not (1 <= cols <= 16 and 1 <= rows <= 16):
        raise GluondetError(f"--grid {text!r}: between 1x1 and 16x16")
    return cols, rows
