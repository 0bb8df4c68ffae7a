"""Training records in the run folder: metrics.csv (one row per epoch), TensorBoard events, curves.png."""
import csv
import io
from pathlib import Path

from ..fileio import atomic_path, atomic_write_text

FIXED_COLUMNS = ("epoch", "lr", "seconds", "images_per_sec")


def read_metrics(path):
    """Rows of metrics.csv as dicts of strings ([] when there is none yet)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_metrics(path, history):
    """metrics.csv from the committed history (one row per finished epoch), rewritten atomically:
    a view of last.json, so it never holds a row of an epoch that was not committed."""
    rows = [{k: _fmt(v) for k, v in row.items()} for row in history]
    columns = list(FIXED_COLUMNS)
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return rows


def validation_columns(scores):
    """metrics.csv / TensorBoard columns of one validation result (``validate``'s dict).

    ``val_map``, ``ap/<class>`` for each class, and with the COCO metric all 12 COCO numbers as
    ``coco/AP``, ``coco/AP50``, ... ``coco/ARl`` (pycocotools' order; undefined ones left empty).
    """
    columns = {"val_map": scores["map"]}
    columns.update({f"ap/{name}": ap for name, ap in (scores.get("per_class") or {}).items()})
    columns.update({f"coco/{name}": value for name, value in (scores.get("coco") or {}).items()})
    columns.update(scores.get("row") or {})  # a family's own columns (mask models: bbox/..., segm/...)
    return columns


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _floats(rows, key):
    xs, ys = [], []
    for r in rows:
        value = r.get(key, "")
        if value not in ("", None):
            xs.append(int(r["epoch"]))
            ys.append(float(value))
    return xs, ys


CURVE_EXTRAS = ("segm/AP", "bbox/AP")  # a mask model's box and mask AP, beside val_map


def draw_curves(rows, path, loss_names, map_name="val_map", lr_schedule=None):
    """curves.png: training losses, validation mAP and the learning rate against epochs (Agg, no display).

    ``lr_schedule``: the planned lr of the whole run as ``(x, lr)`` lists in epochs
    (``schedule.lr_curve``: warm-up, steps, cosine or poly), drawn as a line, with the lr each
    finished epoch ended at (metrics.csv) as dots on it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_map, ax_lr) = plt.subplots(1, 3, figsize=(15, 4))
    for name in loss_names:
        xs, ys = _floats(rows, name)
        if xs:
            ax_loss.plot(xs, ys, marker=".", label=name)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_loss.legend(loc="upper right")
    xs, ys = _floats(rows, map_name)
    ax_map.plot(xs, ys, marker="o", color="tab:green", label=map_name)
    for extra in CURVE_EXTRAS:  # a mask model's box and mask AP beside the metric that picks best
        xs, ys = _floats(rows, extra)
        if xs:
            ax_map.plot(xs, ys, marker=".", linestyle="--", label=extra)
            ax_map.legend(loc="lower right")
    ax_map.set_xlabel("epoch")
    ax_map.set_ylabel("validation mAP")
    ax_map.set_ylim(0, 1)
    _draw_lr(ax_lr, rows, lr_schedule)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def _draw_lr(ax, rows, lr_schedule):
    planned = []
    if lr_schedule:
        at, planned = lr_schedule  # the end of epoch k (1-based, as in metrics.csv) at x = k
        # each point is an iteration's lr, held from the previous point: a decay drops at the epoch
        ax.plot(at, planned, drawstyle="steps-pre", color="tab:gray", label="schedule")
    xs, ys = _floats(rows, "lr")
    if xs:
        ax.plot(xs, ys, "o", color="tab:orange", label="end of epoch")
    if planned or xs:
        # decays by 10x read best on a log axis; cosine and poly end at 0, which a log axis cannot hold
        if min(list(planned) + ys) > 0:
            ax.set_yscale("log")
        ax.legend(loc="upper right")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")


class TensorBoard:
    """Scalars into ``tb/`` via tensorboardX; absent (no-op) when tensorboardX cannot be imported."""

    def __init__(self, log_dir):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            self._writer = None
            return
        self._writer = SummaryWriter(str(log_dir))

    def scalars(self, values, step, prefix=""):
        if self._writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)):
                self._writer.add_scalar(f"{prefix}{key}", value, step)
        self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()


class IterationLog:
    """``--log-every N``: every N iterations, the mean of each loss over those N and the lr, into
    TensorBoard as ``iter/<loss>`` and ``iter/lr`` at the global iteration (epoch * iterations per
    epoch + iteration + 1), so curves of resumed runs join up. ``every`` 0 writes nothing."""

    def __init__(self, board, every, iters_per_epoch):
        self.board = board
        self.every = every
        self.iters_per_epoch = iters_per_epoch
        self._sums, self._count = {}, 0

    def __call__(self, epoch, iteration, lr, losses):
        if not self.every:
            return
        for name, value in losses.items():
            self._sums[name] = self._sums.get(name, 0.0) + value
        self._count += 1
        step = epoch * self.iters_per_epoch + iteration + 1
        if step % self.every == 0:
            values = {name: total / self._count for name, total in self._sums.items()}
            self.board.scalars(dict(values, lr=lr), step, prefix="iter/")
            self._sums, self._count = {}, 0
