"""The lr range test (``gluondet train --find-lr``): train a few hundred iterations with the lr rising
exponentially, draw the loss against the lr, and suggest a base lr.

As fastai's and PyTorch Lightning's LR finders (after L. Smith, "Cyclical Learning Rates for
Training Neural Networks", 2017): iteration i of n runs at ``start * (end / start) ** (i / (n - 1))``;
the loss (the sum of the family's losses) is smoothed by a bias-corrected exponential moving
average (beta 0.98, as both); the test ends early once the smoothed loss exceeds 4x its best so far
or a loss is not finite, since past that point the curve only says "too high".

The suggestion is a tenth of the lr at the lowest smoothed loss (fastai's ``lr_min``), rounded to
two significant digits. Not the steepest descent of the smoothed loss (Lightning's default): on
the tiny SSD both are stable across seeds, but the steepest point sits in the long early slope of
a heavily smoothed curve and trains slower (measurements: tests/integration/test_find_lr_tiny_ssd.py).
The tenth keeps clear of the edge where the loss explodes (the smoothed minimum lags the raw one,
to a higher lr).

The test trains exactly as ``gluondet train`` would start (engine/train.py's set-up, network,
loader, step, optimizer, precision, --clip-grad-norm and per-epoch seeding, through the real
Trainer), but writes no run folder: the weights are thrown away, and the one file written is
``lr_find.png``. The divergence guard is left out on purpose: the exploding loss is what the test
looks for, not a step to skip.
"""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np

from ..errors import GluondetError
from ..fileio import atomic_path
from ..progress import Progress, say
from ..runtime import configure_engine, configure_threads
from .divergence import ClipGradNorm
from .hooks import EpochSeed
from .train import prepare_inputs, training_parts
from .trainer import HookBase, Trainer

PLOT_FILE = "lr_find.png"
NUM_ITERS = 200
START_LR, END_LR = 1e-6, 1.0
SMOOTHING = 0.98        # fastai's and Lightning's beta
DIVERGE_FACTOR = 4.0    # stop once the smoothed loss exceeds this times its best (fastai, Lightning)
SUGGESTION_FRACTION = 0.1


@dataclass
class LrFindResult:
    """What the range test found: every step's lr and loss (the sum of the family's losses), the
    smoothed loss, the suggested base lr, where the plot is, and why it stopped."""

    suggestion: float
    lrs: List[float]
    losses: List[float]
    smoothed: List[float]
    plot_path: Path
    stopped: str


def range_lr(iteration, num_iters, start_lr, end_lr):
    """The lr of ``iteration`` (0-based) of ``num_iters``: from ``start_lr`` at the first to
    ``end_lr`` at the last, exponentially (a straight line on a log axis)."""
    if num_iters < 2:
        return start_lr
    return start_lr * (end_lr / start_lr) ** (iteration / (num_iters - 1))


def smooth_losses(losses, beta=SMOOTHING):
    """Bias-corrected exponential moving average: ``avg = beta * avg + (1 - beta) * loss``, divided
    by ``1 - beta ** k`` after k losses (so the first value is the first loss, not a tenth of it)."""
    smoothed, avg = [], 0.0
    for k, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * float(loss)
        smoothed.append(avg / (1 - beta ** k))
    return smoothed


def suggest_lr(lrs, losses, beta=SMOOTHING):
    """A tenth of the lr at the lowest smoothed loss; None when that is the first point (the loss
    never fell, so the curve holds no answer)."""
    if not len(losses):
        return None
    lowest = int(np.argmin(smooth_losses(losses, beta)))
    return None if lowest == 0 else float(lrs[lowest]) * SUGGESTION_FRACTION


class _RangeEnd(Exception):
    """Ends the test mid-epoch (the Trainer itself stops only between epochs)."""


class RangeRecorder(HookBase):
    """Records each step's lr and summed loss, shows one progress bar, and ends the test after
    ``num_iters`` steps or when the loss explodes (``stopped`` then says how)."""

    def __init__(self, num_iters, progress=True):
        self.num_iters, self.progress = num_iters, progress
        self.lrs, self.losses, self.best = [], [], math.inf
        self.stopped, self.bar = None, None

    def before_train(self):
        self.bar = Progress(total=self.num_iters, desc="lr range test", unit="it", enabled=self.progress)

    def after_step(self):
        state = self.trainer.state
        loss = float(sum(state.losses.values()))
        if not math.isfinite(loss):
            self._end(f"stopped at lr {state.lr:.2g}: the loss became {loss}")
        self.lrs.append(state.lr)
        self.losses.append(loss)
        smoothed = smooth_losses(self.losses)[-1]  # a few hundred steps: recomputing costs nothing
        self.best = min(self.best, smoothed)
        self.bar.update(1)
        self.bar.set_postfix(lr=state.lr, loss=smoothed)
        if smoothed > DIVERGE_FACTOR * self.best:
            self._end(f"stopped at lr {state.lr:.2g}: smoothed loss above {DIVERGE_FACTOR:g}x its best")
        if len(self.losses) >= self.num_iters:
            self._end(f"all {self.num_iters} iterations")

    def _end(self, reason):
        self.stopped = reason
        raise _RangeEnd(reason)

    def after_train(self):
        if self.bar is not None:
            self.bar.close()


