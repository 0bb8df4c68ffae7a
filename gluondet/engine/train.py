"""``train(config) -> run folder``: set up data, network, optimizer and hooks, then run the Trainer.

Order: contexts -> datasets -> run folder (created and locked, or resumed: locked and repaired) ->
network -> loaders -> optimizer -> hooks -> Trainer.train(). Only the chief (worker 0 of a
distributed job, or the only process) writes the run folder, validates and keeps the best
checkpoint; every worker seeds each epoch from (seed, epoch), so a resumed run is the same run.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..config import TrainConfig, resolve_dataset, resolve_model_config, resolve_train_config
from ..constants import METRIC_LABELS
from ..data import load_dataset
from ..data.loader import default_num_workers
from ..data.split import val_overlap_warning
from ..errors import GluondetError
from ..families import family_of
from ..models import build_model
from ..models.pretrained import init_from
from ..models.weights import load_weights
from ..progress import say
from ..run_folder import RunFolder, RunFolderError
from ..runtime import configure_engine, configure_threads, make_contexts, parse_ctx_spec
from . import hooks as H, horovod
from .amp import Precision
from .distributed import join_watchdog, require_launcher, shard_indices, sync_steps_per_epoch, worker_info
from .divergence import ClipGradNorm, DivergenceGuard, RollbackToCommit
from .horovod import (CollectiveSignals, CountingStep, announce, check_same_inputs, finish, make_trainer,
                      rank_device, said_once, sum_factor)
from .not_learning import NotLearning
from .schedule import lr_curve, schedule_of
from .trainer import LossDiverged, LossNotFinite, Trainer, TrainingStopped, TrainState  # noqa: F401 (API)
from .validation import validate
from .watchdog import ReportPosition


def resume_config(run_dir, flags):
    """The TrainConfig to continue ``run_dir``: its saved config, with the flags given now on top
    (``--epochs`` to train longer, ``--ctx`` on another machine...)."""
    run = RunFolder.open(run_dir)
    saved = run.config
    if "train" not in saved or run.last_state() is None:
        raise GluondetError(f"--resume {run_dir}: no finished epoch to continue from (no last.json); "
                            f"start it again with --out")
    known = TrainConfig.__dataclass_fields__
    base = TrainConfig(**{k: v for k, v in saved["train"].items() if k in known})
    flags = {k: v for k, v in flags.items() if k not in ("dataset", "model", "resume")}
    config = resolve_train_config(saved["model"], flags, base=base)
    config.resume = str(run.path)
    return config


@dataclass
class Setup:
    """What the set-up resolved, for the hooks and the report line."""

    config: Any
    ctx_list: list
    rank: int
    num_workers: int
    kvstore: Any
    dataset_cfg: Any
    model_cfg: dict
    family: object  # gluondet.families.Family
    classes: list
    train_ds: Any
    val_ds: Any
    run: Optional[RunFolder]
    resumed: Optional[dict]
    precision: Any = None  # engine.amp.Precision, set before the network is built
    position: Any = None  # engine.watchdog.Position a distributed rank's heartbeat reports

    @property
    def chief(self):
        return self.rank == 0

    @property
    def horovod(self):
        """The HorovodJob of a --kvstore horovod rank (engine/horovod.py), else None."""
        return self.kvstore if getattr(self.kvstore, "type", None) == "horovod" else None

    @property
    def updates_here(self):
        """Whether this process applies the updates to its own weights (one process, or Horovod),
        rather than a dist kvstore's servers: only then can a step be skipped or rolled back."""
        return self.num_workers == 1 or self.horovod is not None


def _kvstore(config):
    """(kvstore for the Trainer, rank, number of workers, watchdog position or None): a dist kvstore
    is created here, and only in a process ``gluondet launch`` started (elsewhere it would wait for
    peers forever); so is a Horovod job (engine/horovod.py: the kvstore is its HorovodJob), only in
    a process a Horovod launcher started."""
    if config.kvstore == "horovod":
        job = horovod.start(config)
        return job, job.rank, job.num_workers, job.position
    if not config.kvstore.startswith("dist"):
        return config.kvstore, 0, 1, None
    import mxnet as mx

    require_launcher(config.kvstore)
    kv = mx.kv.create(config.kvstore)
    rank, num_workers = worker_info(kv)
    return kv, rank, num_workers, join_watchdog(rank)


