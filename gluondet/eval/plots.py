"""The pictures of an evaluation (matplotlib, Agg): PR, F1-vs-threshold, confusion matrix, errors.

Each ``draw_*`` function draws exactly the arrays of ``gluondet.eval.analysis`` it is given onto
an Axes (so a test can compare the drawn lines with the numbers); each ``save_*`` makes the figure
and writes a PNG atomically. Class names are drawn with gluondet's label font (CJK included).
"""
import warnings

import numpy as np

from ..fileio import atomic_path
from ..viz import class_colors, use_font_in_matplotlib

DPI = 100
MAX_LEGEND_CLASSES = 20  # more classes: the legend keeps the first ones, lines stay
MAX_ANNOTATED_CLASSES = 25  # confusion matrix cells carry their numbers up to this many classes
ERROR_COLORS = {"C75": "#ffffff", "C50": "#4c72b0", "Loc": "#55a868", "Sim": "#c44e52",
                "Oth": "#8172b2", "BG": "#ccb974", "FN": "#d0d0d0"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use_font_in_matplotlib()
    return plt


def _save(fig, path):
    plt = _pyplot()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)


def _fmt(value):
    return "-" if value is None else f"{value:.3f}"


# ----------------------------------------------------------------------------- PR
def draw_pr(ax, pr):
    """Each class's PR envelope (area = its AP) and the mean of them all (area = mAP), thick."""

    names = list(pr["classes"])
    colors = class_colors(len(names))
    for k, name in enumerate(names):
        curve = pr["classes"][name]
        if curve["ap"] is None:
            continue
        env = curve["envelope"]
        label = f"{name} {curve['ap']:.3f}" if k < MAX_LEGEND_CLASSES else None
        ax.plot(env["recall"], env["precision"], color=np.array(colors[k]) / 255, lw=1, label=label)
    env = pr["all"]["envelope"]
    ax.plot(env["recall"], env["precision"], color="#1f3b73", lw=3,
            label=f"all classes {_fmt(pr['all']['map'])} mAP")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)


def _save_one(draw, data, path, title):
    """One panel drawn by ``draw(ax, data)``, titled, saved to ``path``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    draw(ax, data)
    ax.set_title(title)
    _save(fig, path)


def save_pr(pr, path, title):
    _save_one(draw_pr, pr, path, title)


# ----------------------------------------------------------------------------- F1
def draw_f1(ax, f1):
    """F1 against the score threshold per class (thin) and over all classes (thick), and the best:
    the grid curves of ``analysis.f1_on_grid``, drawn as they are."""

    names = list(f1["per_class"])
    colors = class_colors(len(names))
    for k, name in enumerate(names):
        curve = f1["per_class"][name]
        if curve["best"] is None:
            continue
        ax.plot(curve["thresholds"], curve["f1"], color=np.array(colors[k]) / 255, lw=1,
                label=name if k < MAX_LEGEND_CLASSES else None)
    best = f1["best"]
    ax.plot(f1["thresholds"], f1["f1"], color="#1f3b73", lw=3,
            label="all classes" + (f" {best['f1']:.3f} at {best['threshold']:.3f}" if best else ""))
    if best:
        ax.axvline(best["threshold"], color="#1f3b73", ls="--", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="score threshold (detections with score >= it)",
           ylabel="F1")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)


def save_f1(f1, path, title):
    _save_one(draw_f1, f1, path, title)


# ----------------------------------------------------------------------------- confusion
def draw_confusion(ax, matrix, labels, title, fmt):
    """A confusion matrix: rows ground truth, columns prediction, the last of each 'background'."""
    n = len(labels)
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(float(np.max(matrix)), 1e-9))
    ax.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), labels)
    ax.set(xlabel="predicted", ylabel="ground truth", title=title)
    if n <= MAX_ANNOTATED_CLASSES + 1:
        top = float(np.max(matrix)) or 1.0
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, format(matrix[i, j], fmt), ha="center", va="center", fontsize=8,
                            color="white" if matrix[i, j] > top / 2 else "black")


def save_confusion(confusion, path, title):
    plt = _pyplot()
    n = len(confusion["labels"])
    side = min(6 + 0.35 * n, 24)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side, side))
    draw_confusion(axes[0], np.asarray(confusion["counts"]), confusion["labels"], "counts", "d")
    draw_confusion(axes[1], np.asarray(confusion["normalized"]), confusion["labels"],
                   "normalized per ground-truth row", ".2f")
    fig.suptitle(title)
    _save(fig, path)


# ----------------------------------------------------------------------------- error breakdown
SIM_OMITTED_LEGEND = "Sim: left out (no supercategories)"


def draw_errors(ax, curves, title, note=None):
    """pycocotools analyze()-style stacked areas: FN outermost, C75 innermost; legend [AP] name,
    and ``note`` (a line with no area, e.g. why Sim is left out) first."""
    for name in reversed(list(curves)):
        c = curves[name]
        if c["ap"] is None or not len(c["recall"]):
            continue
        ax.fill_between(c["recall"], c["precision"], color=ERROR_COLORS[name], lw=0.5,
                        edgecolor="#555555", label=f"[{c['ap']:.3f}] {name}")
    if note:
        ax.plot([], [], " ", label=note)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], loc="lower left", fontsize=7)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="recall", ylabel="precision", title=title)


def save_errors(errors, path, title, max_classes=12):
    """The overall breakdown and one panel per class (the first ``max_classes``)."""
    plt = _pyplot()
    names = list(errors["classes"])[:max_classes]
    panels = 1 + len(names)
    cols = min(4, panels)
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    draw_errors(axes[0, 0], errors["all"], "all classes",
                note=SIM_OMITTED_LEGEND if errors.get("sim_omitted") else None)
    for k, name in enumerate(names, start=1):
        draw_errors(axes[k // cols, k % cols], errors["classes"][name], name)
    for k in range(panels, rows * cols):
        axes[k // cols, k % cols].axis("off")
    fig.suptitle(title)
    _save(fig, path)
