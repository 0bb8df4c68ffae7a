"""The training loop: ``train(config) -> run_dir``, built from ``train_one_epoch`` and validation.

Order of a run: contexts -> datasets -> network -> loaders -> trainer -> for each epoch: train one
epoch (lr per iteration from schedule.learning_rate), validate every ``val_interval`` epochs, write
metrics and checkpoints. Only the chief (worker 0 of a distributed job, or the only process)
writes the run folder, validates and keeps the best checkpoint.
"""
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import TrainConfig, load_yaml, resolve_dataset, resolve_model_config, resolve_train_config
from ..errors import GluondetError
from . import checkpoint
from .logging import TensorBoard, append_metrics_row, draw_curves
from .schedule import learning_rate

# Test hook: "EPOCH:ITER" (1-based epoch, 0-based iteration) makes that iteration's loss NaN, so the
# NaN guard can be tested without waiting for a real divergence.
FORCE_NAN_ENV = "GLUONDET_TEST_NAN_AT"
# Debugging aid for dist jobs: every worker writes its final weights and shard to this folder.
DIST_DUMP_ENV = "GLUONDET_DIST_DUMP"


class LossNotFinite(GluondetError):
    """Training diverged: a loss became NaN or infinite."""


class TrainingInterrupted(Exception):
    """Ctrl-C: last.* was saved (when there was something to save) and training stopped."""

    def __init__(self, run_dir, epoch):
        super().__init__(f"interrupted in epoch {epoch}")
        self.run_dir = run_dir
        self.epoch = epoch


def say(message):
    from tqdm import tqdm

    tqdm.write(str(message))


# ----------------------------------------------------------------------------- one epoch
@dataclass
class EpochResult:
    losses: dict
    iterations: int
    images: int
    seconds: float
    lr: float
    stopped_at: int = None  # iteration where Ctrl-C landed, if it did
    extra: dict = field(default_factory=dict)

    @property
    def images_per_sec(self):
        return self.images / self.seconds if self.seconds > 0 else 0.0


def train_one_epoch(net, loader, step, trainer, ctx_list, epoch, lr_at, max_iters=None,
                    progress=True, desc="", num_workers=1):
    """Train over ``loader`` once (at most ``max_iters`` batches); returns mean losses and speed.

    ``lr_at(iteration)`` gives the learning rate of each iteration. A non-finite loss raises
    LossNotFinite before the optimizer applies that step, so the weights stay the last good ones.
    With ``num_workers`` dist workers the servers sum every worker's gradients, so the step is
    normalized by that many times the local batch (the same value at every step, as dist needs).
    """
    from tqdm import tqdm

    total = len(loader) if max_iters is None else min(len(loader), max_iters)
    sums = dict.fromkeys(step.loss_names, 0.0)
    images, lr, start = 0, None, time.time()
    force_nan = _forced_nan_iteration(epoch)
    bar = tqdm(total=total, desc=desc, unit="it", disable=not progress, leave=True, dynamic_ncols=True)
    i = -1
    try:
        for i, batch in enumerate(loader):
            lr = lr_at(i)
            trainer.set_learning_rate(lr)
            values = step(net, batch, ctx_list)
            if i == force_nan:
                values[step.loss_names[0]] = float("nan")
            for name, value in values.items():
                if not math.isfinite(value):
                    raise LossNotFinite(
                        f"{name} is {value} at epoch {epoch + 1}, iteration {i}; training stopped "
                        f"before applying it. Try a lower --lr, a longer --warmup-epochs, or "
                        f"--clip-gradient; check the data with gluondet data check")
            trainer.step(step.step_batch_size(batch) * num_workers)
            for name, value in values.items():
                sums[name] += value
            images += step.num_images(batch)
            bar.update(1)
            elapsed = time.time() - start
            bar.set_postfix_str(
                f"{images / elapsed:.2f} img/s lr {lr:.2g} "
                + " ".join(f"{n} {sums[n] / (i + 1):.3f}" for n in step.loss_names))
            if i + 1 >= total:  # --max-iters (or dist's common step count) reached
                break
    except KeyboardInterrupt:
        return EpochResult({n: sums[n] / max(1, i) for n in sums}, max(0, i), images,
                           time.time() - start, lr, stopped_at=i)
    finally:
        bar.close()
    iterations = i + 1
    return EpochResult({n: sums[n] / max(1, iterations) for n in sums}, iterations, images,
                       time.time() - start, lr)