def _devices(config, kvstore):
    """The --ctx of this process; a Horovod rank's one device from its local rank."""
    if getattr(kvstore, "type", None) != "horovod":
        return config.ctx

    num_gpus = 0
    if any(kind == "gpu" for kind, _ in parse_ctx_spec(config.ctx)):
        import mxnet as mx

        num_gpus = mx.context.num_gpus()
    device = rank_device(config.ctx, kvstore.local_rank, num_gpus)
    announce(kvstore, device)
    return device


def _resolved_model_cfg(config):
    model_cfg = resolve_model_config(config.model, config.config_dir)
    if config.model_options:  # --model-option KEY=VALUE over the YAML's options:
        model_cfg["options"] = {**(model_cfg.get("options") or {}), **config.model_options}
    if config.data_shape:
        model_cfg["data_shape"] = int(config.data_shape)
    if not model_cfg.get("data_shape"):
        raise GluondetError(f"model '{config.model}': no data_shape in its config; pass --data-shape")
    return model_cfg


def _check_schedule(config, resumed, saved_patience=0):
    """Refuse a resume with nothing to do; warn about lr steps that never come."""
    if resumed and resumed.get("stopped_early") and config.patience == saved_patience:
        raise GluondetError(f"--resume {config.resume}: nothing to do, it stopped early at epoch "
                            f"{resumed['epoch']} (--patience {saved_patience}); to go on, pass another "
                            f"--patience (0: never stop early)")
    if resumed and resumed["epoch"] >= config.epochs and not resumed.get("partial"):
        raise GluondetError(f"--resume {config.resume}: nothing to do, it finished all {resumed['epoch']} "
                            f"epochs; to train longer pass a larger total, e.g. --epochs {resumed['epoch'] + 10}")
    late = [s for s in config.lr_steps if s >= config.epochs]
    if late:
        say(f"warning: lr steps {','.join(map(str, late))} at or beyond --epochs {config.epochs}: "
            f"that decay never happens (--lr-steps sets them)")


def _open_resumed(config, chief):
    """The run folder to resume; the chief locks it and repairs it before anything reads last.*."""
    run = RunFolder.open(config.resume)
    if chief:
        run.lock()
        try:
            for line in run.repair():
                say(f"{run.path}: {line}")
        except BaseException:
            run.unlock()
            raise
    return run


def prepare_inputs(config):
    """Contexts, datasets and a resumed run folder (locked, repaired): ``prepare`` without creating
    a new run folder (the lr range test, engine/lr_find.py, writes none)."""

    kvstore, rank, num_workers, position = _kvstore(config)
    ctx_list = make_contexts(_devices(config, kvstore))
    resumed_run = _open_resumed(config, rank == 0) if config.resume else None
    try:
        resumed = resumed_run.last_state() if resumed_run else None
        _check_schedule(config, resumed if rank == 0 else None,
                        resumed_run.train_config.get("patience", 0) if resumed_run else 0)
        dataset_cfg = resolve_dataset(config.dataset, config.config_dir)
        model_cfg = _resolved_model_cfg(config)
        family = family_of(model_cfg)
        masks = family.masks  # a mask model reads every object's mask too
        train_ds = load_dataset(dataset_cfg, config.train_split, skip_bad=config.skip_bad, masks=masks,
                                classes=resumed_run.classes if resumed_run else None)
        classes = list(train_ds.classes)
        if rank == 0 and dataset_cfg.classes is None and not config.resume:
            say(f"classes found in the labels ({len(classes)}): {', '.join(classes)}")
        val_ds = load_dataset(dataset_cfg, config.val_split, classes=classes, skip_bad=config.skip_bad, masks=masks)
        if getattr(kvstore, "type", None) == "horovod":
            # the settings, less the paths, which may differ between machines (the files are compared)
            paths = ("dataset", "out", "resume", "init_from", "config_dir", "pretrained_base")
            settings = {"train": {k: v for k, v in config.to_dict().items() if k not in paths},
                        "model": {k: v for k, v in model_cfg.items() if k != "source"}}
            check_same_inputs(kvstore, classes, train_ds, val_ds, settings)
    except BaseException:
        if resumed_run is not None:
            resumed_run.unlock()
        raise
    overlap = val_overlap_warning(train_ds, val_ds) if rank == 0 else None
    if overlap:
        say(f"warning: {overlap}")
    return Setup(config, ctx_list, rank, num_workers, kvstore, dataset_cfg, model_cfg,
                 family, classes, train_ds, val_ds, resumed_run if rank == 0 else None, resumed,
                 position=position)


