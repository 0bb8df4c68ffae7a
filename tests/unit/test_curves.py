"""curves.png draws the planned lr schedule beside the losses and mAP."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gluondet.engine.metrics_log import _draw_lr, draw_curves  # noqa: E402
from gluondet.engine.schedule import learning_rate, lr_curve  # noqa: E402


def test_lr_panel_holds_the_schedule_and_the_recorded_lr(tmp_path):
    schedule = lr_curve(lambda e, i: learning_rate(e, i, 2, 0.1, lr_step_every=2, lr_decay=0.5), 6, 2)
    rows = [{"epoch": "1", "lr": "0.1"}, {"epoch": "2", "lr": "0.1"}, {"epoch": "3", "lr": "0.05"}]
    fig, ax = plt.subplots()
    _draw_lr(ax, rows, schedule)
    planned, recorded = ax.lines
    np.testing.assert_allclose(planned.get_xdata(), np.arange(1, 13) / 2)  # two iterations an epoch
    np.testing.assert_allclose(planned.get_ydata(), np.repeat([0.1, 0.05, 0.025], 4))
    np.testing.assert_allclose(recorded.get_xdata(), [1, 2, 3])  # each epoch's end, on the line
    np.testing.assert_allclose(recorded.get_ydata(), [0.1, 0.1, 0.05])
    assert ax.get_yscale() == "log"
    plt.close(fig)
    draw_curves(rows, tmp_path / "curves.png", ["loss"], lr_schedule=schedule)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("mode", ["cosine", "poly"])
def test_lr_panel_draws_the_annealing_curve_gluoncv_gives(tmp_path, mode):
    from gluoncv.utils import LRScheduler, LRSequential

    epochs, iters, warmup = 30, 40, 2
    schedule = lr_curve(lambda e, i: learning_rate(e, i, iters, 0.08, warmup_epochs=warmup, lr_mode=mode,
                                                   epochs=epochs, lr_power=0.9), epochs, iters, points=200)
    # GluonCV's composition: a linear warm-up over 80 iterations, then the mode over the other 1120
    reference = LRSequential([LRScheduler("linear", base_lr=0.08 / 80, target_lr=0.08, niters=80),
                              LRScheduler(mode, base_lr=0.08, target_lr=0, niters=1120, power=0.9)])
    fig, ax = plt.subplots()
    _draw_lr(ax, [{"epoch": "1", "lr": "0.04"}], schedule)
    planned = ax.lines[0]
    xs, ys = planned.get_xdata(), planned.get_ydata()
    assert 200 <= len(xs) <= 200 + 2 * epochs and xs[0] == 1 / iters and xs[-1] == epochs
    np.testing.assert_allclose(ys, [reference(int(round(x * iters)) - 1) for x in xs], rtol=1e-12, atol=1e-15)
    assert ys[-1] == 0 and ys.max() == pytest.approx(0.08)
    assert ax.get_yscale() == "linear"  # it ends at 0: no log axis
    plt.close(fig)
    draw_curves([], tmp_path / "curves.png", ["loss"], lr_schedule=schedule)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validation_columns_hold_the_12_coco_numbers_of_pycocotools(tmp_path):
    from gluondet.engine.metrics_log import read_metrics, validation_columns, write_metrics
    from gluondet.eval.coco_metric import COCO_STAT_NAMES, COCOMetric
    from gluondet.eval.results import metric_result

    metric = COCOMetric(["a", "b"])
    rng = np.random.RandomState(0)
    gt = rng.uniform(0, 50, (2, 3, 2))
    gt = np.concatenate([gt, gt + rng.uniform(5, 40, (2, 3, 2))], axis=2)
    pred = gt + rng.normal(0, 2, gt.shape)
    metric.update(pred, np.array([[[0], [1], [0]]] * 2), rng.uniform(0.1, 1, (2, 3, 1)), gt,
                  np.array([[[0], [1], [0]]] * 2))
    scores = dict(metric_result(metric), map=0.5)
    columns = validation_columns(scores)
    assert [k for k in columns if k.startswith("coco/")] == [f"coco/{n}" for n in COCO_STAT_NAMES]
    stats = metric.coco_eval.stats  # pycocotools' own 12 numbers
    for name, value in zip(COCO_STAT_NAMES, stats):
        assert columns[f"coco/{name}"] == (None if value < 0 else value)
    rows = write_metrics(tmp_path / "metrics.csv", [{"epoch": 1, "lr": 0.1, **columns}])
    header = list(read_metrics(tmp_path / "metrics.csv")[0])
    assert all(f"coco/{n}" in header for n in COCO_STAT_NAMES) and rows


class FakeBoard:
    def __init__(self):
        self.written = []

    def scalars(self, values, step, prefix=""):
        self.written.append((step, {prefix + k: v for k, v in values.items()}))


def test_iteration_log_writes_window_means_and_lr_every_n_global_iterations():
    from gluondet.engine.metrics_log import IterationLog

    board = FakeBoard()
    log = IterationLog(board, every=3, iters_per_epoch=4)
    losses = [float(k) for k in range(8)]
    for k, loss in enumerate(losses):  # two epochs of four iterations
        log(k // 4, k % 4, lr=0.1 * (k + 1), losses={"cls": loss, "box": 2 * loss})
    assert [step for step, _ in board.written] == [3, 6]
    assert board.written[0][1] == pytest.approx({"iter/cls": 1.0, "iter/box": 2.0, "iter/lr": 0.3})
    assert board.written[1][1] == pytest.approx({"iter/cls": 4.0, "iter/box": 8.0, "iter/lr": 0.6})
    off = FakeBoard()
    IterationLog(off, every=0, iters_per_epoch=4)(0, 0, 0.1, {"cls": 1.0})
    assert off.written == []
