"""The lr range test's pure parts: the exponential schedule, the smoothing, the suggestion rule on
curves with known answers, the recorder through the real Trainer with a toy network, the plot."""
import math

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

from test_trainer import ToyStep

from gluondet.config import TrainConfig
from gluondet.engine.lr_find import (DIVERGE_FACTOR, RangeRecorder, _RangeEnd, draw_lr_find, find_lr,
                                     range_lr, smooth_losses, suggest_lr)
from gluondet.engine.trainer import Trainer
from gluondet.errors import GluondetError


# ----------------------------------------------------------------------------- the schedule
@pytest.mark.parametrize("n, start, end", [(5, 1e-4, 1.0), (200, 1e-6, 1.0), (37, 3e-5, 0.7), (2, 0.01, 10.0)])
def test_range_lr_is_geometric_from_start_to_end(n, start, end):
    lrs = [range_lr(i, n, start, end) for i in range(n)]
    assert np.allclose(lrs, np.geomspace(start, end, n), rtol=1e-12)
    assert lrs[0] == start and math.isclose(lrs[-1], end, rel_tol=1e-12)
    for i in range(n):  # the formula itself: start * (end / start) ** (i / (n - 1))
        assert math.isclose(lrs[i], start * (end / start) ** (i / (n - 1)), rel_tol=1e-12)


# ----------------------------------------------------------------------------- smoothing
def test_smoothing_is_the_bias_corrected_moving_average():
    rng = np.random.default_rng(0)
    losses = rng.uniform(1, 10, size=50)
    beta = 0.9
    # closed form: sum_j (1 - beta) beta^(k - j) x_j / (1 - beta^k), k = 1..n
    expected = [sum((1 - beta) * beta ** (k - j) * losses[j - 1] for j in range(1, k + 1)) / (1 - beta ** k)
                for k in range(1, len(losses) + 1)]
    assert np.allclose(smooth_losses(losses, beta), expected, rtol=1e-12)
    assert np.allclose(smooth_losses([3.5] * 20), 3.5, rtol=1e-12)  # no start-up bias toward zero


# ----------------------------------------------------------------------------- the suggestion
def _valley(lrs, lowest_lr):
    """A loss that falls as log lr rises to ``lowest_lr`` and climbs fast after it."""
    x = np.log10(lrs) - np.log10(lowest_lr)
    return np.where(x <= 0, 1 + 0.5 * x ** 2, 1 + 5 * x ** 2)


def test_suggestion_is_a_tenth_of_the_lowest_loss_lr():
    lrs = np.geomspace(1e-6, 1.0, 121)  # 20 points a decade: 1e-2 is point 80
    assert math.isclose(suggest_lr(lrs, _valley(lrs, 1e-2), beta=0.0), 1e-3, rel_tol=1e-9)
    assert math.isclose(suggest_lr(lrs, _valley(lrs, 1e-4), beta=0.0), 1e-5, rel_tol=1e-9)  # point 40


def test_suggestion_follows_the_smoothed_not_the_raw_minimum():
    lrs = np.geomspace(1e-5, 1.0, 101)
    losses = np.full(101, 5.0)
    losses[40] = 0.1  # one lucky batch: the raw minimum, but one point barely moves the smoothed curve
    losses[60:] = 2.0  # a real, lasting fall: the smoothed loss is lowest at the last point
    assert math.isclose(suggest_lr(lrs, losses), lrs[-1] / 10)
    assert math.isclose(suggest_lr(lrs, losses, beta=0.0), lrs[40] / 10)


def test_smoothing_finds_the_valley_of_a_noisy_curve():
    lrs = np.geomspace(1e-6, 1.0, 300)
    rng = np.random.default_rng(1)
    noisy = _valley(lrs, 1e-2) * rng.lognormal(0, 0.3, size=lrs.size)
    # the bias-corrected EMA lags: its minimum lies a little above the true one, never below it
    suggestion = suggest_lr(lrs, noisy)
    assert 1e-3 <= suggestion <= 1e-2, suggestion


@pytest.mark.parametrize("losses", [[], [1.0], [1.0, 2.0, 3.0, 4.0]])
def test_no_suggestion_when_the_loss_never_fell(losses):
    assert suggest_lr(np.geomspace(1e-3, 1, max(1, len(losses))), losses) is None