def prepare(config):
    """Contexts, datasets and the run folder (locked; a resumed one repaired). Nothing is written
    into a new run folder but its lock yet."""
    s = prepare_inputs(config)
    if s.chief and s.run is None:
        s.run = RunFolder.create(config.out, s.dataset_cfg.name, s.model_cfg.get("name", config.model))
    return s


def build_network(s):
    """The network: resumed from last.params, initialized from --init-from, or built fresh."""

    config = s.config
    if config.resume:
        net = build_model(s.model_cfg, s.classes, pretrained_base=False)
        run = RunFolder(config.resume)
        load_weights(net, run.weights("last"), s.family.ignore_extra_weights, run=run)
        return net
    if config.init_from:
        source = Path(str(config.init_from)).expanduser()
        source_classes = None
        if source.suffix == ".params" or source.is_dir():
            try:
                source_classes = RunFolder.open(source).classes
            except GluondetError:
                source_classes = None  # plain weights for these classes
            if source.is_dir():
                source = RunFolder.open(source).weights("best")
        return init_from(str(source), s.model_cfg, s.classes, source_classes=source_classes)
    return build_model(s.model_cfg, s.classes, pretrained_base=config.pretrained_base)


def _train_indices(s, batch_size):
    """(indices of training images or None for all, steps per epoch every worker can run or None)."""
    indices = s.family.train_indices(s.train_ds)
    if indices is not None and len(indices) < len(s.train_ds) and s.chief:
        say(f"{s.model_cfg.get('name')}: {len(s.train_ds) - len(indices)} training image(s) without objects "
            "left out")
    if s.num_workers == 1:
        return indices, None

    base = indices if indices is not None else list(range(len(s.train_ds)))
    indices = [base[i] for i in shard_indices(len(base), s.rank, s.num_workers)]
    steps = sync_steps_per_epoch(len(base), s.num_workers, batch_size)
    say(f"worker {s.rank}/{s.num_workers}: {len(indices)} images, {steps} steps per epoch; "
        f"effective batch size {batch_size * s.num_workers}, lr {s.config.lr}")
    return indices, steps


def make_optimizer(net, family, config, kvstore, precision=None):
    from mxnet import gluon

    options = {"learning_rate": config.lr, "wd": config.wd}
    if config.optimizer == "sgd":
        options["momentum"] = config.momentum
    if config.clip_gradient:
        options["clip_gradient"] = config.clip_gradient
    precision = precision or Precision()
    if getattr(kvstore, "type", None) == "horovod":  # the update on each rank, after the allreduce

        optimizer = make_trainer(kvstore, family.trainable_params(net), config.optimizer, options)
        precision.attach(optimizer)
        return optimizer
    # On one machine the update runs beside the weights, not in the kvstore: a rollback then puts
    # back weights the next update really starts from, and --clip-grad-norm sees summed gradients.
    # A dist kvstore keeps them on its servers (its workers neither roll back nor clip by norm).
    trainer_options = {"update_on_kvstore": False, **precision.trainer_options()} \
        if not str(config.kvstore).startswith("dist") else precision.trainer_options()
    optimizer = gluon.Trainer(family.trainable_params(net), config.optimizer, options, kvstore=kvstore,
                              **trainer_options)
    precision.attach(optimizer)  # float16: the dynamic loss scaler
    return optimizer


def restore_state(s, optimizer):
    """TrainState of a resumed run (epoch, best, history, a stopped epoch's part) and its optimizer."""
    state = TrainState()
    r = s.resumed
    if not r:
        return state
    if r.get("optimizer_states", True):
        import pickle

        import mxnet as mx

        run = RunFolder(s.config.resume)
        states = run.optimizer_states()
        try:
            optimizer.load_states(str(states))
        except (OSError, EOFError, ValueError, pickle.UnpicklingError, mx.base.MXNetError) as e:
            raise RunFolderError(f"{states}: missing or damaged ({str(e).splitlines()[0][:100]}); "
                                 f"the weights are in last.params: start a new run with --init-from "
                                 f"{run.weights('last')}") from None
    elif s.chief:
        say("resuming a distributed run: its optimizer state stayed on the parameter servers, "
            "so the momentum starts afresh")
    return state.restore(r)


