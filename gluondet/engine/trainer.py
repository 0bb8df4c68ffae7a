"""The training loop: a bare epoch/step loop that calls hooks, in the shape of detectron2's SimpleTrainer.

``Trainer.train()`` runs epochs of steps; each step sets the lr, runs the family's step object
(forward + backward on every device), lets hooks look at the losses before the update (the
divergence guard may mark the step skipped: it is then not applied), lets hooks change the summed
gradients (gradient clipping), then updates. Everything else (validation, checkpoints, metrics,
early stopping, seeding, progress) is a hook (gluondet.engine.hooks) with one job, so each rule is
tested with a toy network.

Rolling back: a hook that raises ``RollBack`` during an epoch (or first thing after it, before
anything is validated or committed) makes the loop call every hook's
``on_rollback`` (one of them puts the weights, the optimizer and ``state`` back at the last
commit) and go on from where ``state`` then says.

Stopping: Ctrl-C and SIGTERM do not raise inside MXNet (an exception raised in a ``__del__`` is
swallowed, and training ran on); they set a flag that the loop checks after each step and each
validation batch. The hooks' ``on_stop`` then save, and ``TrainingStopped`` carries the reason out.
A second Ctrl-C interrupts at once.
"""
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..errors import GluondetError
from ..runtime import handling_signals


FORCED_STOP = "Ctrl-C (twice)"  # KeyboardInterrupt: the weights may be caught mid-update


class LossDiverged(GluondetError):
    """Training diverged and the divergence guard stopped it (one line: loss, iteration, lr, what to try)."""


LossNotFinite = LossDiverged  # the name earlier versions raised when a loss became NaN


class RollBack(Exception):
    """Raised by a hook mid-epoch: go back to the last commit (``event`` says why, for the record)."""

    def __init__(self, event):
        super().__init__(event.get("reason", "rollback"))
        self.event = event


class TrainingStopped(Exception):
    """Training stopped early on a signal; what could be saved was saved (``run_dir``)."""

    def __init__(self, reason, epoch, iteration=None, run_dir=None):
        super().__init__(f"{reason} in epoch {epoch}")
        self.reason, self.epoch, self.iteration, self.run_dir = reason, epoch, iteration, run_dir


class StopRequested(Exception):
    """Raised by the loop at a safe point after Ctrl-C or SIGTERM."""


class StopSignals:
    """SIGINT/SIGTERM set ``requested``; a second SIGINT raises KeyboardInterrupt at once."""

    NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

    def __init__(self):
        self.requested = None  # the name of the signal that asked to stop

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = self.NAMES.get(signum, f"signal {signum}")

    def check(self):
        if self.requested:
            raise StopRequested(self.requested)

    @contextmanager
    def installed(self):
        """Handle the signals inside the block (``runtime.handling_signals``: main thread only, and
        a signal ignored when it starts, by nohup or a background job, stays ignored)."""
        with handling_signals(self.NAMES, self._handle):
            yield self

    def guard(self, iterable):
        """``iterable`` that checks for a stop before each item (validation loaders)."""
        return Guarded(iterable, self.check)


class Guarded:
    """``iterable`` with ``check()`` called before each item; its length is the iterable's."""

    def __init__(self, iterable, check):
        self._iterable, self._check = iterable, check

    def __len__(self):
        return len(self._iterable)

    def __iter__(self):
        for item in self._iterable:
            self._check()
            yield item


@dataclass
class TrainState:
    """Where training is: what hooks read and write. ``history`` holds one metrics row per
    finished epoch (the source of metrics.csv); ``row`` is the epoch in progress."""

    epoch: int = 0                    # 0-based epoch in progress (== finished epochs before it)
    iteration: int = 0                # 0-based iteration within the epoch
    start_iteration: int = 0          # resumed mid-epoch: the first iteration to run
    lr: Optional[float] = None
    losses: Dict[str, float] = field(default_factory=dict)   # the last step's
    loss_sums: Dict[str, float] = field(default_factory=dict)
    images: int = 0
    seconds: float = 0.0
    steps: int = 0                    # steps run in this epoch (resumed part included)
    skipped: int = 0                  # of those, steps the divergence guard did not apply
    skip_step: bool = False           # set by a hook in after_backward: do not apply this step
    lr_scale: float = 1.0             # multiplies the schedule's lr (halved by each rollback)
    rollbacks: List[dict] = field(default_factory=list)  # every rollback of the run, in order
    guard: Dict[str, object] = field(default_factory=dict)  # the divergence guard's recent losses
    update_batch_size: float = 1      # what the optimizer divides this step's gradients by (clipping raises it)
    epoch_done: bool = False          # the epoch's training finished (validation may follow)
    row: Dict[str, object] = field(default_factory=dict)
    scores: Optional[dict] = None     # this epoch's validation result, if it validated
    best_map: Optional[float] = None
    best_epoch: Optional[int] = None  # 1-based
    history: List[dict] = field(default_factory=list)
    stop_reason: Optional[str] = None

    def begin_epoch(self, epoch, start_iteration=0, carried=None):
        """Reset the per-epoch counters (``carried``: sums of the part run before a mid-epoch stop)."""
        carried = carried or {}
        self.epoch, self.iteration, self.start_iteration = epoch, start_iteration, start_iteration
        self.loss_sums = dict(carried.get("loss_sums") or {})
        self.images = int(carried.get("images") or 0)
        self.seconds = float(carried.get("seconds") or 0.0)
        self.steps = start_iteration
        self.skipped = int(carried.get("skipped") or 0)
        self.epoch_done, self.row, self.scores, self.skip_step = False, {}, None, False

    def mean_losses(self):
        """Each loss's mean over the epoch's applied steps."""
        return {k: v / max(1, self.steps - self.skipped) for k, v in self.loss_sums.items()}

    def restore(self, record):
        """Where a commit record (last.json) says training is: the epoch (a stopped epoch's part
        included), best, history, lr scale, rollbacks and the guard's recent losses."""
        self.best_map, self.best_epoch = record.get("best_map"), record.get("best_epoch")
        self.history = list(record.get("history") or [])
        self.lr_scale = float(record.get("lr_scale", 1.0))
        self.rollbacks = list(record.get("rollbacks") or [])
        self.guard = dict(record.get("guard") or {})
        partial = record.get("partial")
        self.begin_epoch(int(record["epoch"]), int(partial["iteration"]) if partial else 0, partial)
        if partial:
            self.lr = partial.get("lr")
        return self

    @property
    def images_per_sec(self):
        return self.images / self.seconds if self.seconds > 0 else 0.0