def _range_trainer(s, recorder, num_iters, start_lr, end_lr):
    """engine/train.py's ``build_trainer`` for set-up ``s``, with the range test's lr and hooks (the
    per-epoch seed, the recorder, --clip-grad-norm) instead of the run's schedule and rules, and no
    validation."""

    config = s.config
    net, train_data, _, step, optimizer, _ = training_parts(s, with_validation=False)
    s.family.hybridize_for_training(net)
    iters = min(n for n in (len(train_data), config.max_iters) if n is not None)

    def lr_at(epoch, i):
        return range_lr(epoch * iters + i, num_iters, start_lr, end_lr)

    hooks = [EpochSeed(config.seed), recorder]
    if config.clip_grad_norm:  # it changes every update, so the range test clips as training would
        hooks.append(ClipGradNorm(net.collect_params().values(), config.clip_grad_norm, s.precision.loss_scale))
    return Trainer(net, train_data, step, optimizer, s.ctx_list, hooks, lr_at, math.ceil(num_iters / iters), iters)


def _check(config, num_iters, start_lr, end_lr):
    if config.resume:
        raise GluondetError("--find-lr starts from new weights (or --init-from) and writes no run folder; "
                            "leave out --resume")
    if config.kvstore.startswith("dist") or config.kvstore == "horovod":
        raise GluondetError(f"--find-lr runs in one process; leave out --kvstore {config.kvstore}")
    if num_iters < 2:
        raise GluondetError(f"--find-lr needs at least 2 iterations, got {num_iters}")
    if not 0 < start_lr < end_lr:
        raise GluondetError(f"--find-lr: the lr range must rise from a positive value, got {start_lr:g} "
                            f"to {end_lr:g}")


def find_lr(config, num_iters=NUM_ITERS, start_lr=START_LR, end_lr=END_LR, out=None):
    """Run the lr range test for ``config`` (a TrainConfig, as ``gluondet train`` resolves it) and
    write ``lr_find.png`` into ``out`` (a folder; the current one when None). Returns an LrFindResult.

    Raises GluondetError for a resumed or distributed config, a bad range, or a loss that never
    fell (the plot is written first); TrainingStopped on Ctrl-C or SIGTERM.
    """

    _check(config, num_iters, start_lr, end_lr)
    configure_threads()  # as train(): no effect when MXNet is already imported
    configure_engine(config.ctx, config.kvstore, config.num_workers)
    s = prepare_inputs(config)
    recorder = RangeRecorder(num_iters, progress=not config.quiet)
    trainer = _range_trainer(s, recorder, num_iters, start_lr, end_lr)
    say(f"lr range test of {s.model_cfg.get('name')} on {s.dataset_cfg.name}: {len(s.train_ds)} images, "
        f"batch {config.batch_size}, {s.ctx_list}, up to {num_iters} iterations at lr {start_lr:.2g} to "
        f"{end_lr:.2g}; no run folder is written")
    try:
        trainer.train()
    except _RangeEnd:
        pass
    smoothed = smooth_losses(recorder.losses)
    exact = suggest_lr(recorder.lrs, recorder.losses)
    suggestion = float(f"{exact:.2g}") if exact is not None else None  # the number printed is the one returned
    plot_path = Path(out if out is not None else ".") / PLOT_FILE
    draw_lr_find(plot_path, recorder.lrs, recorder.losses, smoothed, suggestion)
    if suggestion is None:
        raise GluondetError(f"lr range test: the loss never fell below its first value ({recorder.stopped}); "
                            f"no lr to suggest (see {plot_path}); check the data with gluondet data check, "
                            f"or start the range lower")
    return LrFindResult(suggestion, recorder.lrs, recorder.losses, smoothed, plot_path, recorder.stopped)


def result_line(result):
    """The one line that reports a range test: what ran, the lowest point, the suggestion, the plot."""
    lowest = int(np.argmin(result.smoothed))
    return (f"lr range test: {len(result.lrs)} iterations, lr {result.lrs[0]:.2g} to {result.lrs[-1]:.2g} "
            f"({result.stopped}); lowest smoothed loss {result.smoothed[lowest]:.3g} at lr "
            f"{result.lrs[lowest]:.2g}; suggested --lr {result.suggestion:g} (a tenth of it; {result.plot_path})")


def say_result(result):
    """Print ``result_line`` through gluondet.progress (shown with --quiet too: it is the answer)."""
    say(result_line(result))


def draw_lr_find(path, lrs, losses, smoothed, suggestion=None):
    """lr_find.png: each step's loss and the smoothed loss against the lr (log axis), the lowest
    smoothed point and the suggestion marked (Agg, no display), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(lrs, losses, color="tab:blue", alpha=0.3, linewidth=1, label="loss (each step)")
    ax.plot(lrs, smoothed, color="tab:blue", linewidth=2, label=f"smoothed (beta {SMOOTHING:g})")
    if smoothed:
        lowest = int(np.argmin(smoothed))
        ax.plot([lrs[lowest]], [smoothed[lowest]], "o", color="tab:red", label=f"lowest at lr {lrs[lowest]:.2g}")
        # up to the smoothed curve's top: a last raw spike (often 100x) would flatten everything else
        ax.set_ylim(min(min(losses), min(smoothed)) * 0.95, max(smoothed) * 1.05)
    if suggestion is not None:
        ax.axvline(suggestion, color="tab:green", linestyle="--", label=f"suggested --lr {suggestion:g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title("lr range test")
    ax.legend(loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