def divergence_hooks(s, net, optimizer=None):
    """The divergence guard (and, where the updates run here, its rollback) and --clip-grad-norm.

    A Horovod rank's guard judges the job's losses (HorovodSync), so every rank skips, rolls back
    (to rank 0's commit: horovod.AfterRollback) or stops alike.
    """

    config = s.config
    local = s.updates_here  # a dist worker can neither skip a collective update nor roll back
    hooks = [DivergenceGuard(config.on_diverge, config.max_rollbacks, can_skip=local)]
    if local and s.chief and config.on_diverge == "rollback":
        hooks.insert(0, RollbackToCommit(s.run, s.ctx_list))  # before the guard: see its docstring
    if config.clip_grad_norm:
        # Horovod's Gloo/NCCL<2.10 allreduce leaves the sum of the ranks' gradients, which the
        # update divides by their number: the norm the update applies is N times smaller
        summed = 1
        if s.horovod is not None and optimizer is not None:
            summed = sum_factor(s.horovod, optimizer)
        # the parameters trainable_params left trainable (ClipGradNorm keeps those with a gradient)
        hooks.append(ClipGradNorm(net.collect_params().values(), config.clip_grad_norm,
                                  lambda: s.precision.loss_scale * summed))  # a property: read at every step
    return hooks


def _distributed_hooks(s):
    """(first, after the divergence guard, last) hooks of a distributed rank: Horovod's
    (engine/horovod.py), and the watchdog's position report."""
    if s.horovod is not None:
        return horovod.hooks(s.horovod)
    if s.position is not None:
        return [ReportPosition(s.position)], [], []
    return [], [], []


def make_hooks(s, net, step, val_data, extra=(), lr_schedule=None, optimizer=None):
    """The rules of this run, in order (see gluondet.engine.hooks)."""

    config = s.config
    first, after_guard, last = _distributed_hooks(s)
    # Progress first: its epoch line (and clock) closes before validation and checkpoints run.
    hooks = [*first, H.EpochSeed(config.seed, s.rank), *divergence_hooks(s, net, optimizer), *after_guard,
             H.Progress(enabled=s.chief and not config.quiet)]
    if s.chief:
        label = METRIC_LABELS[config.metric]
        report = H.EvalReport(s.run, s.val_ds, config.val_split, s.family, s.model_cfg.get("data_shape"),
                              config.metric, s.classes)

        def run_validation(guard):
            return validate(net, s.family, guard(val_data), s.ctx_list, config.metric, s.classes,
                            progress=not config.quiet, metric=report.new_metric())

        hooks += [H.Validation(run_validation, config.val_interval), H.BestScore(label),
                  H.EarlyStopping(config.patience), H.PeriodicCheckpoint(s.run, config.save_interval),
                  H.Checkpointer(s.run, config.lr, config.metric, with_states=s.updates_here),
                  NotLearning(s.run, s.model_cfg, s.train_ds, config.lr, config.batch_size * s.num_workers, label),
                  H.MetricsWriter(s.run, step.loss_names, lr_schedule=lr_schedule, log_every=config.log_every),
                  report]
    return hooks + last + list(extra)


def write_run_info(s):
    """config.yaml (model, dataset and train sections, as resolved) and classes.txt."""
    resolved = {"model": s.model_cfg, "dataset": s.dataset_cfg.to_dict(), "train": s.config.to_dict(),
                "precision": s.precision.dtype}  # what --amp became on this machine
    resolved["dataset"]["classes"] = s.classes
    s.run.write_info(resolved, s.classes)


def training_parts(s, with_validation=True):
    """(net, train loader, val loader or None, step, optimizer, steps per epoch every worker can run
    or None) for set-up ``s``: what ``build_trainer`` and the lr range test both assemble."""

    config = s.config
    # before the network exists: AMP changes how MXNet builds its graph, for the whole process
    s.precision = Precision.for_training(config.amp, s.ctx_list, say=say if s.chief else (lambda _line: None))
    net = build_network(s)
    workers = default_num_workers() if config.num_workers is None else config.num_workers
    data_shape = int(s.model_cfg["data_shape"])
    indices, sync_steps = _train_indices(s, config.batch_size)
    train_data = s.family.train_loader(net, s.train_ds, data_shape, config.batch_size, workers, indices,
                                       augment=config.augment, seed=config.seed, epochs=config.epochs)
    val_data = s.family.val_loader(net, s.val_ds, data_shape, config.batch_size, workers) \
        if s.chief and with_validation else None
    step = s.family.make_step(backward=s.precision.backward)
    if s.horovod is not None:
        step = CountingStep(step)  # its loss's count weights the rank's gradient (HorovodSync)
    step.prepare(net, s.ctx_list)  # parameters and constants on every device
    optimizer = make_optimizer(net, s.family, config, s.kvstore, s.precision)
    return net, train_data, val_data, step, optimizer, sync_steps


