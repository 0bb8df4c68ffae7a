"""Dataset statistics from the annotations alone (no image decoding): counts and distributions.

Sizes are in pixels of the image as read (gluondet.image's EXIF policy): box width/height,
``relative_size`` = sqrt(box area / image area) (what anchor scales are compared with),
``aspect_ratio`` = width / height.
"""
import warnings
from collections import Counter

import numpy as np

from ..fileio import atomic_path
from ..progress import ljust, text_width
from ..viz import use_font_in_matplotlib
from .base import FLAG_CROWD, FLAG_DIFFICULT

PERCENTILES = (0, 5, 25, 50, 75, 95, 100)
HEATMAP_BINS = 32  # cells per side of the box-centre and box-size heatmaps


def _summary(values):
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return None
    p = np.percentile(values, PERCENTILES)
    return {"min": float(p[0]), "p5": float(p[1]), "p25": float(p[2]), "median": float(p[3]),
            "p75": float(p[4]), "p95": float(p[5]), "max": float(p[6]), "mean": float(values.mean())}


def box_arrays(entries):
    """Per-box widths, heights, relative sizes and aspect ratios, and boxes per image (numpy arrays)."""
    widths, heights, relative, per_image = [], [], [], []
    for e in entries:
        per_image.append(len(e.objects))
        for _name, x0, y0, x1, y1, _flag in e.objects:
            w, h = x1 - x0 + e.max_offset, y1 - y0 + e.max_offset
            if w <= 0 or h <= 0:
                continue  # check reports these; they have no size or ratio
            widths.append(w)
            heights.append(h)
            if e.size:
                relative.append(np.sqrt(w * h / float(e.size[0] * e.size[1])))
    widths, heights = np.array(widths), np.array(heights)
    return {"width": widths, "height": heights, "relative_size": np.array(relative),
            "aspect_ratio": widths / heights if widths.size else widths, "boxes_per_image": np.array(per_image)}


def readable_entries(index):
    """The entries of a reader's DatasetIndex whose files could be read, and the reading errors.

    An unparseable annotation or a missing image is not "an image with no objects": stats must
    leave such entries out and name them, never count them as negatives.
    """
    broken = [p for p in index.problems if p.severity == "error"]
    good = []
    for entry in index.entries:
        errors = [p for p in entry.problems if p.severity == "error"]
        broken.extend(errors)
        if not errors:
            good.append(entry)
    return good, broken


def dataset_stats(entries):
    """A JSON-ready dict: images, boxes, per_class, negatives, difficult, crowd and distributions."""
    per_class = Counter(name for e in entries for name, *_ in e.objects)
    flags = Counter(o[5] for e in entries for o in e.objects)
    arrays = box_arrays(entries)
    per_image = arrays["boxes_per_image"]
    sizes = Counter(f"{e.size[0]}x{e.size[1]}" for e in entries if e.size)
    return {
        "images": len(entries),
        "boxes": int(sum(per_class.values())),
        "per_class": dict(sorted(per_class.items())),
        "negatives": int((per_image == 0).sum()) if per_image.size else 0,
        "difficult": flags.get(FLAG_DIFFICULT, 0),
        "crowd": flags.get(FLAG_CROWD, 0),
        "boxes_per_image": {**(_summary(per_image) or {}),
                            "histogram": {str(k): int(v) for k, v in sorted(Counter(per_image.tolist()).items())}},
        "box_width": _summary(arrays["width"]),
        "box_height": _summary(arrays["height"]),
        "relative_size": _summary(arrays["relative_size"]),
        "aspect_ratio": _summary(arrays["aspect_ratio"]),
        "image_sizes": dict(sizes.most_common(10)),
    }


def format_stats(stats):
    """Human-readable lines for ``dataset_stats`` output."""
    lines = [f"images: {stats['images']} ({stats['negatives']} with no objects)",
             f"boxes: {stats['boxes']} ({stats['difficult']} difficult, {stats['crowd']} crowd)"]
    width = max((text_width(n) for n in stats["per_class"]), default=0)
    for name, count in stats["per_class"].items():
        lines.append(f"  {ljust(name, width)}  {count}")
    b = stats["boxes_per_image"]
    if "mean" in b:
        lines.append(f"boxes per image: mean {b['mean']:.2f}, median {b['median']:g}, max {b['max']:g}")
    for key, label, fmt in (("box_width", "box width (px)", ".0f"), ("box_height", "box height (px)", ".0f"),
                            ("relative_size", "sqrt(box area / image area)", ".3f"),
                            ("aspect_ratio", "aspect ratio (w/h)", ".2f")):
        s = stats[key]
        if s:
            lines.append(f"{label}: min {s['min']:{fmt}}, p5 {s['p5']:{fmt}}, median {s['median']:{fmt}}, "
                         f"p95 {s['p95']:{fmt}}, max {s['max']:{fmt}}")
    if stats["image_sizes"]:
        lines.append("image sizes: " + ", ".join(f"{k} ({v})" for k, v in stats["image_sizes"].items()))
    return "\n".join(lines)


