"""Divergence: the guard that keeps a bad step from being applied, rollback to the last commit, and
gradient clipping by global norm. Three hooks of the trainer (gluondet.engine.trainer).

The guard judges each step by its total loss (the sum of the family's losses) against the median of
the last ``WINDOW`` applied steps' totals:

- a step whose loss is not finite, or above ``SPIKE_FACTOR`` times that median (once the window holds
  ``MIN_HISTORY`` steps), is not applied (``state.skip_step``);
- ``PATIENCE`` such steps in a row, ``SKIP_LIMIT`` of the last ``WINDOW``, or a median that has
  risen ``RUNAWAY_FACTOR`` times above the lowest median of the run, counted from its first step
  (a loss that climbs steadily never looks like a spike, and a run that explodes in its first steps
  has no calm window), is sustained
  divergence: ``--on-diverge rollback`` goes back to the last committed epoch (or the start) with
  the lr halved, at most ``max_rollbacks`` times, then stops with one line; ``stop`` stops at once;
  ``warn`` says so and goes on (bad steps are still not applied).

The thresholds were calibrated on healthy runs of every family (scripts/bench/bench_loss_spread.py
prints the largest step/median and median/floor ratios each family reached, beside these limits).
The recent losses live in ``state.guard`` and are committed with every epoch, so a resumed run
judges its steps exactly as the straight run did.
"""
import math
import statistics
import tempfile
from pathlib import Path

from ..constants import MAX_ROLLBACKS
from ..progress import say
from .trainer import HookBase, LossDiverged, RollBack

WINDOW = 50           # applied steps whose median is a loss's recent level
MIN_HISTORY = 5       # steps in the window before a step can count as a spike or the level as risen
SPIKE_FACTOR = 10.0   # a step's total loss this many times its recent level is not applied
RUNAWAY_FACTOR = 5.0  # a recent level this many times the run's lowest (from step 1 on) is divergence
PATIENCE = 5          # bad steps in a row that make divergence sustained
SKIP_LIMIT = 10       # or this many of the last WINDOW steps (a diverging run between calmer steps)
LR_FACTOR = 0.5       # each rollback multiplies the lr by this

ADVICE = ("Try a lower --lr (gluondet train --find-lr suggests one), a longer --warmup-epochs, "
          "--clip-grad-norm 10, and check the data with gluondet data check")


class DivergenceGuard(HookBase):
    """Skip bad steps; on sustained divergence roll back, stop or warn (``mode``, --on-diverge).

    ``can_skip`` False (a dist kvstore: the update is collective, one worker cannot leave it out)
    stops at the first non-finite loss instead, as the plain NaN guard did; spikes are not judged.
    """

    def __init__(self, mode="rollback", max_rollbacks=MAX_ROLLBACKS, can_skip=True, window=WINDOW,
                 min_history=MIN_HISTORY, spike_factor=SPIKE_FACTOR, runaway_factor=RUNAWAY_FACTOR,
                 patience=PATIENCE, skip_limit=SKIP_LIMIT):
        self.mode, self.max_rollbacks, self.can_skip = mode, max_rollbacks, can_skip
        self.window, self.min_history, self.patience = window, min_history, patience
        self.skip_limit = skip_limit
        self.spike_factor, self.runaway_factor = spike_factor, runaway_factor

    def after_backward(self):
        state = self.trainer.state
        guard = state.guard
        recent = guard.setdefault("recent", [])
        total = sum(state.losses.values())
        level = statistics.median(recent) if recent else None
        bad = not math.isfinite(total) or (
            self.can_skip and len(recent) >= self.min_history and total > self.spike_factor * level)
        marks = guard.setdefault("skipped", [])  # 1 for each of the last ``window`` steps not applied
        marks.append(int(bad))
        del marks[:-self.window]
        if bad:
            if not self.can_skip:
                raise LossDiverged(self._line("training stopped before applying it"))
            state.skip_step = True
            guard["bad_in_row"] = guard.get("bad_in_row", 0) + 1
            if guard["bad_in_row"] >= self.patience:
                self._diverged(f"{guard['bad_in_row']} steps in a row far above the recent level", level)
            elif sum(marks) >= self.skip_limit:
                self._diverged(f"{sum(marks)} of the last {len(marks)} steps far above the recent level", level)
            return
        guard["bad_in_row"] = 0
        recent.append(total)
        del recent[:-self.window]
        level = statistics.median(recent)
        # the lowest level from the very first step on: a run that explodes within its first steps
        # has no calm window to compare with, but it starts from its untrained network's loss
        guard["floor"] = min(guard.get("floor", level), level)
        if self.can_skip and len(recent) >= self.min_history and level > self.runaway_factor * guard["floor"]:
            self._diverged(f"the recent loss level rose {level / guard['floor']:.0f}x above the "
                           f"run's lowest ({guard['floor']:.3g})", level)

    def after_epoch(self):
        """An epoch that ended on steps the guard left out may still have poisoned the weights
        (a forward updates BatchNorm's statistics before any update): such weights are never
        committed. Checked only then, since reading every weight back costs a pass over them."""
        if self.trainer.state.guard.get("bad_in_row") and not self._weights_finite():
            self._diverged("the weights are no longer finite at the end of the epoch", None)

    def _weights_finite(self):
        import numpy as np

        first = self.trainer.ctx_list[0]
        return all(np.isfinite(p.data(first).asnumpy()).all()
                   for p in self.trainer.net.collect_params().values() if p._data is not None)

    def _worst(self):
        """(name, value) of the loss that went wrong: the first non-finite one, else the largest."""
        losses = self.trainer.state.losses
        for name, value in losses.items():
            if not math.isfinite(value):
                return name, value
        return max(losses.items(), key=lambda item: item[1])

    def _line(self, what, level=None):
        state = self.trainer.state
        name, value = self._worst()
        recent = f", recent level {level:.3g}" if level is not None else ""
        return (f"{name} is {value:.3g} at epoch {state.epoch + 1}, iteration {state.iteration} "
                f"(lr {state.lr:.3g}{recent}); {what}")

    def _diverged(self, why, level):
        state = self.trainer.state
        name, value = self._worst()
        if self.mode == "warn":
            state.guard["bad_in_row"] = 0
            say(f"warning: training is diverging: {self._line(why, level)}; going on (--on-diverge warn)")
            return
        if self.mode == "stop" or len(state.rollbacks) >= self.max_rollbacks:
            after = f" after {len(state.rollbacks)} rollback(s) with the lr halved each time" \
                if state.rollbacks else ""
            raise LossDiverged(f"training diverged{after}: {self._line(why, level)}; stopped, the run folder "
                               f"keeps its last committed epoch. {ADVICE}")
        scale = state.lr_scale * LR_FACTOR
        event = {"epoch": state.epoch + 1, "iteration": state.iteration, "loss": name,
                 "value": value if math.isfinite(value) else str(value), "level": level,
                 "lr": state.lr, "lr_scale": scale, "reason": why}
        say(f"warning: training diverged: {self._line(why, level)}; rolling back to the last committed "
             f"epoch with the lr halved (x{scale:g}; rollback {len(state.rollbacks) + 1} of at most "
             f"{self.max_rollbacks})")
        raise RollBack(event)