def build_trainer(s, extra_hooks=()):
    """Network, loaders, step, optimizer and hooks: the Trainer for set-up ``s``."""
    config = s.config
    net, train_data, val_data, step, optimizer, sync_steps = training_parts(s)
    state = restore_state(s, optimizer)
    s.family.hybridize_for_training(net)
    iters = min(n for n in (len(train_data), config.max_iters, sync_steps) if n is not None)

    lr_at = schedule_of(config, iters)
    hooks = make_hooks(s, net, step, val_data, extra_hooks, lr_schedule=lr_curve(lr_at, config.epochs, iters),
                       optimizer=optimizer)
    signals = None
    if s.horovod is not None:
        signals = CollectiveSignals()  # every rank stops after the same step
    # dist_sync's servers divide by what the workers send, Horovod's allreduce by the ranks itself
    update_scale = 1 if s.horovod is not None else s.num_workers
    return Trainer(net, train_data, step, optimizer, s.ctx_list, hooks,
                   lr_at, config.epochs, iters, state=state, update_scale=update_scale, signals=signals)


def finished_lines(run, metric, best, best_epoch, split):
    """The end of training: where the weights are and the next commands (a run that did not learn
    has just been told so by the NotLearning hook)."""
    path = run.path
    return (f"done: {path} (best {metric} {best} at epoch {best_epoch}: {path / 'best.params'})\n"
            f"next: gluondet eval {path} --split {split}; gluondet detect IMAGES --run {path}")


def _finish_distributed(s):
    """A distributed rank trained to the end: its watchdog part stops without a word."""
    if s.horovod is not None:
        finish(s.horovod)
    elif s.position is not None:
        s.position.heartbeat.bye()


def train(config, extra_hooks=()):
    """Train as ``config`` (a TrainConfig) says; returns the RunFolder (None on non-chief workers).

    Raises GluondetError for problems the user can fix, LossDiverged when training diverges past what
    the divergence guard may repair, and
    TrainingStopped (after saving) on Ctrl-C or SIGTERM.
    """

    configure_threads()  # no effect when MXNet is already imported (the CLI did it first)
    configure_engine(config.ctx, config.kvstore, config.num_workers)  # nor this one
    s = prepare(config)
    written = bool(config.resume)
    try:
        trainer = build_trainer(s, extra_hooks)
        if s.chief and not config.resume:  # only now: a start that fails leaves no folder behind
            write_run_info(s)
        written = True
        state = trainer.state
        if s.chief:
            for note in config.notes:
                say(note)
            if config.resume:
                say(f"resuming {s.run.path} at epoch {state.epoch + 1}, iteration {state.start_iteration}"
                    + (f" (lr x{state.lr_scale:g} after {len(state.rollbacks)} rollback(s))" if state.rollbacks else ""))
            say(f"training {s.model_cfg.get('name')} on {s.dataset_cfg.name}: {len(s.train_ds)} train / "
                f"{len(s.val_ds)} val images, {len(s.classes)} classes, {s.ctx_list}, {s.precision.dtype}, batch "
                f"{config.batch_size}, epochs {state.epoch + 1}..{config.epochs}; run folder {s.run.path}")
        try:
            trainer.train()
        except TrainingStopped as e:
            e.run_dir = s.run.path if s.run else None
            raise
        except LossDiverged as e:
            if s.horovod is not None:  # every rank diverged at the same step: one line, not N

                raise said_once(s.horovod, e, "gluondet.diverged") from None
            raise
        _finish_distributed(s)
        if s.chief:
            best = f"{state.best_map:.4f}" if state.best_map is not None else "none"
            say(finished_lines(s.run, config.metric, best, state.best_epoch, config.val_split))
        return s.run
    finally:
        if s.run is not None:
            if not written:
                s.run.remove_if_unused()
            s.run.unlock()