# ----------------------------------------------------------------------------- the recorder in the real loop
ITERS_PER_EPOCH = 3


class ScriptedStep(ToyStep):
    """test_trainer's Dense(1) with its real forward/backward; the loss it reports comes from
    ``losses`` (one per step), split over two names (the recorder sums the family's losses)."""

    loss_names = ("a", "b")

    def __init__(self, losses):
        super().__init__(loss_at=dict(enumerate(losses, start=1)))

    def __call__(self, net, batch, ctx_list):
        value = super().__call__(net, batch, ctx_list)["loss"]
        return {"a": value * 0.25, "b": value * 0.75}


class FixedLoader:
    def __len__(self):
        return ITERS_PER_EPOCH

    def __iter__(self):
        for _ in range(ITERS_PER_EPOCH):
            yield mx.nd.ones((2, 3)), mx.nd.zeros((2, 1))


def _run(losses, num_iters, start=1e-4, end=1.0):
    net = gluon.nn.Dense(1, in_units=3)
    net.initialize(mx.init.Constant(0.01))
    optimizer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    recorder = RangeRecorder(num_iters, progress=False)
    epochs = math.ceil(num_iters / ITERS_PER_EPOCH)

    def lr_at(epoch, i):
        return range_lr(epoch * ITERS_PER_EPOCH + i, num_iters, start, end)

    trainer = Trainer(net, FixedLoader(), ScriptedStep(losses), optimizer, [mx.cpu()], [recorder], lr_at,
                      epochs, ITERS_PER_EPOCH)
    with pytest.raises(_RangeEnd):
        trainer.train()
    return recorder, trainer


def test_recorder_runs_num_iters_across_epochs_at_the_schedule():
    recorder, trainer = _run(np.linspace(5, 1, 8), num_iters=8)  # 3 epochs of 3, the last cut at 2
    assert np.allclose(recorder.lrs, np.geomspace(1e-4, 1.0, 8), rtol=1e-12)
    assert np.allclose(recorder.losses, np.linspace(5, 1, 8))
    assert trainer.state.epoch == 2 and recorder.stopped == "all 8 iterations"


def test_recorder_stops_when_the_smoothed_loss_passes_four_times_its_best():
    losses = [1.0] * 10 + [50.0] * 20
    recorder, _ = _run(losses, num_iters=30)
    smoothed = smooth_losses(losses)  # first point above 4x the running best: where it must stop
    first = next(k for k in range(len(losses)) if smoothed[k] > DIVERGE_FACTOR * min(smoothed[:k + 1]))
    assert len(recorder.losses) == first + 1 < 30
    assert "above 4x its best" in recorder.stopped


def test_recorder_stops_at_a_non_finite_loss_without_recording_it():
    recorder, _ = _run([3.0, 2.0, 1.0, float("nan"), 1.0], num_iters=5)
    assert recorder.losses == [3.0, 2.0, 1.0] and "nan" in recorder.stopped


# ----------------------------------------------------------------------------- refusals, the plot
@pytest.mark.parametrize("changes, kwargs, words", [
    ({"resume": "runs/x"}, {}, "--resume"),
    ({"kvstore": "dist_sync"}, {}, "dist_sync"),
    ({}, {"num_iters": 1}, "at least 2"),
    ({}, {"start_lr": 1.0, "end_lr": 0.1}, "rise"),
])
def test_find_lr_refuses_what_it_cannot_do_before_reading_anything(changes, kwargs, words, tmp_path):
    config = TrainConfig(dataset=str(tmp_path / "missing"), model="tiny_ssd", **changes)
    with pytest.raises(GluondetError, match=words):
        find_lr(config, out=tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_the_plot_is_a_png_written_atomically(tmp_path):
    from PIL import Image

    lrs = np.geomspace(1e-5, 1, 50)
    losses = _valley(lrs, 1e-2)
    draw_lr_find(tmp_path / "lr_find.png", lrs, losses, smooth_losses(losses), suggestion=1e-3)
    assert [p.name for p in tmp_path.iterdir()] == ["lr_find.png"]  # no temporary file left
    with Image.open(tmp_path / "lr_find.png") as image:
        assert image.format == "PNG" and image.size[0] > 200
