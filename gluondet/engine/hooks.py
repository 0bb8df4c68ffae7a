"""The rules of training, one small hook each (see gluondet.engine.trainer for the loop).

Order matters and is set in gluondet.engine.train.make_hooks: seeding and the divergence guard
first (gluondet.engine.divergence); after an epoch, validation -> best -> early stopping -> periodic
weights -> commit -> metrics views.
"""
import random

import numpy as np

from ..eval.folder import eval_dir, write_eval_folder
from ..eval.html_report import write_report
from ..progress import Progress as Bar, say
from ..run_folder import CURVES_FILE, METRICS_FILE, TENSORBOARD_DIR
from .metrics_log import IterationLog, TensorBoard, draw_curves, validation_columns, write_metrics
from .trainer import FORCED_STOP, HookBase


def epoch_seed(seed, epoch, rank=0):
    """The seed of an epoch: a function of (seed, epoch, rank) alone, so a resumed run draws the
    same random numbers as one trained straight through."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(rank)]).generate_state(1)[0])


class EpochSeed(HookBase):
    """Seed Python's, NumPy's and MXNet's generators at the start of every epoch."""

    def __init__(self, seed, rank=0):
        self.seed, self.rank = seed, rank

    def before_epoch(self):
        import mxnet as mx

        s = epoch_seed(self.seed, self.trainer.state.epoch, self.rank)
        random.seed(s)
        np.random.seed(s)
        mx.random.seed(s)


class Validation(HookBase):
    """Validate every ``interval`` epochs and after the last; ``validate()`` returns gluondet.eval's
    result dict with ``map``. Scores land in ``state.scores`` and the epoch's metrics row."""

    def __init__(self, validate, interval):
        self.validate, self.interval = validate, interval

    def due(self):
        epoch = self.trainer.state.epoch + 1
        return epoch % self.interval == 0 or epoch == self.trainer.epochs

    def after_epoch(self):
        state = self.trainer.state
        if not self.due():
            return

        state.scores = self.validate(self.trainer.signals.guard)
        state.row.update(validation_columns(state.scores))  # val_map, ap/<class>, coco/<12 numbers>


class BestScore(HookBase):
    """Keep the best validation score: ``state.best_*`` change only on a strict improvement (the
    commit then writes best.params)."""

    def __init__(self, metric_label="mAP"):
        self.metric_label = metric_label

    def after_epoch(self):
        state = self.trainer.state
        if state.scores is None:
            return
        value = state.scores["map"]
        improved = state.best_map is None or value > state.best_map
        if improved:
            state.best_map, state.best_epoch = value, state.epoch + 1
        say(f"epoch {state.epoch + 1}: {self.metric_label} {value:.4f}"
            + (" (best so far: best.params at this epoch's commit)" if improved else f" (best {state.best_map:.4f})"))


class EarlyStopping(HookBase):
    """``--patience N``: stop when the last N validations did not improve on the best."""

    def __init__(self, patience):
        self.patience = patience

    def after_epoch(self):
        state = self.trainer.state
        if not self.patience or state.scores is None or state.best_epoch is None:
            return
        since_best = sum(1 for row in state.history if "val_map" in row and row["epoch"] > state.best_epoch)
        since_best += 1 if state.epoch + 1 > state.best_epoch else 0
        if since_best >= self.patience:
            state.stop_reason = "early-stop"
            say(f"early stop: no improvement in {since_best} validation(s) (--patience {self.patience}); "
                f"best.params is epoch {state.best_epoch} ({state.best_map:.4f})")


class PeriodicCheckpoint(HookBase):
    """epoch_XXXX.params every ``interval`` epochs (0: never)."""

    def __init__(self, run, interval):
        self.run, self.interval = run, interval

    def after_epoch(self):
        epoch = self.trainer.state.epoch + 1
        if self.interval and epoch % self.interval == 0:
            self.run.save_params(self.trainer.net, f"epoch_{epoch:04d}.params")


class Checkpointer(HookBase):
    """Commit every finished epoch (last.json with its metrics row, last.params/.states, best.* when
    it improved); on Ctrl-C/SIGTERM commit what was done: the finished epoch, or the part of it."""

    def __init__(self, run, base_lr, metric, with_states=True):
        self.run, self.base_lr, self.metric, self.with_states = run, base_lr, metric, with_states

    def record(self, epochs_done, partial=None):
        state, trainer = self.trainer.state, self.trainer
        return {"epoch": epochs_done, "best_map": state.best_map, "best_epoch": state.best_epoch,
                "lr": state.lr, "base_lr": self.base_lr, "iters_per_epoch": trainer.iters_per_epoch,
                "metric": self.metric, "epochs": trainer.epochs,
                "stopped_early": state.stop_reason == "early-stop", "partial": partial,
                "history": state.history, "lr_scale": state.lr_scale, "rollbacks": state.rollbacks,
                "guard": state.guard}

    def after_epoch(self):
        state = self.trainer.state
        row = {"epoch": state.epoch + 1, "lr": state.lr, "seconds": round(state.seconds, 2),
               "images_per_sec": round(state.images_per_sec, 3), **state.mean_losses(), **state.row}
        if state.skipped or state.rollbacks:  # columns a healthy run's metrics.csv does without
            row.update(skipped_steps=state.skipped, rollbacks=len(state.rollbacks))
        state.history.append(row)
        self.run.commit_epoch(self.trainer.net, self.trainer.optimizer, self.record(state.epoch + 1),
                              with_states=self.with_states)

    def on_stop(self):
        state = self.trainer.state
        forced = state.stop_reason == FORCED_STOP and not state.epoch_done
        done = self.trainer.iters_per_epoch if state.epoch_done else state.iteration
        if forced or done <= state.start_iteration:
            return  # nothing new since the last commit (or weights caught mid-update)
        partial = {"iteration": done, "loss_sums": state.loss_sums, "images": state.images,
                   "seconds": state.seconds, "lr": state.lr, "skipped": state.skipped}
        self.run.commit_epoch(self.trainer.net, self.trainer.optimizer, self.record(state.epoch, partial),
                              with_states=self.with_states)