def _forced_nan_iteration(epoch):
    spec = os.environ.get(FORCE_NAN_ENV)
    if not spec:
        return None
    at_epoch, at_iter = (int(v) for v in spec.split(":"))
    return at_iter if at_epoch == epoch + 1 else None


# ----------------------------------------------------------------------------- set-up
def resume_config(run_dir, flags):
    """The TrainConfig to continue ``run_dir``: its saved config, with the flags given now on top
    (``--epochs`` to train longer, ``--ctx`` on another machine...)."""
    run_dir = Path(run_dir)
    saved = load_yaml(run_dir / checkpoint.CONFIG_FILE) if (run_dir / checkpoint.CONFIG_FILE).is_file() else None
    if not saved or "train" not in saved or not (run_dir / "last.json").is_file():
        raise GluondetError(f"--resume {run_dir}: not a gluondet run folder with last.json and config.yaml")
    known = TrainConfig.__dataclass_fields__
    base = TrainConfig(**{k: v for k, v in saved["train"].items() if k in known})
    flags = {k: v for k, v in flags.items() if k not in ("dataset", "model", "resume")}
    config = resolve_train_config(saved["model"], flags, base=base)
    config.resume = str(run_dir)
    return config


def _seed(seed):
    import mxnet as mx

    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def _kvstore(config):
    """(kvstore for the Trainer, rank, number of workers): a dist kvstore is created here, and only
    in a process ``gluondet launch`` started (elsewhere it would wait for peers forever)."""
    if not config.kvstore.startswith("dist"):
        return config.kvstore, 0, 1
    import mxnet as mx

    from .distributed import require_launcher, worker_info

    require_launcher(config.kvstore)
    kv = mx.kv.create(config.kvstore)
    rank, num_workers = worker_info(kv)
    return kv, rank, num_workers


def _resolved_model_cfg(config):
    model_cfg = resolve_model_config(config.model, config.config_dir)
    if config.data_shape:
        model_cfg["data_shape"] = int(config.data_shape)
    if not model_cfg.get("data_shape"):
        raise GluondetError(f"model '{config.model}': no data_shape in its config; pass --data-shape")
    return model_cfg


def _build_network(config, model_cfg, classes, family, run_dir):
    """The network: resumed from last.params, initialized from --init-from, or built fresh."""
    from ..models import build_model
    from ..models.pretrained import init_from

    if config.resume:
        net = build_model(model_cfg, classes, pretrained_base=False)
        checkpoint.load_weights(net, Path(run_dir) / "last.params", family)
        return net
    if config.init_from:
        return init_from(config.init_from, model_cfg, classes)
    return build_model(model_cfg, classes, pretrained_base=config.pretrained_base)


def _make_trainer(net, family, config, kvstore):
    from mxnet import gluon

    from .steps import trainable_params

    options = {"learning_rate": config.lr, "wd": config.wd, "momentum": config.momentum}
    if config.clip_gradient:
        options["clip_gradient"] = config.clip_gradient
    return gluon.Trainer(trainable_params(net, family), "sgd", options, kvstore=kvstore)