class RollbackToCommit(HookBase):
    """On a RollBack: the weights, optimizer state and training state of the last commit in ``run``
    (or of the start, kept in a temporary folder while the run trains), with the lr scale and the
    list of rollbacks carried over; the epoch then runs again from there. A run that diverges again
    from the commit it was just rolled back to goes back to the start, where it has one (a run
    started in this process): that commit was made while the loss already ran away.

    The start is saved at the first step's ``after_backward``, before its update: only the first
    forward has initialized every parameter (GluonCV's backbones defer their shapes), so this hook
    goes before the DivergenceGuard, which may roll back at that very moment.
    """

    def __init__(self, run, ctx_list):
        self.run, self.ctx_list = run, list(ctx_list)
        self._start = None  # TemporaryDirectory holding the starting weights and optimizer state
        self._save_start = False

    def before_train(self):
        self._save_start = self.run.last_state() is None

    def after_backward(self):
        if self._save_start:
            self._save_start = False
            self._start = tempfile.TemporaryDirectory(prefix="gluondet-start-")
            start = Path(self._start.name)
            self.trainer.net.save_parameters(str(start / "start.params"))
            self.trainer.optimizer.save_states(str(start / "start.states"))

    def on_rollback(self):
        state = self.trainer.state
        record = self.run.last_state()
        if record is not None and self._start is not None and self._again(record):
            record = None  # the commit holds the divergence itself: back to the start
        if record is None:
            start = Path(self._start.name)
            params, states, record = start / "start.params", start / "start.states", {"epoch": 0}
        else:
            params, states = self.run.weights("last"), self.run.optimizer_states()
        state.rollbacks[-1]["to_epoch"] = int(record["epoch"])
        self.trainer.net.load_parameters(str(params), ctx=self.ctx_list)
        if record.get("optimizer_states", True):
            self.trainer.optimizer.load_states(str(states))
        rollbacks, scale = state.rollbacks, state.rollbacks[-1]["lr_scale"]
        state.restore(record)
        state.rollbacks, state.lr_scale = rollbacks, scale
        state.guard["bad_in_row"] = 0  # the commit's own bad steps: a fresh start at the lower lr

    def _again(self, record):
        """The previous rollback went back to this very commit and the run diverged again from it
        at half the lr: seen when an epoch was committed while the loss was already running away
        (its weights, or its BatchNorm statistics, diverge at any lr)."""
        rollbacks = self.trainer.state.rollbacks
        return len(rollbacks) >= 2 and rollbacks[-2].get("to_epoch") == int(record["epoch"])

    def after_train(self):
        if self._start is not None:
            self._start.cleanup()
            self._start = None


class ClipGradNorm(HookBase):
    """--clip-grad-norm C: scale the batch's summed gradient down to a global L2 norm of at most C,
    measured as the optimizer applies it (divided by the batch size and any float16 loss scale).
    detectron2's and MMDetection's R-CNN recipes clip this way; --clip-gradient clips each element.

    The norm is one MXNet operator over every gradient (``multi_sum_sq``, as MXNet's LAMB measures
    them) and the scaling is the optimizer's own division (``update_batch_size`` raised), not ~5
    operators per parameter and device (kernel launches on a GPU; on 2 CPU cores mask_rcnn_tiny
    trains as fast either way, 0.95-1.04x measured). Reading the norm waits for the backward pass,
    as the divergence guard's reading of the loss already does."""

    def __init__(self, params, max_norm, loss_scale=lambda: 1.0):
        self.params = [p for p in params if p.grad_req != "null"]
        self.max_norm, self.loss_scale = float(max_norm), loss_scale

    def before_update(self):
        from mxnet import nd

        state = self.trainer.state
        grads = [p.grad(self.trainer.ctx_list[0]) for p in self.params]  # summed already: alike on every device
        norm = float(nd.multi_sum_sq(*grads, num_arrays=len(grads)).sum().sqrt().asscalar())
        limit = self.max_norm * state.update_batch_size * self.loss_scale()
        if norm > limit:
            state.update_batch_size *= norm / limit