def box_geometry(entries):
    """Per box (with a known image size): centre x, y and width, height as fractions of the image."""
    rows = []
    for e in entries:
        if not e.size:
            continue
        w_img, h_img = float(e.size[0]), float(e.size[1])
        for _name, x0, y0, x1, y1, _flag in e.objects:
            w, h = x1 - x0 + e.max_offset, y1 - y0 + e.max_offset
            if w > 0 and h > 0:
                rows.append(((x0 + x1) / 2 / w_img, (y0 + y1) / 2 / h_img, w / w_img, h / h_img))
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def plot_stats(entries, path, title="", splits=None):
    """Draw class counts, box distributions, box-centre and box-size heatmaps and, with ``splits``
    ({name: entries}, two or more), a per-split comparison into a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use_font_in_matplotlib()
    compare = splits is not None and len(splits) > 1
    fig, axes = plt.subplots(4 if compare else 3, 2, figsize=(11, 16 if compare else 12))
    _plot_distributions(axes[:2], entries)
    _plot_heatmaps(fig, axes[2], entries)
    if compare:
        _plot_split_comparison(axes[3], splits)
    if title:
        fig.suptitle(title)
    with warnings.catch_warnings():
        # Names in scripts the font lacks draw as boxes; a warning per glyph is noise.
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def _plot_distributions(axes, entries):
    per_class = Counter(name for e in entries for name, *_ in e.objects)
    arrays = box_arrays(entries)
    names = sorted(per_class)
    axes[0, 0].bar(range(len(names)), [per_class[n] for n in names])
    axes[0, 0].set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes[0, 0].set_title("boxes per class")
    per_image = arrays["boxes_per_image"]
    axes[0, 1].hist(per_image, bins=np.arange(per_image.max() + 2) - 0.5 if per_image.size else 1)
    axes[0, 1].set_title("boxes per image")
    axes[1, 0].hist(arrays["relative_size"], bins=30)
    axes[1, 0].set_title("box size: sqrt(box area / image area)")
    ratios = arrays["aspect_ratio"]
    axes[1, 1].hist(np.log2(ratios) if ratios.size else ratios, bins=30)
    axes[1, 1].set_title("aspect ratio: log2(width / height)")


def _plot_heatmaps(fig, axes, entries, bins=HEATMAP_BINS):
    geometry = box_geometry(entries)
    edges = np.linspace(0, 1, bins + 1)
    for ax, (a, b), title, labels in (
            (axes[0], (0, 1), "box centres (fraction of image)", ("x", "y")),
            (axes[1], (2, 3), "box sizes (fraction of image)", ("width", "height"))):
        counts, _, _ = np.histogram2d(geometry[:, b], geometry[:, a], bins=[edges, edges])
        image = ax.imshow(counts, origin="upper" if a == 0 else "lower", extent=(0, 1, 1, 0) if a == 0
                          else (0, 1, 0, 1), cmap="viridis", aspect="equal")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="boxes")
        ax.set(title=title, xlabel=labels[0], ylabel=labels[1])


def _plot_split_comparison(axes, splits):
    names = sorted({n for entries in splits.values() for e in entries for n, *_ in e.objects})
    width = 0.8 / len(splits)
    for k, (split, entries) in enumerate(splits.items()):
        counts = Counter(n for e in entries for n, *_ in e.objects)
        total = max(sum(counts.values()), 1)
        axes[0].bar(np.arange(len(names)) + k * width, [counts[n] / total for n in names], width,
                    label=f"{split} ({len(entries)} images)")
        sizes = box_arrays(entries)["relative_size"]
        axes[1].hist(sizes, bins=np.linspace(0, 1, 31), density=True, histtype="step", lw=2,
                     label=split)
    axes[0].set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=45, ha="right")
    axes[0].set_title("class share of boxes, per split")
    axes[0].legend(fontsize=8)
    axes[1].set_title("box size per split: sqrt(box area / image area)")
    axes[1].legend(fontsize=8)
