"""The seconds and img/s that metrics.csv logs time the epoch's whole steps, on the Trainer's clock.

MXNet is asynchronous: a step returns once its reported losses are computed, while work queued
after them (the backward, the update) still runs. A clock stopped then (as the old loop did,
after ``asscalar`` of the losses) leaves the last step's queued work out of the epoch's time.

The Trainer here reads an injected clock that moves only when told: each step moves it by
``STEP_SECONDS`` as it runs, and the work each step queues moves it by ``WORK_SECONDS`` when MXNet
actually runs it (a custom operator at the end of the queued work). So the epoch's true time is
known exactly, whatever the machine's speed, and a clock read before the queued work is done
comes out short by the last step's ``WORK_SECONDS``.
"""
import csv
import threading

import mxnet as mx
import pytest
from mxnet import gluon

from gluondet.engine import hooks as H
from gluondet.engine.trainer import HookBase, Trainer

from toy_training import toy_run_folder

ITERS, BATCH, EPOCHS = 2, 4, 2
STEP_SECONDS, WORK_SECONDS = 0.25, 0.5
EPOCH_SECONDS = ITERS * (STEP_SECONDS + WORK_SECONDS)


class FakeClock:
    """Seconds that pass only through ``advance`` (called from MXNet's worker threads too)."""

    def __init__(self):
        self._now, self._lock = 1000.0, threading.Lock()

    def advance(self, seconds):
        with self._lock:
            self._now += seconds

    def __call__(self):
        with self._lock:
            return self._now


CLOCK = FakeClock()  # module-wide: a registered operator is built by name and takes no objects


class _WorkDone(mx.operator.CustomOp):
    """Passes its input through; running it is the moment the work before it is done."""

    def forward(self, is_train, req, in_data, out_data, aux):
        CLOCK.advance(WORK_SECONDS)
        self.assign(out_data[0], req[0], in_data[0])


@mx.operator.register("gluondet_test_work_done")
class _WorkDoneProp(mx.operator.CustomOpProp):
    def list_arguments(self):
        return ["data"]

    def list_outputs(self):
        return ["output"]

    def infer_shape(self, in_shape):
        return in_shape, in_shape, []

    def create_operator(self, ctx, shapes, dtypes):
        return _WorkDone()


class QueuedWorkStep:
    """Reports a loss computed first, then queues ``rounds`` large matrix products after it, ending
    in the operator that moves the clock (so it runs well after the step has returned)."""

    loss_names = ("loss",)

    def __init__(self, rounds=4, side=512):
        self.rounds = rounds
        self.a = mx.nd.random.uniform(shape=(side, side))
        self.sink = None

    def num_images(self, batch):
        return BATCH

    def step_batch_size(self, batch):
        return BATCH

    def __call__(self, net, batch, ctx_list):
        loss = float((batch * 2).sum().asscalar())
        CLOCK.advance(STEP_SECONDS)
        x = self.a
        for _ in range(self.rounds):  # MXNet returns at once; the engine works on it afterwards
            x = mx.nd.dot(x, self.a) / 512.0
        self.sink = mx.nd.Custom(x, op_type="gluondet_test_work_done")
        return {"loss": loss}


class NoUpdate:
    """The optimizer's interface without work of its own."""

    def set_learning_rate(self, lr):
        self.learning_rate = lr

    def step(self, batch_size):
        pass

    def save_states(self, path):
        with open(path, "wb") as f:
            f.write(b"")


class SlowAroundEpochs(HookBase):
    """Set-up before each epoch and validation after it, each taking ``seconds`` of the clock."""

    def __init__(self, seconds):
        self.seconds = seconds

    def before_epoch(self):
        CLOCK.advance(self.seconds)

    def after_epoch(self):
        CLOCK.advance(self.seconds)


@pytest.fixture
def run(tmp_path):
    yield from toy_run_folder(tmp_path)


def _train_and_read_metrics(run, extra_hooks=()):
    step = QueuedWorkStep()
    net = gluon.nn.Dense(1, in_units=3)
    net.initialize()
    hooks = [*extra_hooks, H.Checkpointer(run, 0.1, "voc"), H.MetricsWriter(run, step.loss_names)]
    loader = [mx.nd.ones((BATCH, 3))] * ITERS
    trainer = Trainer(net, loader, step, NoUpdate(), [mx.cpu()], hooks, lambda e, i: 0.1, EPOCHS, ITERS,
                      clock=CLOCK)
    trainer.train()
    with open(run.path / "metrics.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))




def test_the_logged_time_of_an_epoch_includes_the_work_its_last_step_queued(run):
    rows = _train_and_read_metrics(run)
    assert [int(row["epoch"]) for row in rows] == list(range(1, EPOCHS + 1))
    for row in rows:
        # Stopped before the queued work was done, it would read (EPOCH_SECONDS - WORK_SECONDS).
        assert float(row["seconds"]) == pytest.approx(EPOCH_SECONDS, abs=0.005), row
        assert float(row["images_per_sec"]) == pytest.approx(ITERS * BATCH / EPOCH_SECONDS, abs=0.0005), row


def test_set_up_and_validation_around_the_steps_are_not_in_the_logged_time(run):
    rows = _train_and_read_metrics(run, [SlowAroundEpochs(100.0)])
    assert [float(row["seconds"]) for row in rows] == pytest.approx([EPOCH_SECONDS] * EPOCHS, abs=0.005)