class HookBase:
    """A rule of training. Every method is optional; ``self.trainer`` is set by the Trainer."""

    trainer = None

    def before_train(self): ...
    def before_epoch(self): ...
    def before_step(self): ...
    def after_backward(self): ...  # losses known, weights not yet updated
    before_update = None           # a method here: gradients summed over devices, not yet applied
    def after_step(self): ...
    def after_epoch(self): ...
    def on_rollback(self): ...     # a RollBack was raised: back to the last commit
    def on_stop(self): ...         # Ctrl-C / SIGTERM / divergence: save what can be saved
    def after_train(self): ...


class Trainer:
    """Runs ``epochs`` epochs of ``step`` over ``loader`` with ``optimizer`` (a gluon.Trainer).

    ``lr_at(epoch, iteration)`` gives each iteration's learning rate; ``iters_per_epoch`` caps an
    epoch; ``update_scale`` multiplies the optimizer's batch size (distributed workers); ``clock``
    (seconds, ``time.perf_counter`` by default) times each epoch's steps for ``state.seconds`` and img/s.
    """

    def __init__(self, net, loader, step, optimizer, ctx_list, hooks, lr_at, epochs, iters_per_epoch,
                 state=None, update_scale=1, signals=None, clock=time.perf_counter):
        self.net, self.loader, self.step, self.optimizer = net, loader, step, optimizer
        self.ctx_list, self.lr_at, self.clock = list(ctx_list), lr_at, clock
        self.epochs, self.iters_per_epoch, self.update_scale = epochs, iters_per_epoch, update_scale
        self.state = state or TrainState()
        self.signals = signals or StopSignals()
        self.hooks = []
        self.register(hooks)

    def register(self, hooks):
        for hook in hooks:
            hook.trainer = self
            self.hooks.append(hook)

    def call(self, name):
        for hook in self.hooks:
            method = getattr(hook, name)
            if method is not None:
                method()

    def train(self):
        """Train to ``epochs``; raises TrainingStopped after saving on Ctrl-C/SIGTERM."""
        state = self.state
        with self.signals.installed():
            try:
                self.call("before_train")
                while state.epoch < self.epochs and not state.stop_reason:
                    self.call("before_epoch")
                    try:
                        self.run_epoch()
                        self.call("after_epoch")
                    except RollBack as rollback:
                        state.rollbacks.append(rollback.event)
                        self.call("on_rollback")
                        continue
                    if not state.stop_reason:
                        state.begin_epoch(state.epoch + 1)
            except (StopRequested, KeyboardInterrupt) as e:
                state.stop_reason = str(e) if isinstance(e, StopRequested) else FORCED_STOP
                self.call("on_stop")
                raise TrainingStopped(state.stop_reason, state.epoch + 1,
                                      None if state.epoch_done else state.iteration) from None
            except LossDiverged:
                state.stop_reason = "diverged"
                raise
            finally:
                self.call("after_train")

    def run_epoch(self):
        import mxnet as mx

        state = self.state
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(state.epoch, start=state.start_iteration)
        start = self.clock()
        try:
            for i, batch in enumerate(self.loader, start=state.start_iteration):
                if i >= self.iters_per_epoch:
                    break
                self.run_step(i, batch)
                self.signals.check()
        finally:
            mx.nd.waitall()  # the last update is part of the epoch's time (MXNet is asynchronous)
            state.seconds += self.clock() - start
        state.epoch_done = True

    def run_step(self, i, batch):
        state = self.state
        state.iteration = i
        state.lr = self.lr_at(state.epoch, i) * state.lr_scale
        self.optimizer.set_learning_rate(state.lr)
        self.call("before_step")
        state.losses = self.step(self.net, batch, self.ctx_list)
        self.call("after_backward")
        if state.skip_step:
            state.skip_step = False
            state.skipped += 1
        else:
            self.update(self.step.step_batch_size(batch) * self.update_scale)
            for name, value in state.losses.items():
                state.loss_sums[name] = state.loss_sums.get(name, 0.0) + value
        state.images += self.step.num_images(batch)
        state.steps += 1
        state.iteration = i + 1
        self.call("after_step")

    def update(self, batch_size):
        """Apply the step's gradients. With a ``before_update`` hook (gradient clipping), the
        gradients are first summed over the devices, so the hook sees the gradient of the whole
        batch; ``state.update_batch_size`` is what the optimizer divides them by (a hook raises
        it to scale the step down)."""
        if not any(hook.before_update is not None for hook in self.hooks):
            self.optimizer.step(batch_size)
            return
        self.state.update_batch_size = batch_size
        self.optimizer.allreduce_grads()
        self.call("before_update")
        self.optimizer.update(self.state.update_batch_size)