# ----------------------------------------------------------------------------- the run
def train(config):
    """Train as ``config`` (a TrainConfig) says; returns the run folder (None on non-chief workers).

    Raises GluondetError for problems the user can fix, LossNotFinite when training diverges, and
    TrainingInterrupted after saving last.* on Ctrl-C.
    """
    from ..runtime import configure_threads

    configure_threads()  # no effect when MXNet is already imported (the CLI did it first)

    from ..data import load_dataset
    from ..data.loader import default_num_workers, images_with_objects, train_loader, val_loader
    from ..models import model_family
    from ..runtime import make_contexts
    from .steps import STEPS, hybridize_for_training
    from .validation import METRIC_NAMES, validate

    ctx_list = make_contexts(config.ctx)
    kvstore, rank, num_workers = _kvstore(config)
    chief = rank == 0
    dist = config.kvstore.startswith("dist")
    resumed = checkpoint.read_json(Path(config.resume) / "last.json") if config.resume else None

    # --- data
    dataset_cfg = resolve_dataset(config.dataset, config.config_dir)
    model_cfg = _resolved_model_cfg(config)
    family = model_family(model_cfg)
    classes = checkpoint.read_classes(config.resume) if config.resume else None
    train_ds = load_dataset(dataset_cfg, config.train_split, classes=classes, skip_bad=config.skip_bad)
    classes = list(train_ds.classes)
    if chief and dataset_cfg.classes is None and not config.resume:
        say(f"classes found in the labels ({len(classes)}): {', '.join(classes)}")
    val_ds = load_dataset(dataset_cfg, config.val_split, classes=classes, skip_bad=config.skip_bad)

    # --- run folder
    run_dir = None
    if chief:
        if config.resume:
            run_dir = Path(config.resume)
        elif config.out:
            run_dir = checkpoint.check_new_run_dir(config.out)
        else:
            run_dir = checkpoint.default_run_dir(dataset_cfg.name, model_cfg.get("name", config.model))

    # --- network, loaders, trainer
    _seed(config.seed + (resumed["epoch"] if resumed else 0) + rank)
    net = _build_network(config, model_cfg, classes, family, run_dir)
    if chief:  # written once the network exists, so a start that fails (offline weights) leaves no folder
        resolved = {"model": model_cfg, "dataset": dataset_cfg.to_dict(), "train": config.to_dict()}
        resolved["dataset"]["classes"] = classes
        checkpoint.write_run_info(run_dir, resolved, classes)
    data_shape = int(model_cfg["data_shape"])
    workers = default_num_workers() if config.num_workers is None else config.num_workers
    batch_size = config.batch_size
    if family == "faster_rcnn" and batch_size != len(ctx_list):
        if chief:
            say(f"Faster R-CNN trains one image per device: batch size {len(ctx_list)} (not {batch_size})")
        batch_size = len(ctx_list)
    indices = images_with_objects(train_ds) if family == "faster_rcnn" else None
    if indices is not None and len(indices) < len(train_ds) and chief:
        say(f"Faster R-CNN: {len(train_ds) - len(indices)} training image(s) without objects left out")
    sync_steps = None
    if num_workers > 1:  # dist: this worker's shard, and the same number of steps on every worker
        from .distributed import shard_indices, sync_steps_per_epoch

        base = indices if indices is not None else list(range(len(train_ds)))
        indices = [base[i] for i in shard_indices(len(base), rank, num_workers)]
        sync_steps = sync_steps_per_epoch(len(base), num_workers, batch_size)
        say(f"worker {rank}/{num_workers}: {len(indices)} images, {sync_steps} steps per epoch; "
            f"effective batch size {batch_size * num_workers}, lr {config.lr}")
    train_data = train_loader(family, net, train_ds, data_shape, batch_size, workers, indices,
                              augment=config.augment)
    val_data = val_loader(family, net, val_ds, data_shape, batch_size, workers) if chief else None
    net.collect_params().reset_ctx(ctx_list)
    trainer = _make_trainer(net, family, config, kvstore)
    if config.resume:
        if resumed.get("optimizer_states", True):
            trainer.load_states(str(Path(config.resume) / "last.states"))
        elif chief:
            say("resuming a distributed run: its optimizer state stayed on the parameter servers, "
                "so the momentum starts afresh")
    step = STEPS[family]()
    hybridize_for_training(net, family)

    iters_per_epoch = min(n for n in (len(train_data), config.max_iters, sync_steps) if n is not None)
    start_epoch = resumed["epoch"] if resumed else 0
    best_map = resumed.get("best_map") if resumed else None
    best_epoch = resumed.get("best_epoch") if resumed else None
    board = TensorBoard(run_dir / "tb") if chief else None
    if chief:
        say(f"training {model_cfg.get('name')} on {dataset_cfg.name}: {len(train_ds)} train / "
            f"{len(val_ds)} val images, {len(classes)} classes, {ctx_list}, batch {batch_size}, "
            f"epochs {start_epoch + 1}..{config.epochs}; run folder {run_dir}")

    def state(epoch_done, lr, interrupted=False):
        return {"epoch": epoch_done, "best_map": best_map, "best_epoch": best_epoch, "lr": lr,
                "base_lr": config.lr, "iters_per_epoch": iters_per_epoch, "metric": config.metric,
                "interrupted": interrupted}

    epoch = start_epoch
    try:
        for epoch in range(start_epoch, config.epochs):
            def lr_at(i, epoch=epoch):
                return learning_rate(epoch, i, iters_per_epoch, config.lr, config.lr_steps,
                                     config.lr_decay, config.warmup_epochs)

            result = train_one_epoch(net, train_data, step, trainer, ctx_list, epoch, lr_at,
                                     iters_per_epoch, progress=chief, num_workers=num_workers,
                                     desc=f"epoch {epoch + 1}/{config.epochs}")
            if result.stopped_at is not None:
                raise KeyboardInterrupt
            row = {"epoch": epoch + 1, "lr": result.lr, "seconds": round(result.seconds, 2),
                   "images_per_sec": round(result.images_per_sec, 3), **result.losses}
            if not chief:
                continue
            validated = (epoch + 1) % config.val_interval == 0 or epoch + 1 == config.epochs
            if validated:
                scores = validate(net, family, val_data, ctx_list, config.metric, classes, progress=True)
                row["val_map"] = scores["map"]
                row.update({f"ap/{name}": ap for name, ap in scores["per_class"].items()})
                improved = best_map is None or scores["map"] > best_map
                say(f"epoch {epoch + 1}: {METRIC_NAMES[config.metric]} {scores['map']:.4f}"
                    + (" (best so far, saved best.params)" if improved else f" (best {best_map:.4f})"))
                if improved:
                    best_map, best_epoch = scores["map"], epoch + 1
                    checkpoint.save_best(run_dir, net, epoch + 1, best_map, config.metric)
            checkpoint.save_last(run_dir, net, trainer, state(epoch + 1, result.lr), with_states=not dist)
            if config.save_interval and (epoch + 1) % config.save_interval == 0:
                checkpoint.save_params(net, checkpoint.epoch_params_path(run_dir, epoch + 1))
            rows = append_metrics_row(run_dir / "metrics.csv", row)
            board.scalars({k: v for k, v in row.items() if k != "epoch"}, epoch + 1)
            if validated:
                draw_curves(rows, run_dir / "curves.png", step.loss_names)
    except KeyboardInterrupt:
        if chief:
            lr = trainer.learning_rate
            # The weights are mid-epoch: saved so nothing is lost, but resume repeats this epoch.
            checkpoint.save_last(run_dir, net, trainer, state(epoch, lr, interrupted=True), with_states=not dist)
        raise TrainingInterrupted(run_dir, epoch + 1) from None
    finally:
        if board is not None:
            board.close()
    if dist and os.environ.get(DIST_DUMP_ENV):
        _dump_worker(Path(os.environ[DIST_DUMP_ENV]), rank, net, train_ds, indices)
    if chief:
        say(f"done: {run_dir} (best {METRIC_NAMES[config.metric]} "
            f"{best_map if best_map is not None else float('nan'):.4f} at epoch {best_epoch})")
    return run_dir


def _dump_worker(folder, rank, net, train_ds, indices):
    """worker<rank>.params and worker<rank>.json (its shard's image ids), to check that the workers
    of a dist job ended with the same weights and read disjoint shards."""
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint.save_params(net, folder / f"worker{rank}.params")
    checkpoint.write_json(folder / f"worker{rank}.json",
                          {"rank": rank, "image_ids": [train_ds.image_id(i) for i in indices]})