class MetricsWriter(HookBase):
    """metrics.csv and curves.png (with ``lr_schedule``, the planned lr of every epoch) rewritten
    from the committed history; TensorBoard scalars every epoch, and with ``log_every`` N the
    losses (mean over N iterations) and lr every N iterations (logging.IterationLog)."""

    def __init__(self, run, loss_names, lr_schedule=None, log_every=0):
        self.run, self.loss_names, self.lr_schedule = run, loss_names, lr_schedule
        self.board = None  # opened when training starts: tb/ appears in a run folder that trains
        self.log_every = log_every
        self.iterations = None

    def after_step(self):
        if not self.log_every:
            return

        state = self.trainer.state
        if self.iterations is None:
            self.iterations = IterationLog(self.board, self.log_every, self.trainer.iters_per_epoch)
        self.iterations(state.epoch, state.iteration - 1, state.lr, state.losses)

    def before_train(self):
        self.board = TensorBoard(self.run.path / TENSORBOARD_DIR)
        if self.trainer.state.history:  # a resumed run: the views follow the committed history
            write_metrics(self.run.path / METRICS_FILE, self.trainer.state.history)

    def after_epoch(self):
        history = self.trainer.state.history
        write_metrics(self.run.path / METRICS_FILE, history)
        row = history[-1]
        self.board.scalars({k: v for k, v in row.items() if k != "epoch"}, row["epoch"])
        if "val_map" in row:
            draw_curves(history, self.run.path / CURVES_FILE, self.loss_names, lr_schedule=self.lr_schedule)

    def after_train(self):
        if self.board is not None:
            self.board.close()


class EvalReport(HookBase):
    """At the end of training: ``RUN/eval-<val split>/`` from the best epoch's own validation (the
    very matches behind best.json's mAP, kept in memory: no re-evaluation) and ``RUN/report.html``.

    Validation fills the metric ``new_metric()`` hands out. A run stopped by Ctrl-C, SIGTERM or a
    diverging loss gets neither; a resumed run whose best epoch came before the resume gets only
    the page (``gluondet eval RUN`` writes the folder then).
    """

    def __init__(self, run, dataset, split, family, data_shape, metric_name, classes):
        self.run, self.dataset, self.split = run, dataset, split
        self.family, self.data_shape = family, data_shape
        self.metric_name, self.classes = metric_name, classes
        self.pending = self.best = None

    def new_metric(self):
        """The metric validation fills: the run's box metric, or for the mask family an
        ``InstanceMetric`` (its boxes are analysed, its masks drawn in the mosaics)."""
        self.pending = self.family.new_metric(self.metric_name, self.classes)
        return self.pending

    def after_epoch(self):
        state = self.trainer.state
        if state.scores is not None and state.best_epoch == state.epoch + 1:
            self.best = (self.pending, dict(state.scores, epoch=state.best_epoch))

    def after_train(self):
        stop = self.trainer.state.stop_reason
        if stop == "diverged":  # no evaluation of a diverged run, but its page says what happened
            say(f"report: {write_report(self.run.path)}")
        if stop not in (None, "early-stop"):
            return
        if self.best is not None:
            metric, scores = self.best
            result = dict(scores, run=str(self.run.path), params=str(self.run.path / "best.params"),
                          dataset=self.dataset.name, split=self.split, images=len(self.dataset))
            write_eval_folder(eval_dir(self.run.path, self.split), metric, self.dataset, result,
                              self.family, self.data_shape)
        say(f"report: {write_report(self.run.path)}")


class Progress(HookBase):
    """Training progress by gluondet.progress's policy: a bar per epoch on a terminal, one plain
    line per epoch in a log (with the epoch's synchronized img/s), nothing with --quiet."""

    def __init__(self, enabled=True):
        self.enabled = enabled
        self.bar = None

    def before_epoch(self):
        t, state = self.trainer, self.trainer.state
        self.bar = Bar(total=t.iters_per_epoch, desc=f"epoch {state.epoch + 1}/{t.epochs}", unit="it",
                       enabled=self.enabled)
        self.bar.update(state.start_iteration)

    def _postfix(self, **extra):
        state = self.trainer.state
        self.bar.set_postfix(**extra, lr=state.lr, **state.mean_losses())

    def after_step(self):
        self.bar.update(1)
        self._postfix()

    def after_epoch(self):
        self._postfix(img_per_s=round(self.trainer.state.images_per_sec, 2))
        self.bar.close()

    def on_stop(self):
        if self.bar is not None:
            self.bar.close()

    on_rollback = on_stop
